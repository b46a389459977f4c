# -*- test-case-name: tests.fleet.test_store -*-
"""
The fleet's shared iopub numbering and stream in Redis (``seq:<id>``, ``seen:<id>``, ``journal:<id>``,
``window:<id>``: see :mod:`.store` and :mod:`.numbering`): a part of the store, apart by concern.

Each message in a stream is sealed (see :mod:`.secrets`): a Redis reader sees no kernel's output, and an entry
written without the fleet's secret (an older relay's too) is not replayed to any client: it is counted,
logged, and handed on as unreadable (None), so that the client is told of a gap. The authenticated data are
the stream's key, the message's ``msg_id`` and its time (both kept in clear: the numbering script reads them),
not its number: Redis gives the number inside the script, after the relay sealed the message, and a script
cannot seal (the secret never reaches Redis). So a Redis writer cannot inject or alter output; what it can do
is delete entries (told as a gap) or copy an authentic one under a later number (a message seen twice), which
a fetch drops when its ``msg_id`` came already. An entry without a message (a number a relay gave alone,
registered when Redis came back) is told as a gap too, unsealed: writing one is no more than deleting.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from twisted.internet.defer import Deferred

from . import scripts
from .connection import RedisConnection, as_bytes, field_pairs, key, text
from .secrets import FleetKeys, Forged, ForgeryLog


class StreamStore(RedisConnection):
    """The store's calls for the numbering and the stream (mixed into :class:`.store.FleetStore`)."""

    _keys: FleetKeys
    forged: ForgeryLog

    def number(
        self,
        kernel_id: str,
        msg_id: str,
        payload: bytes,
        when: float,
        keep: int,
        keep_bytes: int,
        keep_seconds: float,
        after: int,
        owner: bool,
        previous: str = "",
        waited: bool = False,
    ) -> Deferred[int]:
        """
        The fleet's ``relay_seq`` of a kernel's iopub message, numbered (and kept) once for all relays; -1
        when the submitter may be too late to tell, -2 when the kernel's owner must start its numbering
        again first, -3 while ``previous`` (the message before it) is not numbered, -4 while a relay with
        history must number the submitter's first message (unless it ``waited``; see ``scripts.NUMBER``).
        """
        stamp = f"{when:.3f}"
        sealed = self._keys.seal_bytes(_where(kernel_id, msg_id, stamp), payload)
        d = self._script(
            scripts.NUMBER,
            [
                key("seq", kernel_id),
                key("seen", kernel_id),
                key("journal", kernel_id),
                key("window", kernel_id),
            ],
            [
                msg_id,
                sealed,
                stamp,
                keep,
                keep_bytes,
                f"{keep_seconds:.3f}",
                after,
                "1" if owner else "0",
                previous,
                "1" if waited else "0",
            ],
        )
        return d.addCallback(int)

    def stream_bytes(self, kernel_id: str) -> Deferred[int]:
        """The bytes of messages a kernel's stream keeps (as counted when they were added)."""
        d = self._call("HGET", key("window", kernel_id), "bytes")
        return d.addCallback(lambda v: int(v or 0))

    def bump(
        self,
        kernel_id: str,
        seq: int,
        given: Sequence[tuple[str, int]] = (),
        owner: bool = False,
        when: float = 0.0,
    ) -> Deferred[int]:
        """
        Move the fleet's numbering of a kernel past ``seq`` (given out while Redis was away), registering
        the (msg_id, number) pairs ``given`` alone (see ``scripts.BUMP``); 0 if only the owner may start it.
        """
        keys = [key(name, kernel_id) for name in ("seq", "window", "seen", "journal")]
        pairs = [item for pair in given for item in pair]
        args = [seq, "1" if owner else "0", f"{when:.3f}", *pairs]
        return self._script(scripts.BUMP, keys, args).addCallback(int)

    def last_seq(self, kernel_id: str) -> Deferred[int]:
        return self._call("GET", key("seq", kernel_id)).addCallback(lambda v: int(v or 0))

    def stream_since(
        self, kernel_id: str, seq: int, until: int | None = None, count: int | None = None
    ) -> Deferred[list[tuple[int, float, bytes | None]]]:
        """
        The kept messages after ``seq`` (up to ``until`` included, at most ``count`` of them, when given), as
        (seq, time, payload), oldest first; the payload is None for an entry that does not open (forged:
        counted and logged), and an entry whose ``msg_id`` came already is left out.
        """
        end = "+" if until is None else f"0-{until}"
        bounds = () if count is None else ("COUNT", max(1, count))
        d = self._call("XRANGE", key("journal", kernel_id), f"(0-{seq}", end, *bounds)
        return d.addCallback(self._entries, kernel_id)

    def _entries(self, reply: Any, kernel_id: str) -> list[tuple[int, float, bytes | None]]:
        found: list[tuple[int, float, bytes | None]] = []
        seen = set()
        for entry_id, fields in reply or ():
            values = {text(name): value for name, value in field_pairs(fields)}
            number = int(text(entry_id).split("-", 1)[1])
            stamp, msg_id = text(values.get("t", "0")), text(values.get("i", ""))
            payload: bytes | None
            if "m" not in values:  # a number a relay gave alone: the message is not here
                found.append((number, 0.0, None))
                continue
            try:
                payload = self._keys.open_bytes(
                    _where(kernel_id, msg_id, stamp), as_bytes(values.get("m", b""))
                )
                when = float(stamp)
            except (Forged, ValueError) as error:
                self.forged(Forged(f"kernel {kernel_id}'s stream, entry {number}: {error}"))
                payload, when = None, 0.0
            if payload is not None:
                if msg_id in seen:
                    continue  # an authentic entry copied under another number
                seen.add(msg_id)
            found.append((number, when, payload))
        return found


def _where(kernel_id: str, msg_id: str, stamp: str) -> str:
    """What a stream entry's message is sealed for: its stream, its ``msg_id`` and its time."""
    return f"{key('journal', kernel_id)}\x00{msg_id}\x00{stamp}"


__all__ = ["StreamStore"]

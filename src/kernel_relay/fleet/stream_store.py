# -*- test-case-name: tests.fleet.test_store -*-
"""
The fleet's shared iopub numbering and stream in Redis (``seq:<id>``, ``seen:<id>``, ``journal:<id>``,
``window:<id>``: see :mod:`.store` and :mod:`.numbering`): a part of the store, apart by concern.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred

from . import scripts
from .connection import RedisConnection, as_bytes, key, text


class StreamStore(RedisConnection):
    """The store's calls for the numbering and the stream (mixed into :class:`.store.FleetStore`)."""

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
    ) -> Deferred[int]:
        """
        The fleet's ``relay_seq`` of a kernel's iopub message, numbered (and kept) once for all relays; -1
        when the submitter may be too late to tell, -2 when the kernel's owner must start its numbering
        again first (see ``scripts.NUMBER``).
        """
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
                payload,
                f"{when:.3f}",
                keep,
                keep_bytes,
                f"{keep_seconds:.3f}",
                after,
                "1" if owner else "0",
            ],
        )
        return d.addCallback(int)

    def stream_bytes(self, kernel_id: str) -> Deferred[int]:
        """The bytes of messages a kernel's stream keeps (as counted when they were added)."""
        d = self._call("HGET", key("window", kernel_id), "bytes")
        return d.addCallback(lambda v: int(v or 0))

    def bump(self, kernel_id: str, seq: int) -> Deferred[int]:
        """Move the fleet's numbering of a kernel past ``seq`` (given out while Redis was away)."""
        return self._script(scripts.BUMP, [key("seq", kernel_id)], [seq]).addCallback(int)

    def last_seq(self, kernel_id: str) -> Deferred[int]:
        return self._call("GET", key("seq", kernel_id)).addCallback(lambda v: int(v or 0))

    def stream_since(self, kernel_id: str, seq: int) -> Deferred[list[tuple[int, float, bytes]]]:
        """The kept messages after ``seq``, as (seq, time, payload), oldest first."""

        def entries(reply: Any) -> list[tuple[int, float, bytes]]:
            found = []
            for entry_id, fields in reply or ():
                flat = list(fields)
                values = {text(flat[i]): flat[i + 1] for i in range(0, len(flat) - 1, 2)}
                number = int(text(entry_id).split("-", 1)[1])
                found.append(
                    (number, float(text(values.get("t", "0"))), as_bytes(values.get("m", b"")))
                )
            return found

        d = self._call("XRANGE", key("journal", kernel_id), f"(0-{seq}", "+")
        return d.addCallback(entries)


__all__ = ["StreamStore"]

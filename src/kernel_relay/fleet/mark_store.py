# -*- test-case-name: tests.fleet.test_store_sealing -*-
"""
Where Jupyter sessions stopped, in Redis (``mark:<id>:<session>``, ``marks:<id>``: see :mod:`.store` and
:mod:`.marks`): a part of the store, apart by concern.

A mark is ``<relay_seq> <sealed parent msg_id>``: the number in clear, for the script that keeps the
freshest, and bound to the sealed part (the authenticated data are the mark's key, so its kernel and
session, and the number), so a mark written without the fleet's secret, an older relay's included, does not
open: the session is then told that output may be missing rather than resumed from where a forger said.

**No mark, or lost marks?** Redis that restarts empty answers "no mark" for every session until the relays
have saved theirs again. ``kept-marks`` (sealed, a fresh value each time) is set when Redis is found without it
(a relay's renewal, :meth:`MarkStore.keep_marks`), and ``settling-marks`` beside it, with the relays that were
in the fleet (``settling-relays``), for one lease at most. A relay that finds ``kept-marks`` other than it last
saw knows Redis lost the marks: it saves its own again at once (:attr:`MarkStore.marks_lost`) and leaves
``settling-relays``; the last to leave ends the settling. While Redis settles, no answer is sure
(:class:`MarksUnsure`): a session without a mark may have one that is yet to be saved again, and one with a
mark may have a fresher one that is (the relay it last read on not yet back): a returning session was sent
19 s of output again that way. A session with no mark is taken for new only once ``kept-marks`` opens and
Redis is settled; otherwise it is told of a possible gap instead of silently losing what it missed. (A Redis
that restarts from a snapshot keeps ``kept-marks``: marks saved after the snapshot are then missing without
notice; deleting keys is beyond what sealing can show.)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

from twisted.internet.defer import Deferred, gatherResults, succeed
from twisted.internet.interfaces import IReactorTime

from . import scripts
from .connection import RedisConnection, key, text
from .secrets import FleetKeys, Forged, ForgeryLog


class MarksUnsure(Exception):
    """
    Redis has no mark of the session and may have lost it (it restarted lately, or was tampered with), or has
    one (``found``) that may be older than one a relay is yet to save again.
    """

    def __init__(self, message: str, found: str | None = None) -> None:
        super().__init__(message)
        self.found = found


class MarkStore(RedisConnection):
    """The store's calls for sessions' marks (mixed into :class:`.store.FleetStore`)."""

    _keys: FleetKeys
    forged: ForgeryLog
    marks_lost: Callable[[], Deferred[bool]] | None = None
    """Saves this relay's marks again (whether all were saved): called when Redis is found to have lost them."""
    _clock: IReactorTime
    _relays_seen: Mapping[str, float] = MappingProxyType({})
    """When each relay of the fleet was last read with its lease running."""
    _kept: str | None = None
    """``kept-marks`` as this relay last found it."""

    def save_marks(
        self, kernel_id: str, marks: Mapping[str, str], ttl: float, keep: int
    ) -> Deferred[Any]:
        """
        Each session's position (``<relay_seq> <parent msg_id>``) in a key of its own, sealed, which expires
        on its own after ``ttl`` seconds; a kernel keeps the ``keep`` newest, and a session its freshest
        (the highest ``relay_seq``). Fails if any was not saved.
        """
        index, prefix = key("marks", kernel_id), key("mark", kernel_id, "")
        calls = [
            self._script(
                scripts.SAVE_MARK,
                [index, prefix + session],
                [
                    session,
                    self._seal_mark(prefix + session, value),
                    max(1, int(ttl * 1000)),
                    keep,
                    prefix,
                ],
            )
            for session, value in marks.items()
        ]
        return gatherResults(calls, consumeErrors=True)

    def _seal_mark(self, where: str, value: str) -> str:
        seq, _, parent = value.partition(" ")
        sealed = self._keys.seal(f"{where}\x00{seq}", parent.encode())
        return f"{seq} {sealed}"

    def mark(self, kernel_id: str, session_id: str) -> Deferred[str | None]:
        """
        Where a session stopped (``<relay_seq> <parent msg_id>``), None for a session new to the fleet;
        fails with :class:`Forged` for a mark that does not open, :class:`MarksUnsure` when Redis may
        have lost it.
        """
        where = key("mark", kernel_id, session_id)
        d = self._call("MGET", where, key("kept-marks"), key("settling-marks"))
        return d.addCallback(self._opened_mark, where)

    def _opened_mark(self, reply: Any, where: str) -> str | None:
        value, kept, settling = (None if v is None else text(v) for v in list(reply))
        if value is not None:
            seq, _, sealed = value.partition(" ")
            try:
                if not seq.isdigit():
                    raise Forged(f"{where!r} holds no mark")
                parent = self._keys.open(f"{where}\x00{seq}", sealed).decode("utf-8")
            except (Forged, UnicodeDecodeError) as error:
                self.forged(Forged(str(error)))
                # Gone, unless it changed meanwhile: a forged high number would keep every relay's save out.
                self._script(scripts.FORGET_FORGED, [where], [value]).addErrback(lambda f: None)
                raise Forged(f"the session's mark in the fleet is not a relay's: {error}") from None
            if settling is None:
                return f"{seq} {parent}"
            raise MarksUnsure(
                "Redis restarted lately: a relay may have a fresher mark of the session to save again",
                f"{seq} {parent}",
            )
        if settling is not None:
            raise MarksUnsure(
                "Redis restarted lately: the relays may not have saved their sessions' marks again yet"
            )
        try:
            self._keys.open(key("kept-marks"), kept or "")
        except Forged as error:
            if kept is not None:
                self.forged(error)
            raise MarksUnsure("Redis holds no sign that it kept the sessions' marks") from None
        return None

    def relays_read(self, alive: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        """The relays whose lease runs, as just read: remembered, each with when."""
        now = self._clock.seconds()
        self._relays_seen = {**self._relays_seen, **dict.fromkeys(alive, now)}
        return alive

    def keep_marks(self, ttl: float, relay_id: str) -> Deferred[Any]:
        """
        Set ``kept-marks`` if Redis lost it (it restarted empty), settling for ``ttl`` seconds at most; if it
        is not as this relay last found it, save this relay's marks again now (see the module docstring).
        """
        kept = self._keys.seal(key("kept-marks"), b"")
        # Those whose lease ran less than a lease ago may live, and hold marks (Redis, empty, knows none).
        now = self._clock.seconds()
        self._relays_seen = {r: when for r, when in self._relays_seen.items() if now - when < ttl}
        relays = sorted({*self._relays_seen, relay_id})
        d = self._script(scripts.KEEP_MARKS, _SETTLING, [kept, max(1, int(ttl * 1000)), *relays])

        def found(value: Any) -> None:
            current = None if value is None else text(value)
            if current is not None and current != self._kept:
                self._kept = current
                self._save_again(current, relay_id)

        return d.addCallback(found)

    def _save_again(self, kept: str, relay_id: str) -> None:
        saving = self.marks_lost() if self.marks_lost is not None else succeed(True)

        def saved(done: bool) -> Deferred[Any] | None:
            if not done:
                self._kept = None  # saved again at the next renewal
                return None
            return self._script(scripts.SETTLE_MARKS, _SETTLING, [kept, relay_id])

        saving.addCallback(saved).addErrback(lambda f: None)


_SETTLING = [key("kept-marks"), key("settling-marks"), key("settling-relays")]


__all__ = ["MarkStore", "MarksUnsure"]

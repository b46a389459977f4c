# -*- test-case-name: tests.fleet.test_store_sealing -*-
"""
Where Jupyter sessions stopped, in Redis (``mark:<id>:<session>``, ``marks:<id>``: see :mod:`.store` and
:mod:`.marks`): a part of the store, apart by concern.

A mark is ``<relay_seq> <sealed parent msg_id>``: the number in clear, for the script that keeps the
freshest, and bound to the sealed part (the authenticated data are the mark's key, so its kernel and
session, and the number), so a mark written without the fleet's secret, an older relay's included, does not
open: the session is then told that output may be missing rather than resumed from where a forger said.

**No mark, or lost marks?** Redis that restarts empty answers "no mark" for every session until the relays
have saved theirs again (each does at its next sync). ``kept-marks`` (sealed) is set when Redis is found
without it (a relay's renewal, :meth:`MarkStore.keep_marks`), and ``settling-marks`` beside it for one lease;
a session with no mark is taken for new only when ``kept-marks`` opens and ``settling-marks`` is gone.
Otherwise :class:`MarksUnsure`: the session is told of a possible gap instead of silently losing what it
missed. (A Redis that restarts from a snapshot keeps ``kept-marks``: marks saved after the snapshot are
then missing without notice; deleting keys is beyond what sealing can show.)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from twisted.internet.defer import Deferred, DeferredList

from . import scripts
from .connection import RedisConnection, key, text
from .secrets import FleetKeys, Forged, ForgeryLog


class MarksUnsure(Exception):
    """Redis has no mark of the session, and may have lost it (it restarted lately, or was tampered with)."""


class MarkStore(RedisConnection):
    """The store's calls for sessions' marks (mixed into :class:`.store.FleetStore`)."""

    _keys: FleetKeys
    forged: ForgeryLog

    def save_marks(
        self, kernel_id: str, marks: Mapping[str, str], ttl: float, keep: int
    ) -> Deferred[Any]:
        """
        Each session's position (``<relay_seq> <parent msg_id>``) in a key of its own, sealed, which expires
        on its own after ``ttl`` seconds; a kernel keeps the ``keep`` newest.
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
        return DeferredList(calls, consumeErrors=True)

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
            return f"{seq} {parent}"
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

    def keep_marks(self, ttl: float) -> Deferred[Any]:
        """
        Set ``kept-marks`` if Redis lost it (it restarted empty), with ``settling-marks`` for ``ttl``
        seconds: the time the relays take to save their marks again (see the module docstring).
        """
        kept = self._keys.seal(key("kept-marks"), b"")
        return self._script(
            scripts.KEEP_MARKS,
            [key("kept-marks"), key("settling-marks")],
            [kept, max(1, int(ttl * 1000))],
        )


__all__ = ["MarkStore", "MarksUnsure"]

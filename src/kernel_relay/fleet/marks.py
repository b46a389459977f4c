# -*- test-case-name: tests.fleet.test_fleet -*-
"""
Where Jupyter sessions stopped reading, kept for the whole fleet (the Jupyter front's ``SharedMarks``): a
client that moves relay resumes from its mark. Each relay also remembers the marks it saved, to save them
again should Redis lose them (a restart with nothing on disk); they are forgotten with their kernel.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from typing import Final

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime

from .store import FleetStore

#: How long the fleet remembers where a Jupyter session stopped (as the Jupyter front does).
MARK_SECONDS: Final = 3600.0
#: How many sessions of one kernel the fleet remembers (the oldest are forgotten first), and the longest
#: session name or mark it keeps.
MARKS_PER_KERNEL: Final = 1_000
MARK_BYTES: Final = 512


class FleetMarks:
    """The sessions' marks in Redis, and the ones this relay saved; see the module docstring."""

    def __init__(self, store: FleetStore, clock: IReactorTime) -> None:
        self._store = store
        self._clock = clock
        self._held: dict[str, OrderedDict[str, tuple[str, float]]] = {}
        """The marks this relay saved, by kernel and session (with when)."""

    def save(self, kernel_id: str, marks: Mapping[str, tuple[int, str | None]]) -> None:
        """Each session's ``relay_seq`` and parent ``msg_id`` (ids only: a mark is a few hundred bytes)."""
        encoded = {
            session: f"{seq} {parent_id or ''}"[:MARK_BYTES]
            for session, (seq, parent_id) in marks.items()
            if len(session) <= MARK_BYTES
        }
        held = self._held.setdefault(kernel_id, OrderedDict())
        now = self._clock.seconds()
        for session, value in encoded.items():
            held.pop(session, None)
            held[session] = (value, now)
        while len(held) > MARKS_PER_KERNEL:
            held.popitem(last=False)
        d = self._store.save_marks(kernel_id, encoded, MARK_SECONDS, MARKS_PER_KERNEL)
        d.addErrback(lambda f: None)

    def load(self, kernel_id: str, session_key: str) -> Deferred[tuple[int, str | None] | None]:
        def decoded(value: str | None) -> tuple[int, str | None] | None:
            if not value:
                return None
            seq, _, parent_id = value.partition(" ")
            return (int(seq), parent_id or None) if seq.isdigit() else None

        return self._store.mark(kernel_id, session_key).addCallback(decoded)

    def forget(self, kernel_id: str) -> None:
        """The kernel is gone here: its marks are not saved again."""
        self._held.pop(kernel_id, None)

    def save_again(self) -> None:
        """Redis lost what it held (it restarted empty): save again the marks this relay saved, unexpired."""
        now = self._clock.seconds()
        for kernel_id, held in list(self._held.items()):
            fresh = {s: v for s, (v, when) in held.items() if now - when < MARK_SECONDS}
            if fresh:
                d = self._store.save_marks(kernel_id, fresh, MARK_SECONDS, MARKS_PER_KERNEL)
                d.addErrback(lambda f: None)


__all__ = ["MARKS_PER_KERNEL", "MARK_BYTES", "MARK_SECONDS", "FleetMarks"]

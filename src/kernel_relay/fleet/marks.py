# -*- test-case-name: tests.fleet.test_fleet -*-
"""
Where Jupyter sessions stopped reading, kept for the whole fleet (the Jupyter front's ``SharedMarks``): a
client that moves relay resumes from its mark. Each relay also remembers the marks it saved, to save them
again should Redis lose them (a restart with nothing on disk); they are forgotten with their kernel.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from typing import Any, Final

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.python.failure import Failure

from .mark_store import MarksUnsure
from .store import FleetStore, FleetUnavailable

#: How long the fleet remembers where a Jupyter session stopped (as the Jupyter front does).
MARK_SECONDS: Final = 3600.0
#: How many sessions of one kernel the fleet remembers (the oldest are forgotten first), and the longest
#: session name or mark it keeps.
MARKS_PER_KERNEL: Final = 1_000
MARK_BYTES: Final = 512
#: How often a relay asks again for a mark Redis cannot give yet (away, or restarted and settling).
LOAD_RETRY: Final = 0.2


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

    def load(
        self, kernel_id: str, session_key: str, patient: bool = False
    ) -> Deferred[tuple[int, str | None] | None]:
        """
        Where the fleet says the session stopped (None: new to the fleet). ``patient``: while Redis cannot
        say yet (away, or restarted and the relays not done saving their marks again) it is asked again every
        :data:`LOAD_RETRY` until it says or the caller gives up (cancels): a relay that went by its own mark
        from an earlier visit instead would send the session everything since then again.
        """

        def decoded(value: str | None) -> tuple[int, str | None] | None:
            if not value:
                return None
            seq, _, parent_id = value.partition(" ")
            return (int(seq), parent_id or None) if seq.isdigit() else None

        if not patient:
            return self._store.mark(kernel_id, session_key).addCallback(decoded)
        return self._asked(kernel_id, session_key).addCallback(decoded)

    def _asked(self, kernel_id: str, session_key: str) -> Deferred[str | None]:
        under_way: list[Any] = []  # the call, or the timer before the next one

        def cancel(_: Deferred[str | None]) -> None:
            for step in under_way:
                if isinstance(step, Deferred):
                    step.cancel()
                elif step.active():
                    step.cancel()

        result: Deferred[str | None] = Deferred(cancel)

        def ask() -> None:
            under_way[:] = [self._store.mark(kernel_id, session_key)]
            under_way[0].addCallbacks(answered, failed)

        def answered(value: str | None) -> None:
            under_way.clear()
            if not result.called:
                result.callback(value)

        def failed(failure: Failure) -> None:
            if isinstance(failure.value, CancelledError) or result.called:
                return
            if isinstance(failure.value, (FleetUnavailable, MarksUnsure)):
                timer: IDelayedCall = self._clock.callLater(LOAD_RETRY, ask)
                under_way[:] = [timer]
                return
            result.errback(failure)

        ask()
        return result

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

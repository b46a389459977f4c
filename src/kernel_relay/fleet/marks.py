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

from twisted.internet.defer import CancelledError, Deferred, gatherResults
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
        store.marks_lost = self.save_again  # saved again as soon as the store finds Redis lost them

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
        self, kernel_id: str, session_key: str, patient: bool = False, wait: float = 2.0
    ) -> Deferred[tuple[int, str | None] | None]:
        """
        Where the fleet says the session stopped (None: new to the fleet), within ``wait`` seconds. While
        Redis cannot say yet (away, or restarted and the relays not done saving their marks again) it is asked
        again every :data:`LOAD_RETRY`: when ``patient`` (a relay that went by its own mark from an earlier
        visit instead would send the session everything since then again), and whenever it has a mark that
        may not be the freshest. When ``wait`` runs out, the freshest mark found is the answer (at worst some
        output is sent again, none lost); with none, it fails with why.
        """
        asking = _Asking(self._store, self._clock, (kernel_id, session_key), patient)
        asking.start(wait)
        return asking.result.addCallback(_decoded)

    def forget(self, kernel_id: str) -> None:
        """The kernel is gone here: its marks are not saved again."""
        self._held.pop(kernel_id, None)

    def save_again(self) -> Deferred[bool]:
        """
        Redis lost what it held (it restarted empty): save again the marks this relay saved, unexpired.
        Whether all were saved.
        """
        now = self._clock.seconds()
        saving = []
        for kernel_id, held in list(self._held.items()):
            fresh = {s: v for s, (v, when) in held.items() if now - when < MARK_SECONDS}
            if fresh:
                saving.append(
                    self._store.save_marks(kernel_id, fresh, MARK_SECONDS, MARKS_PER_KERNEL)
                )
        done = gatherResults(saving, consumeErrors=True)
        return done.addCallbacks(lambda _: True, lambda f: False)


def _decoded(value: str | None) -> tuple[int, str | None] | None:
    if not value:
        return None
    seq, _, parent_id = value.partition(" ")
    return (int(seq), parent_id or None) if seq.isdigit() else None


def _seq(value: str) -> int:
    seq = value.partition(" ")[0]
    return int(seq) if seq.isdigit() else -1


class _Asking:
    """One session's mark asked of Redis until it says for sure, or the wait runs out (:meth:`FleetMarks.load`)."""

    def __init__(
        self, store: FleetStore, clock: IReactorTime, session: tuple[str, str], patient: bool
    ) -> None:
        self._store, self._clock, self._session, self._patient = store, clock, session, patient
        self.result: Deferred[str | None] = Deferred(lambda _: self._stop())
        self._call: Deferred[str | None] | None = None
        self._timers: list[IDelayedCall] = []
        self._found: str | None = None
        """The freshest mark Redis had while it could not say for sure."""
        self._why: Failure | None = None

    def start(self, wait: float) -> None:
        self._timers.append(self._clock.callLater(wait, self._give_up))
        self._ask()

    def _ask(self) -> None:
        self._call = self._store.mark(*self._session)
        self._call.addCallbacks(self._end, self._failed)

    def _failed(self, failure: Failure) -> None:
        self._call = None
        if self.result.called or isinstance(failure.value, CancelledError):
            return
        if not isinstance(failure.value, (FleetUnavailable, MarksUnsure)):
            self._end(failure)
            return
        found = getattr(failure.value, "found", None)
        if found is not None and (self._found is None or _seq(found) > _seq(self._found)):
            self._found = found
        self._why = failure
        if not (self._patient or self._found is not None):
            self._end(failure)
            return
        self._timers.append(self._clock.callLater(LOAD_RETRY, self._ask))

    def _give_up(self) -> None:
        why = self._why or FleetUnavailable("Redis did not answer in time")
        self._end(self._found if self._found is not None else why)

    def _end(self, outcome: str | Failure | Exception | None) -> None:
        self._call = None
        self._stop()
        if not self.result.called:
            if isinstance(outcome, (Failure, Exception)):
                self.result.errback(outcome)
            else:
                self.result.callback(outcome)

    def _stop(self) -> None:
        for timer in self._timers:
            if timer.active():
                timer.cancel()
        self._timers.clear()
        call, self._call = self._call, None
        if call is not None:
            call.cancel()


__all__ = ["MARKS_PER_KERNEL", "MARK_BYTES", "MARK_SECONDS", "FleetMarks"]

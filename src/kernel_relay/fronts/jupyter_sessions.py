"""
The Jupyter front's sessions: where each disconnected ``session_id`` stopped reading (a *mark*), so a
connection that comes back with it resumes there; in a fleet, the positions of sessions are saved where every
relay finds them (:class:`~kernel_relay.relay.marks.SharedMarks`).

A mark keeps only ids (session, principal, the parent's ``msg_id``): at most :data:`MARKS_PER_KERNEL` per
kernel and :data:`MAX_MARKS` in all, each for :data:`MARK_AGE` seconds, forgotten with their kernel.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Protocol

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall

from ..jsontext import JSONError, loads
from ..kernels import Frame, pack_json
from ..relay.journal import Resume
from ..relay.marks import SharedMarks

#: How long the front remembers where a disconnected session stopped reading.
MARK_AGE: Final = 3600.0
#: At most this many disconnected sessions are remembered (the oldest are forgotten first)...
MAX_MARKS: Final = 10_000
#: ... and at most this many of one kernel.
MARKS_PER_KERNEL: Final = 1_000
#: A parent header longer than this is not looked into for its ``msg_id`` (a real one is a few hundred bytes).
MAX_PARENT_BYTES: Final = 64 * 1024
#: The longest parent ``msg_id`` a mark keeps.
MAX_MSG_ID: Final = 128
#: How often the positions of connected sessions are saved for the fleet (a relay that dies loses at most
#: this much of their reading: its sessions resume elsewhere from the last save, and see that much again).
#: A quarter second, so that with a save's own latency a session sees less than half a second again; only
#: positions that moved since the last save are written.
SHARE_INTERVAL: Final = 0.25
#: After a stall, how long the relay shares no position: its backlog went to sockets at once as it thawed,
#: and a client that closed meanwhile may have its close read only after a busy turn or two; a close read
#: within this long goes back before what it was handed just before (``UNREAD_SECONDS``) and saves that.
QUIET_AFTER_STALL: Final = 3 * SHARE_INTERVAL
#: How long a reconnecting session waits for the fleet to say where it stopped before it goes on without.
SHARE_WAIT: Final = 2.0


class Reading(Protocol):
    """A connected session as its marks see it: which kernel and session, and how far it has read."""

    @property
    def kernel_id(self) -> str: ...

    @property
    def session_key(self) -> str: ...

    @property
    def session_id(self) -> str: ...

    @property
    def last_seq(self) -> int: ...

    @property
    def last_parent(self) -> Frame: ...


@dataclass
class _Mark:
    """Where a disconnected session stopped: the last ``relay_seq`` sent, and its parent's ``msg_id``."""

    seq: int
    parent_id: str | None
    time: float


def parent_frame(msg_id: str | None) -> Frame:
    """The parent header of what the relay tells a session about the cell ``msg_id`` (``{}``: none)."""
    return pack_json({"msg_id": msg_id}) if msg_id else b"{}"


def msg_id_in(parent: Frame) -> str | None:
    """The ``msg_id`` of a parent header, if it is a short string (nothing else of it is kept)."""
    if not parent or len(parent) > MAX_PARENT_BYTES or parent == b"{}":
        return None
    try:
        header = loads(parent)
    except JSONError:
        return None
    msg_id = header.get("msg_id") if isinstance(header, dict) else None
    return msg_id if isinstance(msg_id, str) and 0 < len(msg_id) <= MAX_MSG_ID else None


class JupyterSessions:
    """The marks of one front's sessions, here and (in a fleet) shared."""

    def __init__(self, clock: IReactorTime, connected: Callable[[], list[Reading]]) -> None:
        self._clock = clock
        self._connected = connected
        # kernel id -> session key -> mark, oldest first.
        self._marks: dict[str, OrderedDict[str, _Mark]] = {}
        self._parent_seen: tuple[Frame, str | None] = (b"{}", None)
        self.shared: SharedMarks | None = None
        """Set by the wiring in a fleet; the positions of sessions are then saved for every relay."""
        self._share = LoopingCall(self._share_marks)
        self._share.clock = clock
        self._shared: dict[tuple[str, str], int] = {}
        self._shared_at: float | None = None
        self._stalled_at: float | None = None

    def share(self, marks: SharedMarks) -> None:
        """Save where sessions are, on disconnect and every :data:`SHARE_INTERVAL` while connected."""
        self.shared = marks
        if not self._share.running:
            self._share.start(SHARE_INTERVAL, now=False)

    def stop(self) -> None:
        if self._share.running:
            self._share.stop()

    def resume_of(self, kernel_id: str, session_key: str) -> tuple[Resume, Frame | None] | None:
        """Where a session that comes back stopped (taken: a mark serves once), if it is remembered here."""
        marks = self._marks.get(kernel_id)
        mark = marks.pop(session_key, None) if marks else None
        if mark is None or self._clock.seconds() - mark.time > MARK_AGE:
            return None
        return Resume(mark.seq, False), parent_frame(mark.parent_id)

    def load(
        self, kernel_id: str, session_key: str, patient: bool = False
    ) -> Deferred[tuple[int, str | None] | None]:
        """
        Where the fleet says the session stopped (None: no mark), within :data:`SHARE_WAIT`; fails when
        the fleet could not say (then the session may have read elsewhere: it cannot be taken for new).
        """
        assert self.shared is not None
        return self.shared.load(kernel_id, session_key, patient, SHARE_WAIT)

    def ended(self, kernel_id: str, session_key: str, last_seq: int, last_parent: Frame) -> None:
        """A session's connection ended where it had read to: remember it (and tell the fleet)."""
        self._shared.pop((kernel_id, session_key), None)
        parent_id = self.msg_id_in(last_parent)
        self._remember(kernel_id, session_key, _Mark(last_seq, parent_id, 0.0))
        if self.shared is not None:
            # 0 too: a session that may have read nothing resumes from the start, not as new.
            self.shared.save(kernel_id, {session_key: (last_seq, parent_id)})

    def left(self, kernel_id: str, session_key: str) -> None:
        """A connection that leaves no mark ended: its position is no longer shared."""
        self._shared.pop((kernel_id, session_key), None)

    def marks_of(self, kernel_id: str) -> int:
        """How many disconnected sessions of the kernel are remembered here."""
        return len(self._marks.get(kernel_id, ()))

    def forget_kernel(self, kernel_id: str) -> None:
        """A kernel that stopped takes its marks with it."""
        self._marks.pop(kernel_id, None)
        for key in [key for key in self._shared if key[0] == kernel_id]:
            del self._shared[key]

    def msg_id_in(self, parent: Frame) -> str | None:
        """:func:`msg_id_in`, decoded once for the many sessions that last saw the same message."""
        seen, msg_id = self._parent_seen
        if parent is not seen:
            msg_id = msg_id_in(parent)
            self._parent_seen = (parent, msg_id)
        return msg_id

    def _share_marks(self) -> None:
        now, before = self._clock.seconds(), self._shared_at
        self._shared_at = now
        if before is not None and now - before > 2 * SHARE_INTERVAL:
            self._stalled_at = now
        if self.shared is None or (
            self._stalled_at is not None and now - self._stalled_at < QUIET_AFTER_STALL
        ):
            # The relay stalled (frozen, say): it hands its backlog to sockets whose clients may have closed
            # meanwhile; their closes come first (each saves what it had surely read), then a later round.
            return
        changed: dict[str, dict[str, tuple[int, str | None]]] = {}
        for reading in self._connected():
            key = (reading.kernel_id, reading.session_key)
            if (
                reading.session_id
                and reading.last_seq
                and self._shared.get(key) != reading.last_seq
            ):
                self._shared[key] = reading.last_seq
                changed.setdefault(key[0], {})[key[1]] = (
                    reading.last_seq,
                    self.msg_id_in(reading.last_parent),
                )
        for kernel_id, marks in changed.items():
            self.shared.save(kernel_id, marks)

    def _remember(self, kernel_id: str, session_key: str, mark: _Mark) -> None:
        now = mark.time = self._clock.seconds()
        marks = self._marks.setdefault(kernel_id, OrderedDict())
        marks[session_key] = mark
        marks.move_to_end(session_key)
        if len(marks) > MARKS_PER_KERNEL:
            marks.popitem(last=False)
        total = 0
        for kernel, kept in list(self._marks.items()):
            while kept and now - next(iter(kept.values())).time > MARK_AGE:
                kept.popitem(last=False)
            if not kept:
                del self._marks[kernel]
            total += len(kept)
        while total > MAX_MARKS:
            # The oldest mark of all goes first.
            oldest = min(self._marks.values(), key=lambda kept: next(iter(kept.values())).time)
            oldest.popitem(last=False)
            total -= 1
            if not oldest:
                self._marks = {k: v for k, v in self._marks.items() if v}

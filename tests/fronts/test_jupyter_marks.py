"""The Jupyter front's session marks in process: ids only, bounded per kernel, gone with their kernel."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock

from kernel_relay.fronts.jupyter import MARKS_PER_KERNEL, JupyterFront
from kernel_relay.fronts.jupyter_request import Admitted
from kernel_relay.relay.events import ReplayExpired
from kernel_relay.relay.journal import Resume


class FakeCore:
    """What the front asks of the core when a connection ends."""

    def __init__(self) -> None:
        self.running = {"k1", "k2"}

    def has_kernel(self, kernel_id: str) -> bool:
        return kernel_id in self.running

    def detach(self, *args: Any) -> None:
        pass


def disconnect(front: JupyterFront, kernel_id: str, session_id: str, parent: bytes) -> None:
    """A connection of ``session_id`` that read up to seq 7, whose last message had ``parent``, ends."""
    admitted = Admitted(SimpleNamespace(id=kernel_id), ["iopub"], session_id, "127.0.0.1", "p")  # type: ignore[arg-type]
    connection = SimpleNamespace(
        client_id=f"c-{kernel_id}-{session_id}",
        admitted=admitted,
        channels={"iopub"},
        last_seq=7,
        last_parent=parent,
    )
    front._connections[connection.client_id] = connection  # type: ignore[assignment]
    front.connection_lost(connection)  # type: ignore[arg-type]


def test_a_mark_keeps_the_parents_msg_id_only_and_marks_are_bounded_per_kernel() -> None:
    """A mark keeps a parent's msg_id, not the parent (one over 64 KiB not even that); past MARKS_PER_KERNEL a kernel's oldest mark goes."""
    core = FakeCore()
    front = JupyterFront(core, Clock())  # type: ignore[arg-type]
    disconnect(front, "k1", "s0", b'{"msg_id": "cell-1", "session": "x"}')
    disconnect(
        front, "k1", "big", b'{"msg_id": "cell-2", "padding": "' + b"x" * 1024 * 1024 + b'"}'
    )
    assert [(m.seq, m.parent_id) for m in front.sessions._marks["k1"].values()] == [
        (7, "cell-1"),
        (7, None),
    ]
    for n in range(1, MARKS_PER_KERNEL + 5):
        disconnect(front, "k1", f"s{n}", b"{}")
    disconnect(front, "k2", "s0", b"{}")
    assert front.marks_of("k1") == MARKS_PER_KERNEL and front.marks_of("k2") == 1
    assert "p/s0" not in front.sessions._marks["k1"], "the oldest went first"


def test_marks_go_with_their_kernel_and_none_is_made_after() -> None:
    """When a kernel stops its marks are forgotten, and a connection that ends after makes none."""
    core = FakeCore()
    front = JupyterFront(core, Clock())  # type: ignore[arg-type]
    disconnect(front, "k1", "s1", b"{}")
    disconnect(front, "k2", "s1", b"{}")
    core.running.discard("k1")
    front.kernel_stopped(SimpleNamespace(id="k1"), "shutdown")  # type: ignore[arg-type]
    disconnect(front, "k1", "s2", b"{}")
    assert front.marks_of("k1") == 0 and front.marks_of("k2") == 1


class FleetCore(FakeCore):
    """A core whose kernel k1 has numbered 40 messages; what is attached is noted."""

    def __init__(self) -> None:
        super().__init__()
        self.attached: list[tuple[str, Resume]] = []
        self.numbered = 40

    def last_seq(self, kernel_id: str) -> int:
        return self.numbered

    def attach(self, client: Any, kernel: Any, channel: str, resume: Resume) -> None:
        self.attached.append((channel, resume))


class Marks:
    """The fleet's marks: ``answer`` is what a load gives (an exception: it fails)."""

    def __init__(self, answer: tuple[int, str | None] | Exception | Deferred[Any] | None) -> None:
        self.answer = answer

    def save(self, kernel_id: str, marks: Any) -> None:
        pass

    def load(
        self, kernel_id: str, session_key: str, patient: bool = False, wait: float = 2.0
    ) -> Deferred[tuple[int, str | None] | None]:
        if isinstance(self.answer, Deferred):
            return self.answer
        if isinstance(self.answer, Exception):
            return fail(self.answer)
        return succeed(self.answer)


def join(
    answer: tuple[int, str | None] | Exception | Deferred[Any] | None, numbered: int = 40
) -> tuple[FleetCore, list[object]]:
    """A session joins k1's iopub on a fleet relay whose marks answer ``answer``: what it is attached with, told."""
    core = FleetCore()
    core.numbered = numbered
    front = JupyterFront(core, Clock())  # type: ignore[arg-type]
    front.share_marks(Marks(answer))
    told: list[object] = []
    admitted = Admitted(SimpleNamespace(id="k1"), ["iopub"], "s1", "127.0.0.1", "p")  # type: ignore[arg-type]
    connection = SimpleNamespace(
        client_id="c1",
        admitted=admitted,
        channels=set(),
        last_seq=0,
        last_parent=b"{}",
        tell=lambda kernel_id, channel, event: told.append(event),
    )
    front.connection_open(connection)  # type: ignore[arg-type]
    front.sessions.stop()
    return core, told


def test_a_session_the_fleet_cannot_place_is_told_what_it_may_have_missed() -> None:
    """When the fleet's marks cannot be read, a session unknown here is told output may be missing, not taken for new."""
    core, told = join(ConnectionError("Redis is gone"))
    assert core.attached == [("iopub", Resume(40, False))]
    assert len(told) == 1 and isinstance(told[0], ReplayExpired)
    assert told[0].last == 40 and "Redis is gone" in (told[0].problem or "")
    core, told = join(None)
    assert core.attached == [("iopub", Resume(40, False))] and told == [], "a new session"
    core, told = join((12, "cell"))
    assert core.attached == [("iopub", Resume(12, False))] and told == []


def test_a_session_new_here_at_position_0_gets_what_came_while_the_fleet_answered() -> None:
    """The fleet's answer came late for a session new here, the kernel at position 0: iopub joined live only
    and missed what was numbered meanwhile; it replays from 0 (what it connected at) instead."""
    answer: Deferred[tuple[int, str | None] | None] = Deferred()
    core, told = join(answer, numbered=0)
    core.numbered = 3  # output came while the fleet was asked
    answer.callback(None)
    assert core.attached == [("iopub", Resume(0, False))] and told == []

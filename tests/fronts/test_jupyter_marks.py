"""The Jupyter front's session marks in process: ids only, bounded per kernel, gone with their kernel."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from twisted.internet.task import Clock

from kernel_relay.fronts.jupyter import MARKS_PER_KERNEL, JupyterFront
from kernel_relay.fronts.jupyter_request import Admitted


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

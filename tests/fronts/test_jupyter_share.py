"""What a fleet relay shares of a connected Jupyter session's position, in process."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from twisted.internet.task import Clock

from kernel_relay.fronts.jupyter_sessions import SHARE_INTERVAL, JupyterSessions


class Saved:
    def __init__(self) -> None:
        self.saved: list[tuple[str, dict[str, Any]]] = []

    def save(self, kernel_id: str, marks: dict[str, Any]) -> None:
        self.saved.append((kernel_id, dict(marks)))


def test_a_connected_sessions_shared_mark_is_where_it_was_a_moment_ago_not_the_last_handed() -> (
    None
):
    """Chaos seed 6: relay0 thawed, handed 63 lines to a socket its client had closed, shared them as read."""
    reading = SimpleNamespace(
        kernel_id="k",
        session_key="p/s",
        session_id="s",
        last_seq=706,
        settled_seq=643,
        last_parent=b"{}",
    )
    clock, marks = Clock(), Saved()
    sessions = JupyterSessions(clock, lambda: [reading])  # type: ignore[arg-type]
    sessions.share(marks)  # type: ignore[arg-type]
    clock.advance(SHARE_INTERVAL)
    sessions.stop()
    assert marks.saved == [("k", {"p/s": (643, None)})]

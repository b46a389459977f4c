"""What a fleet relay shares of its connected Jupyter sessions' positions, in process."""

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


def test_a_relay_that_stalled_shares_no_position_until_its_clients_closes_are_in() -> None:
    """
    Chaos seed 6: relay0 thawed from SIGSTOP, handed 63 lines to a socket whose client had closed, and shared
    them as read at once; the next relay resumed the session past them. The round after a stall shares nothing.
    """
    reading = SimpleNamespace(
        kernel_id="k", session_key="p/s", session_id="s", last_seq=643, last_parent=b"{}"
    )
    connected = [reading]
    clock, marks = Clock(), Saved()
    sessions = JupyterSessions(clock, lambda: connected)  # type: ignore[arg-type]
    sessions.share(marks)  # type: ignore[arg-type]
    clock.advance(SHARE_INTERVAL)
    assert marks.saved == [("k", {"p/s": (643, None)})]
    reading.last_seq = 706  # handed on as the relay thawed, after a freeze of 6.5 s
    clock.advance(6.5)
    assert len(marks.saved) == 1
    connected.clear()  # its client's close is read: the connection saves its own mark as it ends
    clock.advance(SHARE_INTERVAL)
    sessions.stop()
    assert len(marks.saved) == 1

"""What a fleet relay shares of its connected Jupyter sessions' positions, in process."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from twisted.internet.task import Clock

from kernel_relay.fronts.jupyter_sessions import QUIET_AFTER_STALL, SHARE_INTERVAL, JupyterSessions


class Saved:
    def __init__(self) -> None:
        self.saved: list[tuple[str, dict[str, Any]]] = []

    def save(self, kernel_id: str, marks: dict[str, Any]) -> None:
        self.saved.append((kernel_id, dict(marks)))


def sharing(
    last_seq: int,
) -> tuple[SimpleNamespace, list[SimpleNamespace], Clock, Saved, JupyterSessions]:
    """One connected session at ``last_seq``, shared once on time: its reading, the connected list, the
    clock, the saves and the sessions."""
    reading = SimpleNamespace(
        kernel_id="k", session_key="p/s", session_id="s", last_seq=last_seq, last_parent=b"{}"
    )
    connected = [reading]
    clock, marks = Clock(), Saved()
    sessions = JupyterSessions(clock, lambda: connected)  # type: ignore[arg-type]
    sessions.share(marks)  # type: ignore[arg-type]
    clock.advance(SHARE_INTERVAL)
    assert marks.saved == [("k", {"p/s": (last_seq, None)})]
    return reading, connected, clock, marks, sessions


def test_a_relay_that_stalled_shares_no_position_until_its_clients_closes_are_in() -> None:
    """
    Chaos seed 6: relay0 thawed from SIGSTOP, handed 63 lines to a socket whose client had closed, and shared
    them as read at once; the next relay resumed the session past them. The round after a stall shares nothing.
    """
    reading, connected, clock, marks, sessions = sharing(643)
    reading.last_seq = 706  # handed on as the relay thawed, after a freeze of 6.5 s
    clock.advance(6.5)
    assert len(marks.saved) == 1
    connected.clear()  # its client's close is read: the connection saves its own mark as it ends
    clock.advance(SHARE_INTERVAL)
    sessions.stop()
    assert len(marks.saved) == 1


def test_the_rounds_just_after_a_stall_share_nothing_while_a_busy_relay_reads_the_closes() -> None:
    """
    Chaos seed 2: relay4 thawed after 7.6 s, handed 63 lines to a session whose client closed 0.1 s later,
    and the next round (on time) shared them as read before the close was read. No round shares for
    QUIET_AFTER_STALL after a stall; the rounds after it share again.
    """
    reading, _, clock, marks, sessions = sharing(2257)
    reading.last_seq = 2320  # handed on as the relay thawed
    clock.advance(7.6)
    clock.advance(SHARE_INTERVAL)  # the first round on time again: the close is not read yet
    assert len(marks.saved) == 1
    for _ in range(round(QUIET_AFTER_STALL / SHARE_INTERVAL)):
        clock.advance(SHARE_INTERVAL)
    sessions.stop()
    assert marks.saved[1:] == [("k", {"p/s": (2320, None)})]

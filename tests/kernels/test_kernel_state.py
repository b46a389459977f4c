"""A kernel's execution state with protocol 5.5's subshells and control requests (in process, no ZMQ)."""

from __future__ import annotations

from typing import Any

from jupyter_client.session import Session
from twisted.internet.task import Clock

from kernel_relay.kernels import Kernel
from tests.kernels.test_kernels_channels import INFO, FakeOpener, frames_from_kernel


def _kernel() -> tuple[Kernel, Session, FakeOpener]:
    session = Session(key=b"unit-secret", signature_scheme="hmac-sha256")
    opener = FakeOpener()
    kernel = Kernel(
        kernel_id="k1",
        spec_name="python3",
        connection_info=INFO,
        session=session,
        clock=Clock(),
        opener=opener,
    )
    return kernel, session, opener


def _status(
    session: Session, opener: FakeOpener, state: str, msg_id: str, msg_type: str, **header: Any
) -> None:
    parent = {"msg_id": msg_id, "msg_type": msg_type, **header}
    opener.find(5002).on_frames(
        frames_from_kernel(session, "status", {"execution_state": state}, parent)
    )


def test_a_subshell_cell_keeps_the_kernel_busy_past_other_requests_idle() -> None:
    """A cell in a subshell keeps the kernel busy while the shell's cell and a control request finish."""
    kernel, session, opener = _kernel()
    _status(session, opener, "busy", "slow", "execute_request", subshell_id="s1")
    _status(session, opener, "busy", "fast", "execute_request")
    _status(session, opener, "busy", "debug", "debug_request")
    _status(session, opener, "idle", "fast", "execute_request")
    _status(session, opener, "idle", "debug", "debug_request")
    assert kernel.execution_state == "busy"
    _status(session, opener, "idle", "slow", "execute_request", subshell_id="s1")
    assert kernel.execution_state == "idle"


def test_a_lost_idle_is_forgotten_at_the_next_request_of_its_line_or_a_restart() -> None:
    """Each line runs one request at a time, so a newer request replaces one whose idle never came;
    a state set from outside (a restart) forgets them all."""
    kernel, session, opener = _kernel()
    _status(session, opener, "busy", "lost", "execute_request")
    _status(session, opener, "busy", "next", "execute_request")
    _status(session, opener, "idle", "next", "execute_request")
    assert kernel.execution_state == "idle"
    _status(session, opener, "busy", "cut", "execute_request", subshell_id="s1")
    kernel.execution_state = "restarting"
    _status(session, opener, "busy", "first", "kernel_info_request")
    _status(session, opener, "idle", "first", "kernel_info_request")
    assert kernel.execution_state == "idle"
    opener.find(5002).on_frames(
        frames_from_kernel(session, "status", {"execution_state": "starting"})
    )
    assert kernel.execution_state == "starting"

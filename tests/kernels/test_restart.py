"""Restarts in process: shared restarts, readiness and the deadline on a Clock, kernel processes faked."""

from __future__ import annotations

from twisted.internet.task import Clock

from kernel_relay.kernels import KernelLaunchError, UnknownKernel
from kernel_relay.kernels._restart import Restarts
from kernel_relay.kernels._running import RunningKernels
from tests.fakes import FakeKernel, FakeProcesses, RecordingObserver, failure_of, managed, result_of


class Setup:
    """A running kernel "k", its restarts, and what they are given: a Clock, fake processes, an observer."""

    def __init__(self, timeout: float = 10.0) -> None:
        self.clock, self.processes, self.observer = Clock(), FakeProcesses(), RecordingObserver()
        self.running = RunningKernels(self.observer, forgotten=lambda: None)
        self.kernel = FakeKernel("k")
        self.running.add(managed(self.kernel))
        self.restarts = Restarts(
            self.clock,
            self.processes,  # type: ignore[arg-type]
            self.running,
            self.observer,
            timeout=timeout,
        )


def restarts_of(
    timeout: float = 10.0,
) -> tuple[Restarts, Clock, FakeProcesses, RecordingObserver, FakeKernel]:
    setup = Setup(timeout)
    return setup.restarts, setup.clock, setup.processes, setup.observer, setup.kernel


def test_a_restart_fires_once_the_new_process_answers() -> None:
    """Observers hear restarting, restarted and ready in turn; the restart fires with the kernel, idle again."""
    restarts, _, processes, observer, kernel = restarts_of()
    d = restarts.restart("k")
    assert kernel.execution_state == "restarting" and "k" in restarts
    assert observer.events == [("restarting", "k")]
    processes.answer("restart", 4242)
    assert kernel.pid == 4242 and kernel.execution_state == "starting"
    assert observer.events[-1] == ("restarted", "k") and not d.called
    kernel.execution_state = "busy"  # the probe's own status
    kernel.become_ready()
    assert result_of(d) is kernel and kernel.execution_state == "idle"
    assert observer.events[-1] == ("ready", "k") and "k" not in restarts


def test_restarts_asked_for_together_share_one() -> None:
    """A second restart while one is under way restarts nothing more and fires with the first."""
    restarts, _, processes, observer, kernel = restarts_of()
    first, second = restarts.restart("k"), restarts.restart("k")
    assert processes.waiting("restart") == 1
    processes.answer("restart", None)
    kernel.become_ready()
    assert result_of(first) is result_of(second) is kernel
    assert [event for event, *_ in observer.events] == ["restarting", "restarted", "ready"]


def test_a_restart_past_its_deadline_kills_the_kernel() -> None:
    """A kernel not back within the timeout is killed, reported died, and every caller gets a KernelLaunchError."""
    restarts, clock, processes, observer, kernel = restarts_of(timeout=3)
    first, second = restarts.restart("k"), restarts.restart("k")
    processes.answer("restart", None)
    clock.advance(3)
    for d in (first, second):
        message = failure_of(d, KernelLaunchError).getErrorMessage()
        assert message == "kernel k did not restart: timed out after 3s"
    assert kernel.execution_state == "dead" and "k" not in restarts
    processes.answer("kill")
    assert observer.events[-1] == ("stopped", "k", "died: restart failed (timed out after 3s)")
    assert clock.getDelayedCalls() == []


def test_a_failed_restart_reports_the_kernel_died() -> None:
    """A restart the kernel processes refuse kills the kernel and tells observers why."""
    restarts, clock, processes, observer, _ = restarts_of()
    d = restarts.restart("k")
    processes.answer("restart", KernelLaunchError("could not restart kernel k: boom"))
    assert "boom" in failure_of(d, KernelLaunchError).getErrorMessage()
    processes.answer("kill")
    assert observer.events[-1] == (
        "stopped",
        "k",
        "died: restart failed (could not restart kernel k: boom)",
    )
    assert clock.getDelayedCalls() == []


def test_only_running_kernels_restart() -> None:
    """An unknown kernel, or one being stopped, cannot be restarted."""
    setup = Setup()
    failure_of(setup.restarts.restart("nope"), UnknownKernel)
    setup.running.stop("k", "shutdown", setup.processes.stop)
    failure_of(setup.restarts.restart("k"), UnknownKernel)
    assert setup.processes.made("restart") == []


def test_settled_fires_whatever_the_outcome() -> None:
    """settled fires with None once the restart under way is over, even when it failed, and at once when none is."""
    restarts, _, processes, _, _ = restarts_of()
    assert result_of(restarts.settled("k")) is None
    d = restarts.restart("k")
    settled = restarts.settled("k")
    assert not settled.called
    processes.answer("restart", RuntimeError("boom"))
    assert result_of(settled) is None
    failure_of(d, KernelLaunchError)

"""The launcher in process: launch, readiness and the deadline on a Clock, kernel processes faked."""

from __future__ import annotations

from twisted.internet.task import Clock

from kernel_relay.kernels import KernelLaunchError, UnknownKernelSpec
from kernel_relay.kernels._launcher import KernelLauncher
from kernel_relay.kernels._processes import ManagedKernel, kill_quietly
from tests.fakes import FakeProcesses, failure_of, result_of


def launcher_of(timeout: float = 10.0) -> tuple[KernelLauncher, Clock, FakeProcesses]:
    clock, processes = Clock(), FakeProcesses()
    return KernelLauncher(clock, processes, timeout=timeout), clock, processes  # type: ignore[arg-type]


def test_a_launch_fires_once_the_started_kernel_answers() -> None:
    """A launch fires only after its process started and its kernel answered, with both, and the kernel idle."""
    launcher, _, processes = launcher_of()
    d = launcher.launch("python3")
    assert [spec for spec, _ in processes.made("launch")] == ["python3"] and len(launcher) == 1
    manager = processes.launched()
    kernel = processes.connected[manager.kernel_id]
    assert not d.called and launcher.watched() == [(kernel.id, manager)]
    kernel.become_ready()
    assert result_of(d) == ManagedKernel(kernel, manager)  # type: ignore[arg-type]
    assert kernel.execution_state == "idle" and len(launcher) == 0 and launcher.watched() == []


def test_a_kernel_not_ready_in_time_is_given_up_and_killed() -> None:
    """Past the deadline a launch fails with KernelLaunchError, its kernel is closed and its process killed."""
    launcher, clock, processes = launcher_of(timeout=2)
    d = launcher.launch("python3")
    manager = processes.launched()
    kernel = processes.connected[manager.kernel_id]
    clock.advance(1.9)
    assert not d.called
    clock.advance(0.1)
    failure = failure_of(d, KernelLaunchError)
    assert "did not become ready within 2s" in failure.getErrorMessage()
    assert kernel.closed and kernel.execution_state == "dead"
    assert processes.made("kill") == [manager] and kernel.probes[0].called
    assert len(launcher) == 0


def test_a_kernel_given_up_before_its_thread_returns_is_killed_when_it_does() -> None:
    """A launch aborted while its process is still being started kills that process once it is there."""
    launcher, clock, processes = launcher_of(timeout=1)
    d = launcher.launch("python3")
    clock.advance(1)
    failure_of(d, KernelLaunchError)
    assert processes.made("kill") == [] and launcher.abort_all("again") == []
    manager = processes.launched()
    assert processes.made("kill") == [manager] and processes.connected == {}


def test_aborting_reports_when_the_late_process_is_killed() -> None:
    """abort_all's Deferred for a launch whose thread is busy fires only once the late process is killed."""
    launcher, _, processes = launcher_of()
    d = launcher.launch("python3")
    (reaped,) = launcher.abort_all("the relay is stopping")
    assert "stopping" in failure_of(d, KernelLaunchError).getErrorMessage()
    assert not reaped.called
    manager = processes.launched()
    assert not reaped.called
    processes.answer("kill")
    assert reaped.called and processes.made("kill") == [manager]


def test_cancelling_a_launch_gives_it_up() -> None:
    """Cancelling a launch's Deferred fails it as cancelled and kills what it started."""
    launcher, _, processes = launcher_of()
    d = launcher.launch("python3")
    manager = processes.launched()
    d.cancel()
    assert "cancelled" in failure_of(d, KernelLaunchError).getErrorMessage()
    assert processes.made("kill") == [manager] and len(launcher) == 0


def test_launch_errors_keep_their_kind_or_become_launch_errors() -> None:
    """An unknown kernelspec fails as such; any other error of the launch thread becomes a KernelLaunchError."""
    launcher, _, processes = launcher_of()
    unknown, broken = launcher.launch("nope"), launcher.launch("broken")
    processes.answer("launch", UnknownKernelSpec("no kernel spec named 'nope'"))
    processes.answer("launch", OSError("disk full"))
    failure_of(unknown, UnknownKernelSpec)
    message = failure_of(broken, KernelLaunchError).getErrorMessage()
    assert message == "could not start a 'broken' kernel: disk full"
    assert len(launcher) == 0


def test_a_process_exiting_during_startup_fails_the_launch_at_once() -> None:
    """A launch whose process is reported dead fails at once, saying how it ended."""
    launcher, _, processes = launcher_of()
    d = launcher.launch("crash")
    manager = processes.launched()
    assert launcher.died("someone-else", "died: exit code 1") is False
    assert launcher.died(manager.kernel_id, "died: exit code 3") is True
    message = failure_of(d, KernelLaunchError).getErrorMessage()
    assert message == "the 'crash' kernel exited during startup (exit code 3)"
    assert processes.made("kill") == [manager]


def test_a_kernel_that_cannot_be_connected_to_is_killed() -> None:
    """When connecting to a started kernel fails, the launch fails saying why and the process is killed."""
    launcher, _, processes = launcher_of()
    processes.connect_error = ValueError("no key")
    d = launcher.launch("python3")
    manager = processes.launched()
    message = failure_of(d, KernelLaunchError).getErrorMessage()
    assert message == "could not connect to the 'python3' kernel: no key"
    assert processes.made("kill") == [manager]


def test_killing_quietly_swallows_the_failure() -> None:
    """A kill that fails is logged, and its Deferred still fires with None."""
    processes = FakeProcesses()
    d = kill_quietly(processes, "manager")  # type: ignore[arg-type]
    processes.answer("kill", RuntimeError("still alive"))
    assert result_of(d) is None

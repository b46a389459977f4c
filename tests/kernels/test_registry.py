"""The registry as one façade, in process: its parts composed on a Clock, kernel processes faked."""

from __future__ import annotations

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from kernel_relay.kernels import (
    LOOKUP_WAIT,
    Kernel,
    KernelLaunchError,
    KernelRegistry,
    KernelSpecInfo,
    UnknownKernel,
    UnknownKernelSpec,
)
from tests.fakes import FakeKernel, FakeProcesses, RecordingObserver, failure_of, result_of


def registry_of() -> tuple[KernelRegistry, Clock, FakeProcesses, RecordingObserver]:
    clock, processes, observer = (
        Clock(),
        FakeProcesses([("python3", "Python 3", "python")]),
        RecordingObserver(),
    )
    registry = KernelRegistry(
        clock,
        processes=processes,  # type: ignore[arg-type]
        poll_interval=1.0,
        launch_timeout=30,
        shutdown_timeout=5,
    )
    registry.add_observer(observer)
    return registry, clock, processes, observer


def ready(processes: FakeProcesses) -> FakeKernel:
    """The oldest launch waiting starts its process, and its kernel answers."""
    kernel = processes.connected[processes.launched().kernel_id]
    kernel.become_ready()
    return kernel


def test_a_started_kernel_is_handed_out_and_announced() -> None:
    """start fires with the ready kernel, which the registry then holds and its observers have heard of."""
    registry, _, processes, observer = registry_of()
    d = registry.start("python3")
    assert len(registry) == 0
    kernel = ready(processes)
    assert result_of(d) is kernel
    assert registry.get(kernel.id) is kernel and kernel.id in registry and len(registry) == 1
    assert list(registry) == registry.kernels() == [kernel]
    assert observer.events == [("started", kernel.id)]


def test_names_that_are_no_kernelspec_are_refused_at_once() -> None:
    """A malformed kernelspec name fails start at once, briefly, and launches nothing."""
    registry, _, processes, _ = registry_of()
    for name in ["", "../python3", "python3\x00", "x" * 5000]:
        failure = failure_of(registry.start(name), UnknownKernelSpec)
        assert len(failure.getErrorMessage()) < 120
    assert processes.made("launch") == []


def test_a_warm_kernel_is_handed_out_at_once_and_replaced() -> None:
    """With a warm pool, start hands out the pooled kernel at once, as just used, and the pool refills."""
    registry, clock, processes, observer = registry_of()
    registry.keep_warm("python3", 1)
    warm = ready(processes)
    assert registry.pooled() == registry.pooled("python3") == 1 and len(registry) == 0
    assert observer.events == []
    clock.advance(100)
    assert result_of(registry.start("python3")) is warm
    assert warm.last_activity == 100 and registry.pooled() == 0 and warm.id in registry
    assert observer.events == [("started", warm.id)]
    assert processes.waiting("launch") == 1


def test_a_kernel_that_dies_is_reported_and_forgotten() -> None:
    """A running kernel found dead is killed, reported with its exit, forgotten, and the watch rests."""
    registry, clock, processes, observer = registry_of()
    registry.start("python3")
    kernel = ready(processes)
    processes.exited[kernel.id] = 1
    clock.advance(1)
    assert kernel.execution_state == "dead" and processes.waiting("kill") == 1
    processes.answer("kill")
    assert observer.events[-1] == ("stopped", kernel.id, "died: exit code 1")
    assert kernel.id not in registry and clock.getDelayedCalls() == []


def test_a_kernel_dying_while_it_starts_fails_the_start() -> None:
    """A process that exits before its kernel is ready fails start at once, saying how it ended."""
    registry, clock, processes, _ = registry_of()
    d = registry.start("python3")
    manager = processes.launched()
    processes.exited[manager.kernel_id] = -9
    clock.advance(1)
    message = failure_of(d, KernelLaunchError).getErrorMessage()
    assert message == "the 'python3' kernel exited during startup (killed by signal 9)"


def test_shutting_down_a_restarting_kernel_waits_for_the_restart() -> None:
    """A shutdown asked for during a restart stops the kernel only once the restart is over."""
    registry, _, processes, observer = registry_of()
    registry.start("python3")
    kernel = ready(processes)
    restarted = registry.restart(kernel.id)
    stopped = registry.shutdown(kernel.id)
    assert processes.made("stop") == []
    processes.answer("restart", None)
    kernel.become_ready()
    assert result_of(restarted) is kernel and processes.waiting("stop") == 1
    processes.answer("stop")
    assert result_of(stopped) is None and kernel.id not in registry
    assert observer.events[-1] == ("stopped", kernel.id, "shutdown")


def test_interrupts_reach_only_running_kernels() -> None:
    """An interrupt reaches a running kernel's process; an unknown kernel or a restarting one refuses it."""
    registry, _, processes, _ = registry_of()
    registry.start("python3")
    kernel = ready(processes)
    registry.interrupt(kernel.id)
    assert [manager.kernel_id for manager in processes.made("interrupt")] == [kernel.id]
    failure_of(registry.interrupt("nope"), UnknownKernel)
    registry.restart(kernel.id)
    assert (
        "restarting"
        in failure_of(registry.interrupt(kernel.id), KernelLaunchError).getErrorMessage()
    )
    failure_of(registry.shutdown("nope"), UnknownKernel)
    with pytest.raises(UnknownKernel):
        registry.get("nope")


def test_a_kernel_is_not_polled_while_it_restarts() -> None:
    """While its process is being replaced a kernel is not asked about; it is again once it is back."""
    registry, clock, processes, _ = registry_of()
    registry.start("python3")
    kernel = ready(processes)
    registry.restart(kernel.id)
    clock.advance(1)
    assert processes.polled == []
    processes.answer("restart", None)
    kernel.become_ready()
    clock.advance(1)
    assert processes.polled == [[kernel.id]]


def test_shutdown_all_gives_up_launches_and_never_fails() -> None:
    """shutdown_all gives up launches and stops running kernels; one that will not stop fails nothing."""
    registry, _, processes, _ = registry_of()
    registry.start("python3")
    kernel = ready(processes)
    starting = registry.start("python3")
    done = registry.shutdown_all()
    assert "stopping" in failure_of(starting, KernelLaunchError).getErrorMessage()
    late = processes.launched()  # the given-up launch's process, killed as soon as it is there
    assert processes.made("kill") == [late]
    processes.answer("kill")
    assert not done.called
    processes.answer("stop", RuntimeError("will not stop"))
    assert result_of(done) is None
    assert (
        kernel.id in registry and not processes.closed
    )  # it is still there, and so are its sockets


def test_shutdown_all_releases_the_processes_once_all_is_gone() -> None:
    """Once every kernel, pooled ones too, is gone, shutdown_all closes the processes and leaves no timer."""
    registry, clock, processes, observer = registry_of()
    registry.keep_warm("python3", 1)
    handed_out = ready(processes)
    assert result_of(registry.start("python3")) is handed_out
    pooled = ready(processes)  # its replacement
    done = registry.shutdown_all()
    assert pooled.closed and pooled.execution_state == "dead"
    processes.answer("kill")
    processes.answer("stop")
    assert result_of(done) is None and processes.closed
    assert len(registry) == 0 and registry.pooled() == 0 and clock.getDelayedCalls() == []
    assert observer.events[-1] == ("stopped", handed_out.id, "shutdown")


def test_a_stop_of_only_pooled_kernels_lets_the_watch_rest() -> None:
    """When only pooled kernels were left, shutdown_all still stops the death watch."""
    registry, clock, processes, _ = registry_of()
    registry.keep_warm("python3", 1)
    ready(processes)
    done = registry.shutdown_all()
    processes.answer("kill")
    assert result_of(done) is None and clock.getDelayedCalls() == [] and processes.closed


def test_specs_are_described() -> None:
    """specs lists the installed kernelspecs by name, display name and language."""
    registry, _, _, _ = registry_of()
    assert result_of(registry.specs()) == [KernelSpecInfo("python3", "Python 3", "python")]


def test_a_start_with_an_environment_launches_a_new_kernel_with_it_and_leaves_the_pool() -> None:
    """A warm kernel was started without the asked-for variables, so it is not handed out for them."""
    registry, _, processes, _ = registry_of()
    registry.keep_warm("python3", 1)
    warm = ready(processes)
    started = registry.start("python3", env={"KERNEL_USERNAME": "ada"})
    kernel = ready(processes)
    assert result_of(started) is kernel and kernel is not warm
    assert processes.envs[kernel.id] == {"KERNEL_USERNAME": "ada"} and processes.envs[warm.id] == {}
    assert registry.pooled("python3") == 1


def test_an_unknown_kernel_is_looked_up_in_the_fleet_within_a_bound() -> None:
    """find waits for nothing without a fleet or for a known kernel; else for the fleet's look-up, at most
    LOOKUP_WAIT, however long the look-up takes."""
    registry, clock, processes, _ = registry_of()
    assert registry.find("k9") is None
    asked: list[Deferred[None]] = []

    def lookup(kernel_id: str) -> Deferred[None]:
        asked.append(Deferred())
        return asked[-1]

    registry.lookup = lookup
    kernel = registry.start("python3")
    assert registry.find(result_of_ready(processes, kernel)) is None
    answered = registry.find("k9")
    assert answered is not None and not answered.called
    asked[0].callback(None)
    assert result_of(answered) is None
    slow = registry.find("k9")
    assert slow is not None
    clock.advance(LOOKUP_WAIT - 0.1)
    assert not slow.called
    clock.advance(0.1)
    assert result_of(slow) is None
    asked[1].callback(None)  # a late answer is no error
    assert result_of(slow) is None


def result_of_ready(processes: FakeProcesses, started: Deferred[Kernel]) -> str:
    """The id of the kernel ``started`` hands out once its process is ready."""
    ready(processes)
    return result_of(started).id

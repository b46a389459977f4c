"""The running kernels in process: lookups and shared stops, kernel processes faked."""

from __future__ import annotations

import pytest

from kernel_relay.kernels import UnknownKernel
from kernel_relay.kernels._running import RunningKernels
from tests.fakes import FakeKernel, FakeProcesses, RecordingObserver, failure_of, managed, result_of


def running_of(*kernel_ids: str) -> tuple[RunningKernels, RecordingObserver, list[str]]:
    observer, forgotten = RecordingObserver(), []
    running = RunningKernels(observer, forgotten=lambda: forgotten.append("forgotten"))
    for kernel_id in kernel_ids:
        running.add(managed(FakeKernel(kernel_id)))
    return running, observer, forgotten


def test_kernels_are_found_by_id() -> None:
    """Added kernels are found by id, counted and listed; an unknown or unhashable id is UnknownKernel."""
    running, _, _ = running_of("a", "b")
    assert running.get("a").id == "a" and "b" in running and len(running) == 2
    assert [kernel.id for kernel in running.kernels()] == running.ids() == ["a", "b"]
    with pytest.raises(UnknownKernel, match="'c'"):
        running.get("c")
    with pytest.raises(UnknownKernel):
        running.get(["not", "an", "id"])  # type: ignore[arg-type]


def test_stops_asked_for_together_share_one() -> None:
    """A second stop while one is under way waits for it; the kernel is closed and observers told once."""
    running, observer, forgotten = running_of("a")
    processes = FakeProcesses()
    kernel = running.get("a")
    first = running.stop("a", "shutdown", processes.stop)
    second = running.stop("a", "shutdown", processes.stop)
    assert processes.waiting("stop") == 1 and not running.active("a") and "a" in running
    processes.answer("stop")
    assert result_of(first) is None and result_of(second) is None
    assert kernel.closed and kernel.execution_state == "dead" and "a" not in running
    assert observer.events == [("stopped", "a", "shutdown")] and forgotten == ["forgotten"]


def test_a_failed_stop_fails_every_caller_and_keeps_the_kernel() -> None:
    """When the process will not stop, every caller gets the error and the kernel stays known."""
    running, observer, forgotten = running_of("a")
    processes = FakeProcesses()
    first = running.stop("a", "shutdown", processes.stop)
    second = running.stop("a", "shutdown", processes.stop)
    processes.answer("stop", RuntimeError("still alive"))
    failure_of(first, RuntimeError)
    failure_of(second, RuntimeError)
    assert "a" in running and running.active("a")
    assert observer.events == [] and forgotten == []


def test_the_watched_kernels_leave_out_those_stopping_or_skipped() -> None:
    """Kernels being stopped, and those the caller skips, are not polled for death."""
    running, _, _ = running_of("a", "b", "c")
    running.stop("b", "shutdown", FakeProcesses().stop)
    assert [kernel_id for kernel_id, _ in running.watched(skip={"c"})] == ["a"]

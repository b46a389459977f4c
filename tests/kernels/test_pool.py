"""The warm pool in process: filling, handing out, back-off and dropping, on a Clock with a fake launcher."""

from __future__ import annotations

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from kernel_relay.kernels import KernelLaunchError, UnknownKernelSpec
from kernel_relay.kernels._pool import FAILING, MAX_BACKOFF, WarmPool
from kernel_relay.kernels._processes import ManagedKernel
from tests.fakes import FakeKernel, FakeProcesses, managed


class Launches:
    """The pool's launcher: records each launch, which waits until the test lets it succeed or fail."""

    def __init__(self) -> None:
        self.waiting: list[tuple[str, Deferred[ManagedKernel]]] = []
        self.count = 0

    def __call__(self, spec_name: str) -> Deferred[ManagedKernel]:
        self.count += 1
        d: Deferred[ManagedKernel] = Deferred()
        self.waiting.append((spec_name, d))
        return d

    def succeed(self) -> FakeKernel:
        """The oldest launch waiting gives a ready kernel."""
        spec_name, d = self.waiting.pop(0)
        kernel = FakeKernel(f"{spec_name}-{self.count}-{len(self.waiting)}", spec_name=spec_name)
        d.callback(managed(kernel))
        return kernel

    def fail(self, error: Exception) -> None:
        self.waiting.pop(0)[1].errback(error)


def pool_of() -> tuple[WarmPool, Clock, Launches, FakeProcesses]:
    clock, launches, processes = Clock(), Launches(), FakeProcesses()
    return WarmPool(clock, processes, launches), clock, launches, processes  # type: ignore[arg-type]


def test_keep_warm_launches_what_is_missing_once() -> None:
    """keep_warm launches the kernels a pool lacks, counting those already starting for it."""
    pool, _, launches, _ = pool_of()
    pool.keep_warm("python3", 2)
    pool.keep_warm("python3", 2)
    assert [spec for spec, _ in launches.waiting] == ["python3", "python3"]
    launches.succeed()
    assert pool.pooled("python3") == 1 and pool.pooled() == 1 and len(launches.waiting) == 1
    pool.keep_warm("python3", 3)
    assert len(launches.waiting) == 2


def test_take_hands_out_the_oldest_and_refills() -> None:
    """take hands out the oldest ready kernel and starts its replacement; an empty pool hands out nothing."""
    pool, _, launches, _ = pool_of()
    assert pool.take("python3") is None
    pool.keep_warm("python3", 2)
    first, second = launches.succeed(), launches.succeed()
    taken = pool.take("python3")
    assert taken is not None and taken.kernel is first
    assert pool.pooled("python3") == 1 and len(launches.waiting) == 1
    assert [kernel_id for kernel_id, _ in pool.watched()] == [second.id]
    assert pool.take("other") is None


def test_failing_kernelspecs_are_retried_with_back_off() -> None:
    """Each failed refill waits twice as long as the one before, up to a ceiling; a success resets it."""
    pool, clock, launches, _ = pool_of()
    pool.keep_warm("flaky", 1)
    delays = []
    for _ in range(8):
        launches.fail(KernelLaunchError("boom"))
        assert launches.waiting == []
        (call,) = clock.getDelayedCalls()
        delays.append(call.getTime() - clock.seconds())
        clock.advance(delays[-1])
        assert len(launches.waiting) == 1
    assert delays == [2, 4, 8, 16, 32, MAX_BACKOFF, MAX_BACKOFF, MAX_BACKOFF]
    launches.succeed()
    pool.take("flaky")
    assert len(launches.waiting) == 1 and clock.getDelayedCalls() == []


def test_an_unknown_kernelspec_is_given_up() -> None:
    """A pool whose kernelspec does not exist is not retried."""
    pool, clock, launches, _ = pool_of()
    pool.keep_warm("nope", 2)
    launches.fail(UnknownKernelSpec("no kernel spec named 'nope'"))
    launches.fail(UnknownKernelSpec("no kernel spec named 'nope'"))
    clock.advance(3600)
    assert launches.waiting == [] and clock.getDelayedCalls() == [] and pool.pooled() == 0


def test_a_pooled_kernel_that_dies_is_dropped_and_replaced_later() -> None:
    """A pooled kernel reported dead is closed and killed, and its replacement starts after a back-off."""
    pool, clock, launches, processes = pool_of()
    pool.keep_warm("python3", 1)
    kernel = launches.succeed()
    assert pool.died("unknown", "died: exit code 1") is False
    assert pool.died(kernel.id, "died: exit code 1") is True
    assert kernel.closed and kernel.execution_state == "dead"
    assert [manager.kernel_id for manager in processes.made("kill")] == [kernel.id]
    assert pool.pooled() == 0 and launches.waiting == []
    clock.advance(2)
    assert len(launches.waiting) == 1


def test_closing_kills_the_pooled_kernels_and_stops_refilling() -> None:
    """close kills every pooled kernel, cancels pending refills, and no failed launch is retried after it."""
    pool, clock, launches, processes = pool_of()
    pool.keep_warm("python3", 1)
    pool.keep_warm("flaky", 1)
    pool.keep_warm("slow", 1)
    kernel = launches.succeed()
    launches.fail(KernelLaunchError("boom"))
    assert len(clock.getDelayedCalls()) == 1
    dropped = pool.close()
    assert len(dropped) == 1 and kernel.closed and pool.pooled() == 0
    assert clock.getDelayedCalls() == []
    launches.fail(KernelLaunchError("the relay is stopping"))
    clock.advance(3600)
    assert launches.waiting == [] and len(processes.made("kill")) == 1


def test_a_negative_size_is_refused() -> None:
    """A warm pool cannot hold fewer than no kernels."""
    pool, _, _, _ = pool_of()
    with pytest.raises(ValueError):
        pool.keep_warm("python3", -1)


def test_a_pool_failing_three_times_in_a_row_is_failing_until_a_success() -> None:
    """failing() names a kernelspec after FAILING failures in a row, and forgets it once a start succeeds."""
    pool, clock, launches, _ = pool_of()
    pool.keep_warm("flaky", 1)
    for _ in range(FAILING):
        assert pool.failing() == {}
        launches.fail(KernelLaunchError("boom"))
        clock.advance(MAX_BACKOFF)
    assert pool.failing() == {"flaky": FAILING}
    launches.succeed()
    assert pool.failing() == {}

"""The heartbeat monitor's verdicts, driven by a Clock and the shared fake kernels and registry."""

from __future__ import annotations

import pytest
from twisted.internet.task import Clock

from kernel_relay.kernels.heartbeat import HeartbeatMonitor
from tests.fakes import FakeKernel, FakeRegistry


class Listener:
    """Records the monitor's verdicts as (verdict, kernel id)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []

    def kernel_unreachable(self, kernel: FakeKernel, silent_for: float) -> None:
        self.events.append(("unreachable", kernel.id))

    def kernel_reachable(self, kernel: FakeKernel) -> None:
        self.events.append(("reachable", kernel.id))


def monitor_of(
    *kernels: FakeKernel,
) -> tuple[HeartbeatMonitor[FakeKernel], Clock, Listener, FakeRegistry]:
    clock, listener, registry = Clock(), Listener(), FakeRegistry(*kernels)
    monitor = HeartbeatMonitor(registry, clock, listener, interval=1.0, timeout=3.0)
    monitor.startService()
    return monitor, clock, listener, registry


def test_answering_kernels_stay_reachable() -> None:
    """A kernel that echoes every ping is pinged each interval and never reported."""
    kernel = FakeKernel("a")
    monitor, clock, listener, _ = monitor_of(kernel)
    clock.pump([1.0] * 10)
    assert kernel.heartbeat is not None and len(kernel.heartbeat.sent) == 10
    assert listener.events == [] and kernel.reachable
    monitor.stopService()


def test_silent_kernel_is_reported_once_then_recovers() -> None:
    """Silence past the timeout is reported once; the next echo reports the kernel reachable again."""
    quiet, chatty = FakeKernel("quiet"), FakeKernel("chatty")
    monitor, clock, listener, _ = monitor_of(quiet, chatty)
    assert quiet.heartbeat is not None
    quiet.heartbeat.answering = False
    clock.pump([1.0] * 3)
    assert listener.events == []
    clock.pump([1.0] * 5)
    assert listener.events == [("unreachable", "quiet")]
    assert quiet.reachable is False and chatty.reachable is True
    quiet.heartbeat.answering = True
    clock.advance(1.0)
    assert listener.events == [("unreachable", "quiet"), ("reachable", "quiet")]
    assert quiet.reachable is True
    monitor.stopService()


def test_stopped_kernels_and_the_monitor_close_their_sockets() -> None:
    """A stopped kernel's heartbeat socket is closed and no longer pinged; stopping closes the rest."""
    first, second = FakeKernel("1"), FakeKernel("2")
    monitor, clock, _, registry = monitor_of(first)
    registry.start(second)
    assert first.heartbeat is not None and second.heartbeat is not None
    registry.stop("1", "shutdown")
    assert first.heartbeat.closed
    clock.advance(1.0)
    assert first.heartbeat.sent == [] and len(second.heartbeat.sent) == 1
    monitor.stopService()
    assert second.heartbeat.closed and registry.observers == []


def test_silence_during_a_restart_is_not_reported() -> None:
    """A kernel whose process is being replaced is not reported, and its silence counts anew once it is ready."""
    kernel = FakeKernel("k")
    monitor, clock, listener, _ = monitor_of(kernel)
    assert kernel.heartbeat is not None
    kernel.heartbeat.answering = False
    monitor.kernel_restarting(kernel)
    clock.pump([1.0] * 10)
    assert listener.events == []
    monitor.kernel_ready(kernel)
    clock.pump([1.0] * 3)
    assert listener.events == []
    clock.pump([1.0] * 2)
    assert listener.events == [("unreachable", "k")]
    monitor.stopService()


def test_closed_kernels_are_not_watched() -> None:
    """A kernel already closed when it is announced gets no heartbeat socket."""
    kernel = FakeKernel("gone")
    kernel.closed = True
    monitor, _, _, _ = monitor_of(kernel)
    assert kernel.heartbeat is None
    monitor.stopService()


def test_timeout_must_exceed_interval() -> None:
    """A timeout no longer than the interval would report healthy kernels: it is refused."""
    with pytest.raises(ValueError):
        HeartbeatMonitor(FakeRegistry(), Clock(), Listener(), interval=2.0, timeout=2.0)

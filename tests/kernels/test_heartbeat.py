"""The heartbeat monitor's verdicts, driven by a Clock and in-memory heartbeat sockets."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, cast

import pytest
from twisted.internet.task import Clock

from kernel_relay.kernels import Kernel, KernelRegistry
from kernel_relay.kernels.heartbeat import HeartbeatMonitor


class EchoSocket:
    """A heartbeat socket that echoes at once while ``answering``, and remembers what it was sent."""

    def __init__(self, on_echo: Callable[[list[bytes]], None]) -> None:
        self.on_echo = on_echo
        self.answering = True
        self.sent: list[list[bytes]] = []
        self.closed = False

    def send(self, frames: Sequence[bytes]) -> None:
        if self.closed:
            raise ConnectionError("socket is closed")
        self.sent.append(list(frames))
        if self.answering:
            self.on_echo(list(frames))

    def close(self) -> None:
        self.closed = True


class FakeKernel:
    def __init__(self, kernel_id: str) -> None:
        self.id = kernel_id
        self.closed = False
        self.reachable = True
        self.socket: EchoSocket | None = None

    def open_heartbeat(self, on_echo: Callable[[list[bytes]], None]) -> EchoSocket:
        self.socket = EchoSocket(on_echo)
        return self.socket


class FakeRegistry:
    def __init__(self, *kernels: FakeKernel) -> None:
        self._kernels = list(kernels)
        self.observers: list[Any] = []

    def kernels(self) -> list[FakeKernel]:
        return list(self._kernels)

    def add_observer(self, observer: Any) -> None:
        self.observers.append(observer)

    def remove_observer(self, observer: Any) -> None:
        self.observers.remove(observer)


class Listener:
    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []

    def kernel_unreachable(self, kernel: Kernel, silent_for: float) -> None:
        self.events.append(("unreachable", kernel.id))

    def kernel_reachable(self, kernel: Kernel) -> None:
        self.events.append(("reachable", kernel.id))


def monitor_of(*kernels: FakeKernel) -> tuple[HeartbeatMonitor, Clock, Listener, FakeRegistry]:
    clock, listener, registry = Clock(), Listener(), FakeRegistry(*kernels)
    monitor = HeartbeatMonitor(
        cast(KernelRegistry, registry), clock, listener, interval=1.0, timeout=3.0
    )
    monitor.startService()
    return monitor, clock, listener, registry


def test_answering_kernels_stay_reachable() -> None:
    """A kernel that echoes every ping is pinged each interval and never reported."""
    kernel = FakeKernel("a")
    monitor, clock, listener, _ = monitor_of(kernel)
    clock.pump([1.0] * 10)
    assert kernel.socket is not None and len(kernel.socket.sent) == 10
    assert listener.events == [] and kernel.reachable
    monitor.stopService()


def test_silent_kernel_is_reported_once_then_recovers() -> None:
    """Silence past the timeout is reported once; the next echo reports the kernel reachable again."""
    quiet, chatty = FakeKernel("quiet"), FakeKernel("chatty")
    monitor, clock, listener, _ = monitor_of(quiet, chatty)
    assert quiet.socket is not None
    quiet.socket.answering = False
    clock.pump([1.0] * 3)
    assert listener.events == []
    clock.pump([1.0] * 5)
    assert listener.events == [("unreachable", "quiet")]
    assert quiet.reachable is False and chatty.reachable is True
    quiet.socket.answering = True
    clock.advance(1.0)
    assert listener.events == [("unreachable", "quiet"), ("reachable", "quiet")]
    assert quiet.reachable is True
    monitor.stopService()


def test_stopped_kernels_and_the_monitor_close_their_sockets() -> None:
    """A stopped kernel's heartbeat socket is closed and no longer pinged; stopping closes the rest."""
    first, second = FakeKernel("1"), FakeKernel("2")
    monitor, clock, _, registry = monitor_of(first)
    monitor.kernel_started(cast(Kernel, second))
    assert first.socket is not None and second.socket is not None
    monitor.kernel_stopped(cast(Kernel, first), "shutdown")
    assert first.socket.closed
    clock.advance(1.0)
    assert first.socket.sent == [] and len(second.socket.sent) == 1
    monitor.stopService()
    assert second.socket.closed and registry.observers == []


def test_timeout_must_exceed_interval() -> None:
    """A timeout no longer than the interval would report healthy kernels: it is refused."""
    with pytest.raises(ValueError):
        HeartbeatMonitor(
            cast(KernelRegistry, FakeRegistry()), Clock(), Listener(), interval=2.0, timeout=2.0
        )

"""The idle-kernel culler's rules, driven by a Clock and the shared fake kernels and registry."""

from __future__ import annotations

import pytest
from twisted.internet.task import Clock

from kernel_relay.kernels.culling import KernelCuller
from tests.fakes import FakeKernel, FakeRegistry


def test_culler_rejects_nonsense() -> None:
    """A culler with a non-positive timeout or interval cannot be made."""
    with pytest.raises(ValueError):
        KernelCuller(None, None, len, idle_timeout=0)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        KernelCuller(Clock(), FakeRegistry(), len, idle_timeout=60, interval=0)


def test_culler_rules_on_a_clock() -> None:
    """Only idle kernels past the timeout are culled; busy ones never; connected ones only if asked."""
    clock = Clock()
    registry = FakeRegistry(
        FakeKernel("idle-old", "idle", 0.0),
        FakeKernel("idle-new", "idle", 50.0),
        FakeKernel("busy-old", "busy", 0.0),
        FakeKernel("watched-old", "idle", 0.0),
    )
    clients = {"watched-old": 1}
    culler = KernelCuller(
        clock,
        registry,
        lambda kernel_id: clients.get(kernel_id, 0),
        idle_timeout=60,
        interval=10,
    )
    culler.startService()
    clock.advance(60)
    assert registry.shut_down == ["idle-old"]
    clock.advance(60)
    assert registry.shut_down == ["idle-old", "idle-new"]
    culler.cull_connected = True
    clock.advance(10)
    assert registry.shut_down == ["idle-old", "idle-new", "watched-old"]
    culler.stopService()
    assert [kernel.id for kernel in registry.kernels()] == ["busy-old"]


def test_a_kernel_being_culled_is_not_culled_twice() -> None:
    """A kernel whose shutdown is still under way is left alone by the next looks, and culled again after."""
    clock = Clock()
    registry = FakeRegistry(FakeKernel("slow", "idle", 0.0))
    registry.holding = True
    culler = KernelCuller(clock, registry, lambda _: 0, idle_timeout=60, interval=10)
    culler.startService()
    clock.pump([10.0] * 9)
    assert registry.shut_down == ["slow"]
    registry.held[0].errback(RuntimeError("could not stop"))
    clock.advance(10)
    assert registry.shut_down == ["slow", "slow"]
    culler.stopService()

"""
The start policy in process (:class:`Spawner`): the allowed kernelspecs, ``--max-kernels`` over kernels running
and starting, and a fleet's share in each start (reserve, register, give back), with fake kernels and fleet.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
from twisted.internet.defer import Deferred, fail, succeed

from kernel_relay.kernels.spawning import (
    KernelspecNotAllowed,
    Spawner,
    SpawnUnavailable,
    TooManyKernels,
)
from tests.fakes import FakeKernel, failure_of, result_of


class StartingRegistry:
    """Kernels as the spawner sees them: those running (``len``), and starts that wait for the test."""

    def __init__(self, running: int = 0) -> None:
        self.running = running
        self.starts: list[tuple[str, Mapping[str, str] | None, Deferred[FakeKernel]]] = []
        self.shut_down: list[str] = []

    def __len__(self) -> int:
        return self.running

    def start(self, spec_name: str, env: Mapping[str, str] | None = None) -> Deferred[FakeKernel]:
        d: Deferred[FakeKernel] = Deferred()
        self.starts.append((spec_name, env, d))
        return d

    def started(self, index: int = -1) -> FakeKernel:
        """The start ``index`` succeeds: a kernel runs."""
        spec_name, _, d = self.starts[index]
        kernel = FakeKernel(f"k{len(self.starts)}", spec_name=spec_name)
        self.running += 1
        d.callback(kernel)
        return kernel

    def shutdown(self, kernel_id: str) -> Deferred[None]:
        self.shut_down.append(kernel_id)
        self.running -= 1
        return succeed(None)


class Histogram:
    def __init__(self) -> None:
        self.observed: list[float] = []

    def observe(self, value: float) -> None:
        self.observed.append(value)


class Metrics:
    """The two metrics the spawner keeps: its errors by kind, and how long each start took."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.spawn_seconds = Histogram()

    def error(self, kind: str) -> None:
        self.errors.append(kind)


class Fleet:
    """A fleet's capacity: ``reserve`` answers ``room`` (an exception: fails), ``register`` answers ``known``."""

    def __init__(self, room: bool | Exception = True, known: Exception | None = None) -> None:
        self.room, self.known = room, known
        self.reserved: list[str] = []
        self.unreserved: list[str] = []
        self.registered: list[tuple[str, str]] = []

    def reserve(self, reservation: str, max_kernels: int | None) -> Deferred[bool]:
        self.reserved.append(reservation)
        return fail(self.room) if isinstance(self.room, Exception) else succeed(self.room)

    def unreserve(self, reservation: str) -> None:
        self.unreserved.append(reservation)

    def register(
        self, kernel: Any, reservation: str, env: Mapping[str, str] | None = None
    ) -> Deferred[None]:
        self.registered.append((kernel.id, reservation))
        return fail(self.known) if self.known is not None else succeed(None)


def spawner(
    registry: StartingRegistry, fleet: Fleet | None = None, **options: Any
) -> tuple[Spawner, Metrics]:
    metrics = Metrics()
    clock = iter(float(tick) for tick in range(100))
    made = Spawner(
        registry,  # type: ignore[arg-type]
        metrics,  # type: ignore[arg-type]
        clock=lambda: next(clock),
        fleet=fleet,
        **options,
    )
    return made, metrics


def test_a_kernelspec_not_allowed_is_refused_and_not_started() -> None:
    """With --allow-kernelspec, any other kernelspec is refused by name, counted, and nothing starts."""
    registry = StartingRegistry()
    spawn, metrics = spawner(registry, allowed=frozenset({"python3"}))
    failure = failure_of(spawn.spawn("bash"), KernelspecNotAllowed)
    assert "'bash' is not allowed" in str(failure.value)
    assert registry.starts == [] and metrics.errors == ["spawn"]
    spawn.spawn("python3")
    assert [spec for spec, _, _ in registry.starts] == ["python3"]


def test_max_kernels_counts_the_kernels_still_starting() -> None:
    """--max-kernels bounds kernels running plus starting; a failed start gives its place back."""
    registry = StartingRegistry(running=1)
    spawn, metrics = spawner(registry, max_kernels=2)
    starting = spawn.spawn("python3", {"A": "1"})
    refused = failure_of(spawn.spawn("python3"), TooManyKernels)
    assert "maximum of 2 kernels" in str(refused.value)
    assert len(registry.starts) == 1 and registry.starts[0][1] == {"A": "1"}
    registry.starts[0][2].errback(RuntimeError("no such kernelspec"))
    failure_of(starting, RuntimeError)
    assert metrics.errors == ["spawn", "spawn"]
    spawn.spawn("python3")
    assert len(registry.starts) == 2


def test_a_start_is_timed() -> None:
    """A kernel that starts is handed back, and the time its start took is observed."""
    registry = StartingRegistry()
    spawn, metrics = spawner(registry)
    d = spawn.spawn("python3")
    kernel = registry.started()
    assert result_of(d) is kernel
    assert metrics.spawn_seconds.observed == [1.0] and metrics.errors == []


def test_a_full_fleet_refuses_without_starting() -> None:
    """A fleet that has no room left refuses the start: nothing is launched."""
    registry = StartingRegistry()
    spawn, _ = spawner(registry, Fleet(room=False), max_kernels=3)
    failure = failure_of(spawn.spawn("python3"), TooManyKernels)
    assert "fleet already runs its maximum of 3" in str(failure.value)
    assert registry.starts == []


def test_an_unreachable_fleet_makes_the_start_unavailable() -> None:
    """A fleet that cannot be asked for room makes the start fail as unavailable, with the cause named."""
    registry = StartingRegistry()
    spawn, _ = spawner(registry, Fleet(room=ConnectionError("redis is down")))
    failure = failure_of(spawn.spawn("python3"), SpawnUnavailable)
    assert "redis is down" in str(failure.value)
    assert registry.starts == []


def test_a_kernel_the_fleet_cannot_register_is_stopped() -> None:
    """A kernel started but not made known to the fleet is shut down, and its reservation given back."""
    registry = StartingRegistry()
    fleet = Fleet(known=ConnectionError("lost Redis"))
    spawn, _ = spawner(registry, fleet)
    d = spawn.spawn("python3")
    kernel = registry.started()
    failure = failure_of(d, SpawnUnavailable)
    assert "could not be made known to the fleet: lost Redis" in str(failure.value)
    assert registry.shut_down == [kernel.id]
    assert fleet.unreserved == fleet.reserved


@pytest.mark.parametrize("registered", [True, False])
def test_a_fleet_start_registers_or_gives_its_place_back(registered: bool) -> None:
    """A fleet start registers the kernel under its reservation; a start that fails gives the place back."""
    registry = StartingRegistry()
    fleet = Fleet()
    spawn, _ = spawner(registry, fleet)
    d = spawn.spawn("python3")
    if registered:
        kernel = registry.started()
        assert result_of(d) is kernel
        assert fleet.registered == [(kernel.id, fleet.reserved[0])] and fleet.unreserved == []
    else:
        registry.starts[0][2].errback(RuntimeError("launch failed"))
        failure_of(d, RuntimeError)
        assert fleet.registered == [] and fleet.unreserved == fleet.reserved

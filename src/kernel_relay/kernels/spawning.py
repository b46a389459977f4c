"""
The start policy: whether a kernel may start, and starting it. Every way in (the seed's ``/spawn``,
Jupyter's ``POST /api/kernels`` and ``/api/sessions``) shares one ``--allow-kernelspec`` list, one
``--max-kernels`` bound (kernels running and starting, over the whole fleet when there is one), one metric
and one log line. It knows no HTTP: the routes turn its errors into answers.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Mapping
from typing import Protocol

from twisted.internet.defer import Deferred, fail
from twisted.logger import Logger
from twisted.python.failure import Failure

from ..metrics import RelayMetrics
from ._kernel import Kernel
from ._registry import KernelRegistry

log = Logger()


class TooManyKernels(Exception):
    """The relay (or its fleet) runs or starts its maximum of kernels already."""


class KernelspecNotAllowed(Exception):
    """The kernelspec is not in the relay's ``--allow-kernelspec`` list."""


class SpawnUnavailable(Exception):
    """A kernel cannot be started now: the fleet it belongs to cannot be reached."""


class FleetCapacity(Protocol):
    """A fleet's share in each start: ``--max-kernels`` over every relay, and the new kernel made known."""

    def reserve(self, reservation: str, max_kernels: int | None) -> Deferred[bool]:
        """Hold a place for a kernel; False when the fleet is full, an error when it cannot be asked."""

    def unreserve(self, reservation: str) -> None: ...

    def register(
        self, kernel: Kernel, reservation: str, env: Mapping[str, str] | None = None
    ) -> Deferred[None]:
        """
        Make the started kernel known to the fleet (with the ``env`` it was started with, for a restart by
        whichever relay manages it later); an error when that cannot be done.
        """


def error_text(failure: Failure) -> str:
    return str(failure.value) or type(failure.value).__name__


class Spawner:
    """Starts kernels within ``max_kernels`` (None: unbounded), timing and counting each start."""

    def __init__(
        self,
        kernels: KernelRegistry,
        metrics: RelayMetrics,
        max_kernels: int | None = None,
        clock: Callable[[], float] = time.monotonic,
        fleet: FleetCapacity | None = None,
        allowed: frozenset[str] | None = None,
    ) -> None:
        self._kernels = kernels
        self.allowed = allowed
        """The kernelspecs that may be started (``--allow-kernelspec``); None: every installed one."""
        self.fleet = fleet
        self._metrics = metrics
        self.max_kernels = max_kernels
        self._clock = clock
        self._starting = 0

    def allows(self, spec_name: str) -> bool:
        """Whether kernels of this kernelspec may be started here."""
        return self.allowed is None or spec_name in self.allowed

    def spawn(self, spec_name: str, env: Mapping[str, str] | None = None) -> Deferred[Kernel]:
        """A new kernel of ``spec_name``; fails with TooManyKernels, or the registry's error (logged)."""
        if not self.allows(spec_name):
            self._metrics.error("spawn")
            shown = spec_name if len(spec_name) <= 80 else f"{spec_name[:77]}..."
            log.warn("Refused to spawn a {spec_name!r} kernel: not allowed", spec_name=shown)
            return fail(
                KernelspecNotAllowed(f"the kernelspec {shown!r} is not allowed on this relay")
            )
        limit = self.max_kernels
        if limit is not None and len(self._kernels) + self._starting >= limit:
            self._metrics.error("spawn")
            log.warn("Refused to spawn a kernel: {limit} kernels run already", limit=limit)
            return fail(TooManyKernels(f"the relay already runs its maximum of {limit} kernels"))
        began = self._clock()
        self._starting += 1

        def started(kernel: Kernel) -> Kernel:
            self._metrics.spawn_seconds.observe(self._clock() - began)
            return kernel

        def failed(failure: Failure) -> Failure:
            self._metrics.error("spawn")
            # The error names the kernelspec (cut short if long): the raw name is the client's input.
            log.warn("Could not spawn a kernel: {error}", error=error_text(failure))
            return failure

        def settled(result: object) -> object:
            self._starting -= 1
            return result

        if self.fleet is None:
            d = self._kernels.start(spec_name, env)
        else:
            d = self._fleet_start(self.fleet, spec_name, env)
        d.addCallbacks(started, failed)
        d.addBoth(settled)
        return d

    def _fleet_start(
        self, fleet: FleetCapacity, spec_name: str, env: Mapping[str, str] | None
    ) -> Deferred[Kernel]:
        """Reserve a place in the fleet, start the kernel, register it; a kernel it cannot register stops."""
        reservation = uuid.uuid4().hex
        limit = self.max_kernels

        def reserved(ok: bool) -> Deferred[Kernel]:
            if not ok:
                raise TooManyKernels(f"the fleet already runs its maximum of {limit} kernels")

            def not_started(failure: Failure) -> Failure:
                fleet.unreserve(reservation)
                return failure

            d = self._kernels.start(spec_name, env)
            d.addErrback(not_started)
            return d.addCallback(register)

        def register(kernel: Kernel) -> Deferred[Kernel]:
            def unregistered(failure: Failure) -> Deferred[Kernel]:
                fleet.unreserve(reservation)
                stopped = self._kernels.shutdown(kernel.id)
                stopped.addErrback(
                    lambda f: log.failure("stopping an unregistered kernel", failure=f)
                )

                def fail_spawn(_: object) -> Kernel:
                    raise SpawnUnavailable(
                        f"the kernel started but could not be made known to the fleet: "
                        f"{error_text(failure)}; it was stopped"
                    )

                return stopped.addBoth(fail_spawn)

            return fleet.register(kernel, reservation, env).addCallbacks(
                lambda _: kernel, unregistered
            )

        def unavailable(failure: Failure) -> Failure:
            if failure.check(TooManyKernels, SpawnUnavailable):  # type: ignore[no-untyped-call]
                return failure
            return Failure(SpawnUnavailable(f"cannot start a kernel: {error_text(failure)}"))  # type: ignore[no-untyped-call]

        d = fleet.reserve(reservation, limit)
        d.addErrback(unavailable)
        return d.addCallback(reserved)

"""
Idle-kernel culling: shut down kernels nobody has used for a while.

A kernel is idle when its ``execution_state`` is ``"idle"`` (busy and starting kernels are never
culled) and nothing has come from it or gone to it for ``idle_timeout`` seconds (its
``last_activity``). Kernels with socket.io clients connected are spared unless ``cull_connected`` is
set, so an open notebook page keeps its kernel. Every ``interval`` seconds the culler looks once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from twisted.application.service import Service
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from ..metrics import RelayMetrics

log = Logger()


class CullableKernel(Protocol):
    """What the culler needs of a kernel: whether it is idle, and since when."""

    @property
    def id(self) -> str: ...

    @property
    def execution_state(self) -> str: ...

    @property
    def last_activity(self) -> float:
        """When something last came from it or went to it (the clock's seconds)."""


class CullableKernels(Protocol):
    """What the culler needs of the registry: the running kernels, and a way to shut one down."""

    def owned(self) -> Sequence[CullableKernel]:
        """The kernels this relay manages (in a fleet, each relay culls its own)."""

    def shutdown(self, kernel_id: str) -> Deferred[None]: ...


class KernelCuller(Service):
    """Shuts down idle kernels of a registry; a Twisted service so it starts and stops with the relay."""

    def __init__(
        self,
        clock: IReactorTime,
        kernels: CullableKernels,
        clients_of: Callable[[str], int],
        *,
        idle_timeout: float,
        cull_connected: bool = False,
        interval: float = 60.0,
        metrics: RelayMetrics | None = None,
    ) -> None:
        if idle_timeout <= 0 or interval <= 0:
            raise ValueError("idle_timeout and interval must be positive")
        self._clock = clock
        self._kernels = kernels
        self._clients_of = clients_of
        self.idle_timeout = idle_timeout
        self.cull_connected = cull_connected
        self.interval = interval
        self._metrics = metrics
        self._culling: set[str] = set()
        self._loop = LoopingCall(self.cull)
        self._loop.clock = clock

    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]
        log.info(
            "Culling kernels idle for {timeout}s (checked every {interval}s; connected ones {which})",
            timeout=self.idle_timeout,
            interval=self.interval,
            which="too" if self.cull_connected else "spared",
        )
        self._loop.start(self.interval, now=False)

    def stopService(self) -> None:
        super().stopService()  # type: ignore[no-untyped-call]
        if self._loop.running:
            self._loop.stop()

    def is_cullable(self, kernel: CullableKernel) -> bool:
        """Should this kernel be shut down now?"""
        if kernel.id in self._culling or kernel.execution_state != "idle":
            return False
        if self._clock.seconds() - kernel.last_activity < self.idle_timeout:
            return False
        return self.cull_connected or self._clients_of(kernel.id) == 0

    def cull(self) -> Deferred[None]:
        """Shut down every cullable kernel; fires once they are all stopped."""
        stopping: list[Deferred[None]] = []
        for kernel in self._kernels.owned():  # a fleet's other relays cull their own
            if not self.is_cullable(kernel):
                continue
            idle_for = self._clock.seconds() - kernel.last_activity
            clients = self._clients_of(kernel.id)
            log.info(
                "Culling kernel {kernel_id}: idle for {idle_for:.0f}s with {clients} client(s)",
                kernel_id=kernel.id,
                idle_for=idle_for,
                clients=clients,
            )
            self._culling.add(kernel.id)
            if self._metrics is not None:
                self._metrics.culled.inc()
            d = self._kernels.shutdown(kernel.id)
            d.addErrback(self._failed, kernel.id)
            d.addBoth(self._done, kernel.id)
            stopping.append(d)
        return gatherResults(stopping).addCallback(lambda _: None)

    def _failed(self, failure: Failure, kernel_id: str) -> None:
        log.failure("Could not cull kernel {kernel_id}", failure, kernel_id=kernel_id)

    def _done(self, _: object, kernel_id: str) -> None:
        self._culling.discard(kernel_id)

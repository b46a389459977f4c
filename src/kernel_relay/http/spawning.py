"""
Starting kernels for the REST routes: the seed's ``/spawn`` and Jupyter's ``POST /api/kernels`` share one
``--max-kernels`` bound (kernels running and starting), one metric and one log line.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

from twisted.internet.defer import Deferred, fail
from twisted.logger import Logger
from twisted.python.failure import Failure

from ..kernels import Kernel, KernelRegistry
from ..metrics import RelayMetrics

log = Logger()


class TooManyKernels(Exception):
    """The relay runs (or starts) its maximum of kernels already."""


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
    ) -> None:
        self._kernels = kernels
        self._metrics = metrics
        self.max_kernels = max_kernels
        self._clock = clock
        self._starting = 0

    def spawn(self, spec_name: str, env: Mapping[str, str] | None = None) -> Deferred[Kernel]:
        """A new kernel of ``spec_name``; fails with TooManyKernels, or the registry's error (logged)."""
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

        d = self._kernels.start(spec_name, env).addCallbacks(started, failed)
        d.addBoth(settled)
        return d

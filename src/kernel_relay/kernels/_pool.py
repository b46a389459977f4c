# -*- test-case-name: tests.kernels.test_pool -*-
"""
Warm pools: ready kernels nobody has asked for yet, per kernelspec, so that a start is served at once.

The pool refills behind every kernel it hands out or loses. A kernelspec whose kernels keep failing (to
start, or by dying while they wait) is retried less and less often, 2, 4, 8 ... up to 60 seconds apart,
never in a hot loop; one that does not exist is given up.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from ._errors import UnknownKernelSpec
from ._processes import KernelProcesses, ManagedKernel, Watched, kill_quietly

_log = Logger()

#: Failures in a row after which a pool counts as failing (``/api/health`` says "degraded").
FAILING = 3

#: The longest wait, in seconds, between two attempts to refill a failing pool.
MAX_BACKOFF = 60.0


class WarmPool:
    """
    The warm pools of a registry. ``launch`` starts one kernel for the pool (the registry's launcher, so
    that the death watch covers it); the pool counts those it has under way itself.
    """

    def __init__(
        self,
        clock: IReactorTime,
        processes: KernelProcesses,
        launch: Callable[[str], Deferred[ManagedKernel]],
    ) -> None:
        self._clock = clock
        self._processes = processes
        self._launch = launch
        self._targets: dict[str, int] = {}
        self._ready: dict[str, list[ManagedKernel]] = {}
        self._starting: dict[str, int] = {}
        self._failures: dict[str, int] = {}
        self._refills: dict[str, IDelayedCall] = {}

    def keep_warm(self, spec_name: str, count: int) -> None:
        """Keep ``count`` started, ready kernels of ``spec_name`` for ``take`` to hand out."""
        if count < 0:
            raise ValueError("a warm pool size cannot be negative")
        self._targets[spec_name] = count
        self._refill(spec_name)

    def failing(self) -> dict[str, int]:
        """The kernelspecs whose pool has failed to start a kernel ``FAILING`` times in a row, and how often."""
        return {name: count for name, count in self._failures.items() if count >= FAILING}

    def pooled(self, spec_name: str | None = None) -> int:
        """Ready kernels waiting in the pools (of one kernelspec, or all)."""
        if spec_name is not None:
            return len(self._ready.get(spec_name, []))
        return sum(len(entries) for entries in self._ready.values())

    def take(self, spec_name: str) -> ManagedKernel | None:
        """The oldest ready kernel of this kernelspec, now the caller's, or None; the pool refills."""
        entries = self._ready.get(spec_name)
        if not entries:
            return None
        entry = entries.pop(0)
        _log.info(
            "kernel {kernel_id} ({spec_name}) handed out from the warm pool",
            kernel_id=entry.kernel.id,
            spec_name=spec_name,
        )
        self._refill(spec_name)
        return entry

    def watched(self) -> list[Watched]:
        """The pooled kernels, for the death watch."""
        return [
            (entry.kernel.id, entry.manager)
            for entries in self._ready.values()
            for entry in entries
        ]

    def died(self, kernel_id: str, reason: str) -> bool:
        """A process exited; if it was a pooled kernel's, drop and replace it (counted as a failure). Was it?"""
        for spec_name, entries in self._ready.items():
            for entry in entries:
                if entry.kernel.id == kernel_id:
                    self._drop(spec_name, entry, reason)
                    self._failures[spec_name] = self._failures.get(spec_name, 0) + 1
                    self._refill(spec_name)
                    return True
        return False

    def close(self) -> list[Deferred[None]]:
        """
        Empty the pools for good (the relay stops): no more refills, even of launches that fail from now
        on, and every pooled kernel killed; each Deferred fires once one is.
        """
        self._targets.clear()
        for call in self._refills.values():
            if call.active():
                call.cancel()
        self._refills.clear()
        return [
            self._drop(spec_name, entry, "the relay is stopping")
            for spec_name, entries in list(self._ready.items())
            for entry in list(entries)
        ]

    def _missing(self, spec_name: str) -> int:
        """Kernels the pool of ``spec_name`` lacks, counting those already starting for it."""
        return (
            self._targets.get(spec_name, 0)
            - self.pooled(spec_name)
            - self._starting.get(spec_name, 0)
        )

    def _refill(self, spec_name: str) -> None:
        if self._missing(spec_name) <= 0 or spec_name in self._refills:
            return
        failures = self._failures.get(spec_name, 0)
        if failures:
            delay = min(MAX_BACKOFF, 2.0**failures)
            self._refills[spec_name] = self._clock.callLater(delay, self._refill_now, spec_name)
            return
        self._refill_now(spec_name)

    def _refill_now(self, spec_name: str) -> None:
        self._refills.pop(spec_name, None)
        for _ in range(max(0, self._missing(spec_name))):
            self._starting[spec_name] = self._starting.get(spec_name, 0) + 1
            d = self._launch(spec_name)
            d.addBoth(self._started, spec_name)
            d.addCallbacks(
                self._filled,
                self._failed,
                callbackArgs=(spec_name,),
                errbackArgs=(spec_name,),
            )

    def _started(self, result: ManagedKernel | Failure, spec_name: str) -> ManagedKernel | Failure:
        """A launch for the pool is over, either way: it no longer counts as starting."""
        self._starting[spec_name] -= 1
        if not self._starting[spec_name]:
            del self._starting[spec_name]
        return result

    def _filled(self, entry: ManagedKernel, spec_name: str) -> None:
        self._ready.setdefault(spec_name, []).append(entry)
        self._failures.pop(spec_name, None)

    def _failed(self, failure: Failure, spec_name: str) -> None:
        if isinstance(failure.value, UnknownKernelSpec):
            _log.error(
                "no warm pool for {spec_name}: {error}",
                spec_name=spec_name,
                error=failure.getErrorMessage(),
            )
            self._targets.pop(spec_name, None)
            return
        self._failures[spec_name] = self._failures.get(spec_name, 0) + 1
        _log.warn(
            "could not start a {spec_name} kernel for the warm pool: {error}",
            spec_name=spec_name,
            error=failure.getErrorMessage(),
        )
        self._refill(spec_name)

    def _drop(self, spec_name: str, entry: ManagedKernel, reason: str) -> Deferred[None]:
        """Forget a pooled kernel (it died, or the relay stops) and stop its process."""
        self._ready[spec_name].remove(entry)
        _log.info(
            "pooled kernel {kernel_id} ({spec_name}) dropped: {reason}",
            kernel_id=entry.kernel.id,
            spec_name=spec_name,
            reason=reason,
        )
        entry.kernel.execution_state = "dead"
        entry.kernel.close()
        return kill_quietly(self._processes, entry.manager)


__all__ = ["MAX_BACKOFF", "WarmPool"]

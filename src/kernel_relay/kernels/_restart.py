# -*- test-case-name: tests.kernels.test_restart -*-
"""
Restarting kernels in place: same id, ports and key, so the sockets of their clients carry on.

Restarts asked for together share one. A restart that has not brought the kernel back (its process
replaced, then ``kernel_info`` answered) within ``timeout`` seconds is given up: the kernel is killed and
its observers are told it died.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import CancelledError, Deferred, fail, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from ._errors import KernelLaunchError
from ._kernel import Kernel
from ._observers import KernelObserver
from ._processes import KernelProcesses
from ._running import RunningKernels, unknown
from ._waiters import OperationWaiters

_log = Logger()


class Restarts:
    """The restarts under way, one per kernel, each shared by every caller who asked for it."""

    def __init__(
        self,
        clock: IReactorTime,
        processes: KernelProcesses,
        running: RunningKernels,
        observer: KernelObserver,
        *,
        timeout: float,
    ) -> None:
        self._clock = clock
        self._processes = processes
        self._running = running
        self._observer = observer
        self.timeout = timeout
        self._waiters: OperationWaiters[Kernel] = OperationWaiters()

    def __contains__(self, kernel_id: object) -> bool:
        """Is this kernel restarting?"""
        return kernel_id in self._waiters

    def restart(self, kernel_id: str) -> Deferred[Kernel]:
        """
        Restart a running kernel; fires with it once it answers ``kernel_info`` again. Fails with
        UnknownKernel (not running, or being stopped) or KernelLaunchError (the restart failed).
        """
        if not self._running.active(kernel_id):
            return fail(unknown(kernel_id))
        waiter, first = self._waiters.join(kernel_id)
        if not first:
            return waiter
        kernel, manager = self._running.entry(kernel_id)
        _log.info("restarting kernel {kernel_id}", kernel_id=kernel_id)
        kernel.execution_state = "restarting"
        self._observer.kernel_restarting(kernel)
        ready: Deferred[Any] = self._processes.restart(manager)
        deadline = self._clock.callLater(self.timeout, ready.cancel)

        def started(pid: int | None) -> Deferred[None]:
            kernel.pid = pid
            kernel.execution_state = "starting"
            self._observer.kernel_restarted(kernel)
            return kernel.wait_ready()

        def finished(_: object) -> None:
            if deadline.active():
                deadline.cancel()
            if kernel.execution_state in ("starting", "busy"):
                # It answered the readiness probe; "busy" is the probe's own, its idle may come later.
                kernel.execution_state = "idle"
            _log.info("kernel {kernel_id} restarted", kernel_id=kernel_id)
            self._observer.kernel_ready(kernel)
            self._waiters.succeed(kernel_id, kernel)

        def failed(failure: Failure) -> None:
            if deadline.active():
                deadline.cancel()
            reason = (
                f"timed out after {self.timeout:g}s"
                if isinstance(failure.value, CancelledError)
                else str(failure.value)
            )
            _log.warn(
                "kernel {kernel_id} restart failed: {reason}", kernel_id=kernel_id, reason=reason
            )
            kernel.execution_state = "dead"
            stopping = self._running.stop(
                kernel_id, f"died: restart failed ({reason})", self._processes.kill
            )
            stopping.addErrback(lambda f: None)
            self._waiters.fail(
                kernel_id, KernelLaunchError(f"kernel {kernel_id} did not restart: {reason}")
            )

        ready.addCallback(started).addCallbacks(finished, failed)
        return waiter

    def settled(self, kernel_id: str) -> Deferred[None]:
        """Fires, whatever the outcome, once the restart under way on this kernel is over."""
        if kernel_id not in self._waiters:
            return succeed(None)
        waiter, _ = self._waiters.join(kernel_id)
        return waiter.addBoth(lambda _: None)


__all__ = ["Restarts"]

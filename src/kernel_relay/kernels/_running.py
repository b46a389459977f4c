# -*- test-case-name: tests.kernels.test_running -*-
"""
The kernels handed out to clients (launched for one, or taken from the warm pool), by id, and stopping them:
every stop asked for while one is under way shares it, and observers hear of each kernel's end once.
"""

from __future__ import annotations

from collections.abc import Callable, Container

from jupyter_client.manager import KernelManager
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from ._errors import UnknownKernel
from ._kernel import Kernel
from ._observers import KernelObserver
from ._processes import ManagedKernel, Watched
from ._waiters import OperationWaiters

_log = Logger()


def unknown(kernel_id: object) -> UnknownKernel:
    """The error for an id that names no running kernel (never started, stopped, or died)."""
    return UnknownKernel(f"no running kernel with id {kernel_id!r}")


class RunningKernels:
    """
    The running kernels and their managers. ``forgotten`` is called each time a stopped kernel is dropped,
    so that the death watch can rest once nothing is left.
    """

    def __init__(self, observer: KernelObserver, *, forgotten: Callable[[], None]) -> None:
        self._observer = observer
        self._forgotten = forgotten
        self._kernels: dict[str, ManagedKernel] = {}
        self._stopping: OperationWaiters[None] = OperationWaiters()

    def __len__(self) -> int:
        return len(self._kernels)

    def __contains__(self, kernel_id: object) -> bool:
        return kernel_id in self._kernels

    def add(self, entry: ManagedKernel) -> None:
        self._kernels[entry.kernel.id] = entry

    def get(self, kernel_id: str) -> Kernel:
        """The running kernel with this id; UnknownKernel otherwise."""
        try:
            return self._kernels[kernel_id].kernel
        except (KeyError, TypeError):  # TypeError: an unhashable "id" from a caller
            raise unknown(kernel_id) from None

    def entry(self, kernel_id: str) -> ManagedKernel:
        """The kernel and its manager; KeyError for an unknown id."""
        return self._kernels[kernel_id]

    def kernels(self) -> list[Kernel]:
        return [entry.kernel for entry in self._kernels.values()]

    def ids(self) -> list[str]:
        return list(self._kernels)

    def active(self, kernel_id: str) -> bool:
        """Known and not being stopped: a kernel that may still be interrupted or restarted."""
        return kernel_id in self._kernels and kernel_id not in self._stopping

    def watched(self, skip: Container[str]) -> list[Watched]:
        """What the death watch asks about: every kernel not being stopped and not in ``skip``."""
        return [
            (kernel_id, entry.manager)
            for kernel_id, entry in self._kernels.items()
            if kernel_id not in self._stopping and kernel_id not in skip
        ]

    def release(self, kernel_id: str) -> ManagedKernel:
        """Forget a kernel without stopping it (another relay of a fleet manages it now); KeyError if unknown."""
        entry = self._kernels.pop(kernel_id)
        self._forgotten()
        return entry

    def stop(
        self,
        kernel_id: str,
        reason: str,
        action: Callable[[KernelManager], Deferred[None]],
    ) -> Deferred[None]:
        """
        End a running kernel's process with ``action`` (a polite stop, or a kill) and forget the kernel;
        a stop asked for while one is under way waits for that one. Observers are told ``reason``.
        """
        kernel, manager = self._kernels[kernel_id]
        waiter, first = self._stopping.join(kernel_id)
        if not first:
            return waiter
        _log.info("stopping kernel {kernel_id}: {reason}", kernel_id=kernel_id, reason=reason)

        def stopped(_: object) -> None:
            kernel.execution_state = "dead"
            kernel.close()
            self._kernels.pop(kernel_id, None)
            self._forgotten()
            self._observer.kernel_stopped(kernel, reason)
            self._stopping.succeed(kernel_id, None)

        def failed(failure: Failure) -> None:
            _log.failure("kernel {kernel_id} did not stop", failure=failure, kernel_id=kernel_id)
            self._stopping.fail(kernel_id, failure)

        action(manager).addCallbacks(stopped, failed)
        return waiter


__all__ = ["RunningKernels", "unknown"]

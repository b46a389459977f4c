# -*- test-case-name: tests.kernels.test_registry -*-
"""
Guest kernels: kernels of a fleet that another relay manages. This relay connects to their channels (so its
clients can use them) but never touches their processes: interrupting, restarting and stopping one is asked of
its owner through :class:`KernelOwners`, and its end is told by the fleet (``drop``).
"""

from __future__ import annotations

from typing import Protocol

from twisted.internet.defer import Deferred

from ._kernel import Kernel
from ._observers import KernelObserver


class KernelOwners(Protocol):
    """Asks the relay that manages a guest kernel to act on it; each fails with an error that says why not."""

    def interrupt(self, kernel_id: str) -> Deferred[None]: ...

    def restart(self, kernel_id: str) -> Deferred[None]: ...

    def shutdown(self, kernel_id: str) -> Deferred[None]: ...


class Guests:
    """The guest kernels by id; observers hear of each as it comes and goes, as of any kernel."""

    def __init__(self, observer: KernelObserver) -> None:
        self._observer = observer
        self._kernels: dict[str, Kernel] = {}

    def __len__(self) -> int:
        return len(self._kernels)

    def __contains__(self, kernel_id: object) -> bool:
        return kernel_id in self._kernels

    def get(self, kernel_id: str) -> Kernel | None:
        try:
            return self._kernels.get(kernel_id)
        except TypeError:
            return None

    def kernels(self) -> list[Kernel]:
        return list(self._kernels.values())

    def add(self, kernel: Kernel) -> None:
        self._kernels[kernel.id] = kernel
        self._observer.kernel_started(kernel)

    def drop(self, kernel_id: str, reason: str) -> None:
        """The kernel is gone (or no longer served here): its sockets close, its clients are told ``reason``."""
        kernel = self._kernels.pop(kernel_id, None)
        if kernel is None:
            return
        kernel.execution_state = (
            "dead" if reason.startswith(("died", "shutdown")) else kernel.execution_state
        )
        kernel.close()
        self._observer.kernel_stopped(kernel, reason)

    def put(self, kernel: Kernel) -> None:
        """A kernel this relay managed becomes a guest (another relay took it over): nobody is told."""
        self._kernels[kernel.id] = kernel

    def take(self, kernel_id: str) -> Kernel | None:
        """Remove a guest without a word to anyone: this relay now manages it (adoption)."""
        return self._kernels.pop(kernel_id, None)


__all__ = ["Guests", "KernelOwners"]

# -*- test-case-name: tests.kernels.test_observers -*-
"""
Who hears of kernels coming and going: the ``KernelObserver`` interface, and ``Observers``, the one list every
part of the registry tells, so that an observer that fails costs the others (and the registry) nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from twisted.logger import Logger

from ._kernel import Kernel

_log = Logger()


class KernelObserver(Protocol):
    """Told about kernels coming and going (the relay disconnects clients of stopped kernels)."""

    def kernel_started(self, kernel: Kernel) -> None: ...

    def kernel_stopped(self, kernel: Kernel, reason: str) -> None:
        """``reason`` is ``"shutdown"`` or starts with ``"died"`` (``"died: exit code 1"``)."""

    def kernel_restarting(self, kernel: Kernel) -> None:
        """A restart began: the kernel keeps its id and its clients, its process is about to go."""

    def kernel_restarted(self, kernel: Kernel) -> None:
        """The new process runs (``execution_state`` is ``"starting"``); it is not ready yet."""

    def kernel_ready(self, kernel: Kernel) -> None:
        """The restarted kernel answered ``kernel_info``."""


class Observers:
    """A registry's observers, told in the order they came; itself a ``KernelObserver``."""

    def __init__(self) -> None:
        self._observers: list[KernelObserver] = []

    def add(self, observer: KernelObserver) -> None:
        self._observers.append(observer)

    def remove(self, observer: KernelObserver) -> None:
        """Stop telling ``observer``; one never added is ignored."""
        if observer in self._observers:
            self._observers.remove(observer)

    def kernel_started(self, kernel: Kernel) -> None:
        self._tell(lambda observer: observer.kernel_started(kernel))

    def kernel_stopped(self, kernel: Kernel, reason: str) -> None:
        self._tell(lambda observer: observer.kernel_stopped(kernel, reason))

    def kernel_restarting(self, kernel: Kernel) -> None:
        self._tell(lambda observer: observer.kernel_restarting(kernel))

    def kernel_restarted(self, kernel: Kernel) -> None:
        self._tell(lambda observer: observer.kernel_restarted(kernel))

    def kernel_ready(self, kernel: Kernel) -> None:
        self._tell(lambda observer: observer.kernel_ready(kernel))

    def _tell(self, call: Callable[[KernelObserver], None]) -> None:
        # A copy: an observer may remove itself (or another) while it is told.
        for observer in list(self._observers):
            try:
                call(observer)
            except Exception:
                _log.failure("kernel observer {observer!r} failed", observer=observer)


__all__ = ["KernelObserver", "Observers"]

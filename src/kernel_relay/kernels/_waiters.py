# -*- test-case-name: tests.kernels.test_waiters -*-
"""
One operation per kernel at a time, whose outcome every caller who asks while it runs shares: a second
``shutdown`` of a stopping kernel, or a second ``restart`` of a restarting one, waits for the first one's.
"""

from __future__ import annotations

from typing import Generic, TypeVar

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

_T = TypeVar("_T")


class OperationWaiters(Generic[_T]):
    """The callers waiting for the operation under way on each kernel."""

    def __init__(self) -> None:
        self._waiting: dict[str, list[Deferred[_T]]] = {}

    def __contains__(self, kernel_id: object) -> bool:
        """Is an operation under way on this kernel?"""
        return kernel_id in self._waiting

    def join(self, kernel_id: str) -> tuple[Deferred[_T], bool]:
        """A Deferred for the outcome, and whether this caller is the first (and so begins the operation)."""
        waiter: Deferred[_T] = Deferred()
        waiters = self._waiting.setdefault(kernel_id, [])
        waiters.append(waiter)
        return waiter, len(waiters) == 1

    def succeed(self, kernel_id: str, result: _T) -> None:
        """The operation is over and went well: every caller gets ``result``."""
        for waiter in self._waiting.pop(kernel_id, []):
            waiter.callback(result)

    def fail(self, kernel_id: str, error: Failure | BaseException) -> None:
        """The operation is over and failed: every caller gets ``error``."""
        for waiter in self._waiting.pop(kernel_id, []):
            waiter.errback(error)


__all__ = ["OperationWaiters"]

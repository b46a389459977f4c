# -*- test-case-name: tests.http.test_execute_routes -*-
"""
Cancelling a request (``DELETE /api/kernels/<id>/requests/<msg_id>``, nbmodel's interrupt), whichever front
sent it. Jupyter's protocol has no way to take one request out of a kernel's queue: the only way to stop a
request is to interrupt the kernel while it runs that request (as ``POST /api/kernels/<id>/interrupt`` does,
by signal or ``interrupt_request`` as its kernelspec says). So:

- a running request (or one waiting for ``input()``) is interrupted now;
- a queued one is interrupted as soon as the kernel starts it (its ``execute_input``: the kernel publishes
  ``busy`` before it can take an interrupt, so not then), never the cell that runs before it;
- one that ended is left alone: the kernel may be running another client's cell.

An interrupted cell ends with the kernel's ``KeyboardInterrupt`` error; with ``stop_on_error`` (the REST
front's requests have it) the kernel then aborts the requests queued behind it, as after any error. An
interrupt that reaches the kernel after it published ``execute_input`` but before it runs the code makes it
drop the request with no reply and no error: a cancelled request that ends so reads ``aborted``.
"""

from __future__ import annotations

from typing import Protocol

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from ..relay.client import short_id
from ..relay.ledger import INPUT, Execution, RequestLedger

log = Logger()


class Interrupts(Protocol):
    """What cancelling needs of the kernels: their interrupt (:meth:`KernelRegistry.interrupt`)."""

    def interrupt(self, kernel_id: str) -> Deferred[None]: ...


def has_started(request: Execution) -> bool:
    """Whether the kernel runs the request's code now (it may take an interrupt), not only queued or ``busy``."""
    return request.live and (request.execution_count is not None or request.state == INPUT)


class RequestCancels:
    """Interrupts the kernel for the requests asked to stop, now or when each starts."""

    def __init__(self, ledger: RequestLedger, kernels: Interrupts) -> None:
        self._ledger = ledger
        self._kernels = kernels
        self._waiting: set[tuple[str, str]] = set()
        """Queued requests to interrupt when they start."""

    def cancel(self, request: Execution) -> Deferred[None] | None:
        """
        Stop ``request``: the kernel's interrupt if it runs it now (it fails as the interrupt does), else None
        (it ended, or it is interrupted once it starts).
        """
        if request.live:
            request.cancelled = True
        if has_started(request):
            return self._kernels.interrupt(request.kernel_id)
        key = (request.kernel_id, request.msg_id)
        if request.live and key not in self._waiting:
            self._waiting.add(key)
            self._watch(key)
        return None

    def _watch(self, key: tuple[str, str]) -> None:
        self._ledger.changed(*key).addCallback(lambda _: self._changed(key))

    def _changed(self, key: tuple[str, str]) -> None:
        request = self._ledger.get(*key)
        if request is None or not request.live:
            self._waiting.discard(key)
        elif has_started(request):
            self._waiting.discard(key)
            self._kernels.interrupt(request.kernel_id).addErrback(
                lambda failure: log.warn(
                    "Could not interrupt kernel {kernel} for cancelled request {msg_id}: {error}",
                    kernel=short_id(request.kernel_id),
                    msg_id=request.msg_id,
                    error=failure.getErrorMessage(),
                )
            )
        else:
            self._watch(key)

"""
The execute API's answers for requests that another relay of the fleet accepted (read by
:meth:`.execute.ExecuteFront.elsewhere`): one request as that relay would give it, 404 when the fleet keeps
no record of it, 503 when the fleet's Redis cannot be read now (a client that goes cancels the read and its
wait); a kernel's lists with them beside this relay's own (when Redis cannot be read: this relay's, and
``fleet_error`` says why the others are missing).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import CancelledError, Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest

from ..http.api import json_body
from ..http.jupyter_api import jupyter_error
from ..relay.ledger import Execution

log = Logger()


def answer_from_fleet(
    request: IRequest,
    reading: Deferred[Execution | None],
    answer: Callable[[IRequest, Execution], bytes | Deferred[bytes]],
    missing: Callable[[], bytes],
) -> Deferred[bytes]:
    """The HTTP answer once ``reading`` has the request (``missing``: the 404 when it has none)."""

    def found(execution: Execution | None) -> bytes | Deferred[bytes]:
        if execution is None:
            return missing()
        return answer(request, execution)

    def failed(failure: Failure) -> bytes | Deferred[bytes]:
        if failure.check(CancelledError):  # type: ignore[no-untyped-call]
            return Deferred()  # the client went: no answer, as a long-poll's
        log.warn("Reading a request from the fleet failed: {error}", error=str(failure.value))
        return jupyter_error(request, 503, f"The fleet cannot be read now: {failure.value}")

    request.notifyFinish().addErrback(lambda _: reading.cancel())  # type: ignore[attr-defined]
    return reading.addCallbacks(found, failed)  # type: ignore[arg-type]


def list_with_fleet(
    request: IRequest,
    kernel_id: str,
    here: list[Execution],
    elsewhere: Deferred[list[Execution]] | None,
    model: Callable[[Execution], dict[str, Any]],
    live_only: bool,
) -> bytes | Deferred[bytes]:
    """A kernel's requests, ``here`` and (in a fleet) ``elsewhere``, oldest first: only live ones if asked."""

    def listed(found: list[Execution], error: str | None = None) -> bytes:
        ordered = sorted([*here, *found], key=lambda r: r.submitted)
        body: dict[str, Any] = {
            "kernel_id": kernel_id,
            "requests": [model(r) for r in ordered if r.live or not live_only],
        }
        if error is not None:
            body["fleet_error"] = error
        return json_body(request, 200, body)

    def failed(failure: Failure) -> bytes | Deferred[bytes]:
        if failure.check(CancelledError):  # type: ignore[no-untyped-call]
            return Deferred()
        log.warn("Listing requests from the fleet failed: {error}", error=str(failure.value))
        return listed([], f"The fleet cannot be read now: {failure.value}")

    if elsewhere is None:
        return listed([])
    request.notifyFinish().addErrback(lambda _: elsewhere.cancel())  # type: ignore[attr-defined]
    return elsewhere.addCallbacks(listed, failed)  # type: ignore[arg-type]


def once_recorded(recorded: Deferred[None] | None, body: bytes) -> bytes | Deferred[bytes]:
    """``body`` once the fleet has what this relay wrote of the kernel's requests (at once without one)."""
    return body if recorded is None else recorded.addCallback(lambda _: body)

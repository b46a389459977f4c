"""
The execute API's answer for a request that another relay of the fleet accepted (read by
:meth:`.execute.ExecuteFront.elsewhere`): as that relay would give it, 404 when the fleet keeps no record of
it, 503 when the fleet's Redis cannot be read now. A client that goes cancels the read (and its wait).
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.defer import CancelledError, Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest

from ..http.jupyter_api import jupyter_error
from ..relay.ledger import Execution

log = Logger()


def answer_from_fleet(
    request: IRequest,
    reading: Deferred[Execution | None],
    answer: Callable[[IRequest, Execution], bytes],
    missing: Callable[[], bytes],
) -> Deferred[bytes]:
    """The HTTP answer once ``reading`` has the request (``missing``: the 404 when it has none)."""

    def found(execution: Execution | None) -> bytes:
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

"""
The execute API, jupyter-server-nbmodel's contract over the relay's kernels (Klein):

- ``POST /api/kernels/<id>/execute`` ``{"code", "metadata"?}``: 202, ``Location`` of the request;
- ``GET /api/kernels/<id>/requests/<msg_id>``: 202 while queued or running (the outputs so far), 300 while it
  waits for ``input()`` (the prompt, and ``Location`` of ``POST /api/kernels/<id>/input`` ``{"input"}``),
  200 with the result (nbformat outputs as a JSON string, ``execution_count``, ``status``), 500 when it ended
  without one (its kernel died or restarted). ``?wait=N`` holds the answer until the request needs the
  client (finished, waiting for input) or N seconds (at most :data:`MAX_WAIT`) passed;
- ``GET /api/kernels/<id>/requests``: the kernel's recent requests; ``GET /api/kernels/<id>/execute``: its live
  ones (nbmodel's list);
- ``DELETE /api/kernels/<id>/requests/<msg_id>``: 204 once the request is stopped (interrupted now if it runs,
  when it starts if it is queued: :mod:`.execute_cancel`), 404 for a request not kept, 500 when the interrupt
  failed. In a fleet, another relay's request (read from the fleet) that runs is interrupted here too; one
  still queued there is 409 (only its relay sees it start).

Every ``execute_request`` is a request here, whichever front sent it: its ``msg_id`` is its id. Unlike nbmodel,
a result is not forgotten once read: the ledger keeps it for its time. ``outputs_dropped`` says how many
outputs are no longer kept. Read-only kernel tokens may read requests, not send code or input, nor cancel (the
guards).
"""

from __future__ import annotations

import json
from typing import Any, Final
from urllib.parse import quote

from klein import Klein
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource

from ..http.api import json_body
from ..http.jupyter_api import jupyter_error
from ..jsontext import JSONError, loads
from ..kernels import UnknownKernel
from ..kernels.spawning import error_text
from ..relay.client import Refused
from ..relay.ledger import COMPLETE, INPUT, QUEUED, RUNNING, Execution
from .execute import ExecuteFront
from .execute_cancel import Interrupts, RequestCancels, has_started
from .execute_fleet import answer_from_fleet, list_with_fleet, once_recorded

#: The longest ``?wait=`` honoured, in seconds (a longer one waits this long).
MAX_WAIT: Final = 60.0
_WAITING: Final = frozenset({QUEUED, RUNNING})


class ExecuteAPI:
    """The execute routes over an :class:`ExecuteFront` and its core's ledger."""

    app = Klein()

    def __init__(
        self, front: ExecuteFront, kernels: Interrupts, clock: IReactorTime, base_url: str = "/"
    ) -> None:
        self._front = front
        self._ledger = front.core.ledger
        self._kernels = kernels
        self._cancels = RequestCancels(self._ledger, kernels)
        self._clock = clock
        self.base_url = base_url

    def resource(self) -> IResource:
        return self.app.resource()  # type: ignore[no-any-return]

    # -- sending -------------------------------------------------------------------------------------------

    @app.route("/api/kernels/<kernel_id>/execute", methods=["POST"])
    def execute(self, request: IRequest, kernel_id: str) -> bytes | Deferred[bytes]:
        body = _json_object(request)
        if isinstance(body, str):
            return jupyter_error(request, 400, body)
        code, metadata = body.get("code"), body.get("metadata", {})
        if not isinstance(code, str) or not isinstance(metadata, dict):
            message = 'The body must be {"code": "<code>", "metadata": {...}} (metadata optional)'
            return jupyter_error(request, 400, message)
        try:
            msg_id = self._front.submit(kernel_id, code, metadata)
        except UnknownKernel:
            return jupyter_error(request, 404, f"Kernel does not exist: {kernel_id}")
        except Refused as refused:
            return jupyter_error(request, refused.code or 409, refused.message)
        location = self._url(kernel_id, f"requests/{quote(msg_id)}")
        request.setHeader(b"Location", location.encode("ascii"))
        request.setHeader(b"Access-Control-Expose-Headers", b"Location")
        found = self._ledger.get(kernel_id, msg_id)
        answer = self._model(found) if found is not None else {"request_id": msg_id}
        accepted = json_body(request, 202, {**answer, "request_status": QUEUED, "pending": True})
        return once_recorded(self._front.recorded(kernel_id), accepted)

    @app.route("/api/kernels/<kernel_id>/input", methods=["POST"])
    def answer_input(self, request: IRequest, kernel_id: str) -> bytes | Deferred[bytes]:
        body = _json_object(request)
        value = body.get("input") if isinstance(body, dict) else None
        if not isinstance(value, str):
            return jupyter_error(request, 400, 'The body must be {"input": "<text>"}')
        try:
            self._front.answer_input(kernel_id, value)
        except UnknownKernel:
            return jupyter_error(request, 404, f"Kernel does not exist: {kernel_id}")
        except Refused as refused:
            return jupyter_error(request, refused.code or 409, refused.message)
        request.setResponseCode(201)
        return once_recorded(self._front.recorded(kernel_id), b"")

    @app.route("/api/kernels/<kernel_id>/requests/<msg_id>", methods=["DELETE"])
    def cancel(self, request: IRequest, kernel_id: str, msg_id: str) -> bytes | Deferred[bytes]:
        found = self._ledger.get(kernel_id, msg_id)
        if found is not None:
            return _stopped(request, kernel_id, self._cancels.cancel(found))
        reading = self._front.elsewhere(kernel_id, msg_id, 0)
        if reading is None:
            return _not_kept(request, kernel_id, msg_id)
        return answer_from_fleet(
            request, reading, self._cancel_elsewhere, lambda: _not_kept(request, kernel_id, msg_id)
        )

    def _cancel_elsewhere(self, request: IRequest, found: Execution) -> bytes | Deferred[bytes]:
        """
        A request another relay accepted: interrupted if the kernel runs it now (through the fleet, as
        ``POST .../interrupt``); one still queued only its relay can stop when it starts (409).
        """
        if has_started(found):
            return _stopped(request, found.kernel_id, self._kernels.interrupt(found.kernel_id))
        if found.live:
            return jupyter_error(
                request,
                409,
                f"Execution request {found.msg_id} is queued on the relay of the fleet that accepted "
                "it: cancel it there, or here once it runs",
            )
        return _stopped(request, found.kernel_id, None)

    # -- reading -------------------------------------------------------------------------------------------

    @app.route("/api/kernels/<kernel_id>/requests", methods=["GET"])
    def recent(self, request: IRequest, kernel_id: str) -> bytes | Deferred[bytes]:
        return self._listed(request, kernel_id, live_only=False)

    @app.route("/api/kernels/<kernel_id>/execute", methods=["GET"])
    def live(self, request: IRequest, kernel_id: str) -> bytes | Deferred[bytes]:
        return self._listed(request, kernel_id, live_only=True)

    def _listed(
        self, request: IRequest, kernel_id: str, live_only: bool
    ) -> bytes | Deferred[bytes]:
        """The kernel's requests kept here, and in a fleet those other relays accepted, oldest first."""
        here = self._ledger.recent(kernel_id)
        elsewhere = self._front.recent_elsewhere(kernel_id)
        return list_with_fleet(request, kernel_id, here, elsewhere, self._model, live_only)

    @app.route("/api/kernels/<kernel_id>/requests/<msg_id>", methods=["GET"])
    def one(self, request: IRequest, kernel_id: str, msg_id: str) -> bytes | Deferred[bytes]:
        wait = _wait_of(request)
        if wait is None:
            return jupyter_error(
                request, 400, f"wait must be a number of seconds (at most {MAX_WAIT:g})"
            )
        checking = self._front.checked(kernel_id, msg_id)
        if checking is not None:
            # Redis away: answer as the ledger knows it.
            checking.addErrback(lambda _: None)
            return checking.addCallback(lambda _: self._one(request, kernel_id, msg_id, wait))
        return self._one(request, kernel_id, msg_id, wait)

    def _one(
        self, request: IRequest, kernel_id: str, msg_id: str, wait: float
    ) -> bytes | Deferred[bytes]:
        found = self._ledger.get(kernel_id, msg_id)
        if found is None:
            reading = self._front.elsewhere(kernel_id, msg_id, wait)
            if reading is None:
                return _not_kept(request, kernel_id, msg_id)
            return answer_from_fleet(
                request, reading, self._answer, lambda: _not_kept(request, kernel_id, msg_id)
            )
        if wait <= 0 or found.state not in _WAITING:
            return self._answer(request, found)
        return self._long_poll(request, kernel_id, msg_id, wait)

    def _long_poll(
        self, request: IRequest, kernel_id: str, msg_id: str, wait: float
    ) -> Deferred[bytes]:
        """The answer once the request needs its client, or ``wait`` passed; no answer if the client went."""
        done: Deferred[bytes] = Deferred()
        pending: list[Deferred[None]] = []

        def settle() -> None:
            if timer.active():
                timer.cancel()
            found = self._ledger.get(kernel_id, msg_id)
            if found is None:
                done.callback(
                    jupyter_error(request, 404, f"Execution request {msg_id} is no longer kept")
                )
            else:
                done.callback(self._answer(request, found))

        def changed(_: object) -> None:
            found = self._ledger.get(kernel_id, msg_id)
            if found is not None and found.state in _WAITING:
                listen()
            else:
                settle()

        def listen() -> None:
            waiter = self._ledger.changed(kernel_id, msg_id)
            pending[:] = [waiter]
            waiter.addCallbacks(changed, lambda failure: failure.trap(CancelledError))

        def stop(_: object) -> None:
            for waiter in pending:
                waiter.cancel()

        def timed_out() -> None:
            stop(None)
            settle()

        timer = self._clock.callLater(wait, timed_out)

        def gone(failure: Failure) -> None:
            if timer.active():
                timer.cancel()
            stop(None)

        request.notifyFinish().addErrback(gone)  # type: ignore[attr-defined]
        listen()
        return done

    # -- answers -------------------------------------------------------------------------------------------

    def _url(self, kernel_id: str, tail: str) -> str:
        return f"{self.base_url}api/kernels/{quote(kernel_id)}/{tail}"

    def _model(self, found: Execution) -> dict[str, Any]:
        """The request as nbmodel answers it, and what the relay adds (``outputs_dropped``, ``msg_id``)."""
        metadata = found.metadata
        model: dict[str, Any] = {
            "request_id": found.msg_id,
            "kernel_id": found.kernel_id,
            "request_url": self._url(found.kernel_id, f"requests/{quote(found.msg_id)}"),
            "cell_id": metadata.get("cell_id"),
            "document_path": metadata.get("document_path"),
            "pending": found.live,
            "request_status": found.state if found.live else COMPLETE,
            "status": found.status,
            "execution_count": found.execution_count,
            "outputs": json.dumps(found.outputs.items),
            "outputs_dropped": found.outputs.dropped,
        }
        if found.state == INPUT and found.input_request is not None:
            model["input_request"] = dict(found.input_request)
        if found.ended is not None:
            model["error"] = found.ended
        return model

    def _answer(self, request: IRequest, found: Execution) -> bytes:
        model = self._model(found)
        if found.ended is not None:
            return json_body(request, 500, model)
        if found.state == INPUT:
            location = self._url(found.kernel_id, "input")
            request.setHeader(b"Location", location.encode("ascii"))
            request.setHeader(b"Access-Control-Expose-Headers", b"Location")
            return json_body(request, 300, model)
        return json_body(request, 202 if found.live else 200, model)


def _stopped(
    request: IRequest, kernel_id: str, interrupting: Deferred[None] | None
) -> bytes | Deferred[bytes]:
    """204 once the request is stopped (``interrupting``: the kernel's interrupt, if one is needed now)."""

    def stopped(_: object = None) -> bytes:
        request.setResponseCode(204)
        return b""

    def failed(failure: Failure) -> bytes:
        if failure.check(UnknownKernel):  # type: ignore[no-untyped-call]
            return jupyter_error(request, 404, f"Kernel does not exist: {kernel_id}")
        return jupyter_error(request, 500, f"Could not interrupt: {error_text(failure)}")

    if interrupting is None:
        return stopped()
    return interrupting.addCallbacks(stopped, failed)


def _not_kept(request: IRequest, kernel_id: str, msg_id: str) -> bytes:
    return jupyter_error(
        request, 404, f"Execution request {msg_id} of kernel {kernel_id} is not kept"
    )


def _json_object(request: IRequest) -> dict[str, Any] | str:
    """The request's body as a JSON object, or why it is not one."""
    content = request.content.read() if request.content is not None else b""
    try:
        body = loads(content) if content.strip() else None
    except JSONError as error:
        return f"Invalid JSON in the request body: {error}"
    return body if isinstance(body, dict) else "The body must be a JSON object"


def _wait_of(request: IRequest) -> float | None:
    """``?wait=N`` in seconds, bounded by MAX_WAIT (0 without it), or None when it is not a number."""
    args: dict[bytes, list[bytes]] = request.args or {}  # type: ignore[attr-defined]
    values = args.get(b"wait")
    if not values:
        return 0.0
    try:
        wait = float(values[-1])
    except ValueError:
        return None
    if wait != wait or wait < 0:
        return None
    return min(wait, MAX_WAIT)

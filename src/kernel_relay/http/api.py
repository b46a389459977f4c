"""
The REST API (Klein): the seed's contract, discovery, kernel control, tokens, health and metrics.

The seed's contract is kept exactly: ``GET /spawn/<kernelSpecName>`` answers ``{"id": ...}``,
``GET /shutdown/<id>`` answers ``{"id": ...}``, and any failure of either is HTTP 500 with ``{"error": ...}``.
Discovery routes live under ``/api/``. The guards of :mod:`.guards` stand in front of every route (origins,
and with a token set, the token on every route but ``/api/health``; see :mod:`kernel_relay.auth`).

``GET /api/health`` answers ``{"status": "ok", ...}`` while the relay serves; ``GET /metrics`` is the
Prometheus text exposition of :class:`~kernel_relay.metrics.RelayMetrics`. ``max_kernels`` bounds the
kernels running and starting: a spawn over it is the contract's 500 ``{"error": ...}``.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from klein import Klein
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource
from werkzeug.exceptions import HTTPException, MethodNotAllowed

from .. import __version__
from ..auth import ACCESS_LEVELS, FULL, TokenAuth
from ..kernels import Kernel, KernelRegistry, KernelSpecInfo, UnknownKernel
from ..metrics import RelayMetrics

log = Logger()

JSONBody = dict[str, Any]


def json_body(request: IRequest, code: int, body: object) -> bytes:
    """Set the status and JSON content type on ``request`` and return ``body`` encoded."""
    request.setResponseCode(code)
    request.setHeader(b"Content-Type", b"application/json; charset=utf-8")
    request.setHeader(b"Cache-Control", b"no-store")
    return json.dumps(body, separators=(",", ":")).encode("utf-8")


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat().replace("+00:00", "Z")


def _error_text(failure: Failure) -> str:
    return str(failure.value) or type(failure.value).__name__


class RelayAPI:
    """
    The REST routes. ``clients_of(kernel_id)`` tells how many socket.io clients a kernel has; it comes from
    the relay so this module needs no knowledge of channels.
    """

    app = Klein()

    def __init__(
        self,
        kernels: KernelRegistry,
        clients_of: Callable[[str], int],
        *,
        metrics: RelayMetrics | None = None,
        max_kernels: int | None = None,
        clock: Callable[[], float] = time.monotonic,
        auth: TokenAuth | None = None,
    ) -> None:
        self._kernels = kernels
        self._auth = auth or TokenAuth()
        self._clients_of = clients_of
        self.metrics = metrics or RelayMetrics()
        self._max_kernels = max_kernels
        self._clock = clock
        self._starting = 0
        self._started_at = clock()

    def resource(self) -> IResource:
        return self.app.resource()  # type: ignore[no-any-return]

    @app.route("/spawn/<path:spec_name>", methods=["GET"])
    def spawn(self, request: IRequest, spec_name: str) -> Deferred[bytes] | bytes:
        _refuse_head(request)
        if (
            self._max_kernels is not None
            and len(self._kernels) + self._starting >= self._max_kernels
        ):
            self.metrics.error("spawn")
            log.warn(
                "Refused to spawn a kernel: {limit} kernels run already", limit=self._max_kernels
            )
            request.setHeader(b"Retry-After", b"10")
            return json_body(
                request,
                500,
                {"error": f"the relay already runs its maximum of {self._max_kernels} kernels"},
            )
        began = self._clock()
        self._starting += 1

        def started(kernel: Kernel) -> bytes:
            self.metrics.spawn_seconds.observe(self._clock() - began)
            return json_body(request, 200, {"id": kernel.id})

        def failed(failure: Failure) -> bytes:
            self.metrics.error("spawn")
            # The error names the kernelspec (cut short if long): the raw name is the client's input.
            log.warn("Could not spawn a kernel: {error}", error=_error_text(failure))
            return json_body(request, 500, {"error": _error_text(failure)})

        def settled(result: bytes) -> bytes:
            self._starting -= 1
            return result

        return self._kernels.start(spec_name).addCallbacks(started, failed).addBoth(settled)

    @app.route("/api/health", methods=["GET"])
    def health(self, request: IRequest) -> bytes:
        return json_body(
            request,
            200,
            {
                "status": "ok",
                "version": __version__,
                "uptime_seconds": round(self._clock() - self._started_at, 3),
                "kernels": len(self._kernels),
                "pooled_kernels": self._kernels.pooled(),
            },
        )

    @app.route("/metrics", methods=["GET"])
    def prometheus(self, request: IRequest) -> bytes:
        body, content_type = self.metrics.render()
        request.setResponseCode(200)
        request.setHeader(b"Content-Type", content_type.encode("latin-1"))
        request.setHeader(b"Cache-Control", b"no-store")
        return body

    @app.route("/shutdown/<path:kernel_id>", methods=["GET"])
    def shutdown(self, request: IRequest, kernel_id: str) -> Deferred[bytes]:
        _refuse_head(request)

        def stopped(_: object) -> bytes:
            # "kernelId" repeats the id for enchannel-socketio-backend 0.1.0, whose shutdown() checks it.
            return json_body(request, 200, {"id": kernel_id, "kernelId": kernel_id})

        def failed(failure: Failure) -> bytes:
            log.warn(
                "Could not shut down kernel {kernel_id}: {error}",
                kernel_id=kernel_id,
                error=_error_text(failure),
            )
            return json_body(request, 500, {"error": _error_text(failure)})

        return self._kernels.shutdown(kernel_id).addCallbacks(stopped, failed)

    @app.route("/api/kernels/<kernel_id>/interrupt", methods=["POST"])
    def interrupt(self, request: IRequest, kernel_id: str) -> Deferred[bytes]:
        """Interrupt the running cell: SIGINT or an ``interrupt_request``, as the kernelspec says."""
        return self._kernels.interrupt(kernel_id).addCallbacks(
            lambda _: json_body(request, 200, {"id": kernel_id}),
            self._kernel_failure,
            errbackArgs=(request, kernel_id, "interrupt"),
        )

    @app.route("/api/kernels/<kernel_id>/restart", methods=["POST"])
    def restart(self, request: IRequest, kernel_id: str) -> Deferred[bytes]:
        """Restart in place and answer once the kernel is ready again; clients stay connected."""

        def restarted(kernel: Kernel) -> bytes:
            return json_body(
                request, 200, {"id": kernel.id, "execution_state": kernel.execution_state}
            )

        return self._kernels.restart(kernel_id).addCallbacks(
            restarted, self._kernel_failure, errbackArgs=(request, kernel_id, "restart")
        )

    def _kernel_failure(
        self, failure: Failure, request: IRequest, kernel_id: str, action: str
    ) -> bytes:
        """404 for an unknown kernel, 500 with the reason for anything else."""
        code = 404 if failure.check(UnknownKernel) else 500  # type: ignore[no-untyped-call]
        log.warn(
            "Could not {action} kernel {kernel_id}: {error}",
            action=action,
            kernel_id=kernel_id,
            error=_error_text(failure),
        )
        return json_body(request, code, {"error": _error_text(failure)})

    @app.route("/api/kernels/<kernel_id>/tokens", methods=["POST"])
    def issue_token(self, request: IRequest, kernel_id: str) -> bytes:
        """A new token limited to this kernel: ``{"access": "full"}`` (default) or ``"read-only"``."""
        if not self._auth.enabled:
            return json_body(
                request,
                400,
                {
                    "error": "kernel tokens need the relay to have a token (--token): without one "
                    "every client has full access already"
                },
            )
        if kernel_id not in self._kernels:
            return json_body(request, 404, {"error": f"no running kernel with id {kernel_id!r}"})
        content = request.content.read() if request.content is not None else b""
        try:
            body = json.loads(content) if content.strip() else {}
        except ValueError:
            body = None
        access = body.get("access", FULL) if isinstance(body, dict) else None
        if access not in ACCESS_LEVELS:
            return json_body(
                request,
                400,
                {
                    "error": 'the body must be a JSON object like {"access": "full"} or '
                    '{"access": "read-only"}'
                },
            )
        token = self._auth.scoped.issue(kernel_id, access)
        log.info(
            "Issued a {access} token for kernel {kernel_id}", access=access, kernel_id=kernel_id
        )
        return json_body(request, 201, {"token": token, "kernel_id": kernel_id, "access": access})

    @app.route("/api/kernelspecs", methods=["GET"])
    def kernelspecs(self, request: IRequest) -> Deferred[bytes]:
        def listed(specs: list[KernelSpecInfo]) -> bytes:
            entries = [
                {"name": spec.name, "display_name": spec.display_name, "language": spec.language}
                for spec in sorted(specs, key=lambda spec: spec.name)
            ]
            return json_body(request, 200, {"kernelspecs": entries})

        def failed(failure: Failure) -> bytes:
            log.failure("Could not list kernelspecs", failure)
            return json_body(request, 500, {"error": _error_text(failure)})

        return self._kernels.specs().addCallbacks(listed, failed)

    @app.route("/api/kernels", methods=["GET"])
    def kernels(self, request: IRequest) -> bytes:
        entries = [
            {
                "id": kernel.id,
                "name": kernel.spec_name,
                "execution_state": kernel.execution_state,
                "connections": self._clients_of(kernel.id),
                "last_activity": _iso(kernel.last_activity),
                "reachable": kernel.reachable,
            }
            for kernel in self._kernels.kernels()
        ]
        return json_body(request, 200, entries)

    @app.handle_errors(HTTPException)
    def http_error(self, request: IRequest, failure: Failure) -> bytes:
        error = failure.value
        assert isinstance(error, HTTPException)
        code = error.code or 500
        path = request.path.decode("utf-8", "replace")
        if code == 405:
            allowed = {*(getattr(error, "valid_methods", None) or ["GET"]), "OPTIONS"}
            if _ACTING_GET.match(path):
                allowed.discard("HEAD")
            request.setHeader(b"Allow", ", ".join(sorted(allowed)).encode("ascii"))
        message = {404: "No such route", 405: "Method not allowed"}.get(code, error.name)
        method = request.method.decode("ascii", "replace")
        return json_body(request, code, {"error": f"{message}: {method} {path}"})


#: The GET routes that act (the contract makes starting and stopping a kernel a GET). werkzeug answers HEAD on
#: every GET route, but HEAD is meant to be safe: a link checker or a health probe must not start or stop a
#: kernel, so these refuse it.
_ACTING_GET = re.compile(r"^/(?:spawn|shutdown)/")


def _refuse_head(request: IRequest) -> None:
    if request.method == b"HEAD":
        raise MethodNotAllowed(valid_methods=["GET"])

"""
The relay's own REST routes (Klein): the seed's contract, kernel tokens, health and metrics.

The seed's contract is kept exactly: ``GET /spawn/<kernelSpecName>`` answers ``{"id": ...}``,
``GET /shutdown/<id>`` answers ``{"id": ...}``, and any failure of either is HTTP 500 with ``{"error": ...}``,
but for a kernelspec outside ``--allow-kernelspec``: 403 with the same body, as on the Jupyter API.
Jupyter Server's kernel API (kernelspecs, kernels, interrupt, restart) is :mod:`.jupyter_api`'s. The guards of :mod:`.guards` stand in front of every route (origins,
and with a token set, the token on every route but ``/api/health``; see :mod:`kernel_relay.auth`).

``GET /api/health`` is liveness: 200 while the relay serves, ``{"status": "ok"}``, ``"degraded"`` while a
warm pool keeps failing to start kernels, ``"starting"`` (and ``"ready": false``) while a fleet relay has not
joined its fleet; ``GET /api/health/ready`` is readiness: 200 ``{"ready": true}``, or 503 ``{"ready": false}``
while the relay cannot take new work (not joined yet, or its fleet's Redis unreachable). To a holder of the
relay's token (or with authentication off) both say why (``reasons``), and the first its version, uptime,
kernels and fleet too; ``GET /metrics`` is the
Prometheus text exposition of :class:`~kernel_relay.metrics.RelayMetrics`. ``max_kernels`` bounds the
kernels running and starting: a spawn over it is the contract's 500 ``{"error": ...}``.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from typing import Any

from klein import Klein
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource
from werkzeug.exceptions import HTTPException, MethodNotAllowed

from .. import __version__
from ..auth import ACCESS_LEVELS, FULL, TOKEN_QUERY, TokenAuth, token_from_authorization
from ..jsontext import JSONError, loads
from ..kernels import Kernel, KernelRegistry
from ..kernels.spawning import KernelspecNotAllowed, Spawner, TooManyKernels, error_text
from ..metrics import RelayMetrics
from .lookup import kernel_found_first

log = Logger()

JSONBody = dict[str, Any]


def json_body(request: IRequest, code: int, body: object) -> bytes:
    """Set the status and JSON content type on ``request`` and return ``body`` encoded."""
    request.setResponseCode(code)
    request.setHeader(b"Content-Type", b"application/json; charset=utf-8")
    request.setHeader(b"Cache-Control", b"no-store")
    return json.dumps(body, separators=(",", ":")).encode("utf-8")


class RelayAPI:
    """The relay's own REST routes (Jupyter Server's kernel API is :mod:`.jupyter_api`'s)."""

    app = Klein()

    def __init__(
        self,
        kernels: KernelRegistry,
        *,
        metrics: RelayMetrics | None = None,
        max_kernels: int | None = None,
        clock: Callable[[], float] = time.monotonic,
        auth: TokenAuth | None = None,
        spawner: Spawner | None = None,
        fleet: Callable[[], dict[str, Any]] | None = None,
        ready: Callable[[], bool] = lambda: True,
    ) -> None:
        self._kernels = kernels
        self._fleet = fleet
        self._ready = ready
        self._auth = auth or TokenAuth()
        self.metrics = metrics or RelayMetrics()
        self._clock = clock
        self.spawner = spawner or Spawner(kernels, self.metrics, max_kernels, clock)
        self._started_at = clock()

    def resource(self) -> IResource:
        return self.app.resource()  # type: ignore[no-any-return]

    @app.route("/spawn/<path:spec_name>", methods=["GET"])
    def spawn(self, request: IRequest, spec_name: str) -> Deferred[bytes]:
        _refuse_head(request)

        def started(kernel: Kernel) -> bytes:
            return json_body(request, 200, {"id": kernel.id})

        def failed(failure: Failure) -> bytes:
            if failure.check(TooManyKernels):  # type: ignore[no-untyped-call]
                request.setHeader(b"Retry-After", b"10")
            if failure.check(KernelspecNotAllowed):  # type: ignore[no-untyped-call]
                # The contract's body; the status says it is a refusal, as on the Jupyter API.
                return json_body(request, 403, {"error": error_text(failure)})
            return json_body(request, 500, {"error": error_text(failure)})

        return self.spawner.spawn(spec_name).addCallbacks(started, failed)

    def _degraded(self) -> list[str]:
        return [
            f"the warm pool of {name!r} failed to start a kernel {count} times in a row"
            for name, count in sorted(self._kernels.failing_pools().items())
        ]

    def _not_ready(self) -> list[str]:
        """Why the relay cannot take new work now (none: it is ready)."""
        reasons = []
        if not self._ready():
            reasons.append("the relay has not joined its fleet yet")
        view = self._fleet() if self._fleet is not None else None
        if view is not None and view.get("redis_up", True) is False:
            reasons.append("the fleet's Redis is unreachable: no kernel can be started or found")
        elif view is not None and view.get("redis_full"):
            reasons.append("the fleet's Redis is out of memory: no kernel can be started")
        return reasons

    @app.route("/api/health/ready", methods=["GET"])
    def readiness(self, request: IRequest) -> bytes:
        """200 once the relay is ready for clients and spawns, 503 while it is not (why, to its operators)."""
        reasons = self._not_ready()
        body: JSONBody = {"ready": not reasons}
        if reasons and self._holds_relay_token(request):
            body["reasons"] = reasons
        return json_body(request, 503 if reasons else 200, body)

    @app.route("/api/health", methods=["GET"])
    def health(self, request: IRequest) -> bytes:
        degraded = self._degraded()
        not_ready = self._not_ready()
        status = "starting" if not self._ready() else "degraded" if degraded else "ok"
        if not self._holds_relay_token(request):
            # Anyone may ask whether the relay is up; what it runs and its fleet are for its operators.
            return json_body(
                request, 200, {"status": status, **({"ready": False} if not_ready else {})}
            )
        return json_body(
            request,
            200,
            {
                "status": status,
                "ready": not not_ready,
                **({"reasons": [*not_ready, *degraded]} if not_ready or degraded else {}),
                "version": __version__,
                "uptime_seconds": round(self._clock() - self._started_at, 3),
                "kernels": len(self._kernels),
                "pooled_kernels": self._kernels.pooled(),
                **({"fleet": self._fleet()} if self._fleet is not None else {}),
            },
        )

    def _holds_relay_token(self, request: IRequest) -> bool:
        """Whether the request presents the relay's token (always, with authentication off)."""
        header = request.getHeader(b"authorization")
        args: dict[bytes, list[bytes]] = request.args or {}  # type: ignore[attr-defined]
        return self._auth.check_any(
            [
                token_from_authorization(header.decode("latin-1") if header else None),
                *(value.decode("utf-8", "replace") for value in args.get(TOKEN_QUERY.encode(), [])),
            ]
        )

    @app.route("/metrics", methods=["GET"])
    def prometheus(self, request: IRequest) -> bytes:
        body, content_type = self.metrics.render()
        request.setResponseCode(200)
        request.setHeader(b"Content-Type", content_type.encode("latin-1"))
        request.setHeader(b"Cache-Control", b"no-store")
        return body

    @app.route("/shutdown/<path:kernel_id>", methods=["GET"])
    @kernel_found_first
    def shutdown(self, request: IRequest, kernel_id: str) -> Deferred[bytes]:
        _refuse_head(request)

        def stopped(_: object) -> bytes:
            # "kernelId" repeats the id for enchannel-socketio-backend 0.1.0, whose shutdown() checks it.
            return json_body(request, 200, {"id": kernel_id, "kernelId": kernel_id})

        def failed(failure: Failure) -> bytes:
            log.warn(
                "Could not shut down kernel {kernel_id}: {error}",
                kernel_id=kernel_id,
                error=error_text(failure),
            )
            return json_body(request, 500, {"error": error_text(failure)})

        return self._kernels.shutdown(kernel_id).addCallbacks(stopped, failed)

    @app.route("/api/kernels/<kernel_id>/tokens", methods=["POST"])
    @kernel_found_first
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
            body = loads(content) if content.strip() else {}
        except JSONError:
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

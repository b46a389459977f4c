"""
The HTTP side of the relay: the REST API (Klein) and the resource tree that also carries socket.io.

The seed's contract is kept exactly: ``GET /spawn/<kernelSpecName>`` answers ``{"id": ...}``,
``GET /shutdown/<id>`` answers ``{"id": ...}``, and any failure of either is HTTP 500 with ``{"error": ...}``.
Discovery routes live under ``/api/``. Every route refuses browser origins the policy does not allow, so a page
the user merely visits cannot drive a relay listening on loopback. With a token set, every route but
``/api/health`` answers 401 to requests that do not present it (:class:`AuthGuard`, see :mod:`.auth`).

``GET /api/health`` answers ``{"status": "ok", ...}`` while the relay serves; ``GET /metrics`` is the
Prometheus text exposition of :class:`~kernel_relay.metrics.RelayMetrics`. ``max_kernels`` bounds the
kernels running and starting: a spawn over it is the contract's 500 ``{"error": ...}``.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote_to_bytes

from klein import Klein
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource, Resource
from twisted.web.server import Request
from werkzeug.exceptions import HTTPException, MethodNotAllowed

from . import __version__
from .auth import ACCESS_LEVELS, FULL, TOKEN_QUERY, Scope, TokenAuth, token_from_authorization
from .connections import trust_request_connection
from .hosts import HostPolicy
from .kernels import Kernel, KernelRegistry, KernelSpecInfo, UnknownKernel
from .metrics import RelayMetrics
from .origins import OriginPolicy

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


#: REST routes a full kernel token may use: they name the kernel they act on.
_KERNEL_ROUTES = re.compile(
    r"^/(?:shutdown/(?P<a>[^/]+)|api/kernels/(?P<b>[^/]+)/(?:interrupt|restart))$"
)


def kernel_of_route(path: str) -> str | None:
    """The kernel id a kernel-scoped REST route names, or None for every other route."""
    match = _KERNEL_ROUTES.match(path)
    if match is None:
        return None
    return match.group("a") or match.group("b")


class AuthGuard(Resource):
    """
    Requires the relay's token on a leaf resource: requests without it get 401 with a JSON error. The
    connection of a request that presents a valid token is marked trusted, so the site does not evict it
    when its connections run short (see :class:`~kernel_relay.connections.ConnectionLimiter`).

    ``open_paths`` (``/api/health``) are served to anyone; CORS preflights never reach this guard (the
    :class:`OriginGuard` around it answers them), as browsers send them without credentials.
    """

    isLeaf = True

    def __init__(
        self,
        wrapped: IResource,
        auth: TokenAuth,
        open_paths: frozenset[bytes] = frozenset({b"/api/health"}),
        on_refused: Callable[[], None] | None = None,
    ) -> None:
        super().__init__()
        self._wrapped = wrapped
        self._auth = auth
        self._open_paths = open_paths
        self._on_refused = on_refused

    def render(self, request: IRequest) -> bytes | int:
        if self._auth.enabled and request.path.rstrip(b"/") not in self._open_paths:
            header = request.getHeader(b"authorization")
            args: dict[bytes, list[bytes]] = request.args or {}  # type: ignore[attr-defined]
            query = args.get(TOKEN_QUERY.encode("ascii"), [])
            candidates = [
                token_from_authorization(header.decode("latin-1") if header else None),
                *(value.decode("utf-8", "replace") for value in query),
            ]
            grant = self._auth.grant(candidates)
            if isinstance(grant, Scope):
                named = kernel_of_route(request.path.decode("utf-8", "replace"))
                if named is None or not grant.allows_kernel_route(named):
                    if self._on_refused is not None:
                        self._on_refused()
                    return json_body(request, 403, {"error": grant.refusal})
            elif not grant:
                if self._on_refused is not None:
                    self._on_refused()
                log.warn(
                    "Refused {method} {path} from {address}: no valid token",
                    method=request.method.decode("ascii", "replace"),
                    path=request.path.decode("utf-8", "replace"),
                    address=str(getattr(request.getClientAddress(), "host", "")),
                )
                request.setHeader(b"WWW-Authenticate", b'Bearer realm="kernel-relay"')
                return json_body(
                    request,
                    401,
                    {
                        "error": "Authentication required: send 'Authorization: Bearer <token>' "
                        "or ?token=<token>"
                    },
                )
            trust_request_connection(request)  # it presented a valid token
        result: bytes | int = self._wrapped.render(request)
        return result


class OriginGuard(Resource):
    """
    Applies the origin policy to a leaf resource: refused origins get 403, allowed cross-origin requests get
    CORS headers, and preflight ``OPTIONS`` requests are answered here.
    """

    isLeaf = True

    def __init__(self, wrapped: IResource, origins: OriginPolicy) -> None:
        super().__init__()
        self._wrapped = wrapped
        self._origins = origins

    def render(self, request: IRequest) -> bytes | int:
        origin_header = request.getHeader(b"origin")
        origin = origin_header.decode("latin-1") if origin_header is not None else None
        host_header = request.getHeader(b"host")
        host = host_header.decode("latin-1") if host_header is not None else None
        secure = request.isSecure()
        if not self._origins.is_allowed(origin, host, secure):
            log.warn("Refused a request from origin {origin!r}", origin=origin)
            return json_body(request, 403, {"error": f"Origin {origin} is not allowed"})
        for name, value in self._origins.cors_headers(origin, host, secure).items():
            request.setHeader(name.encode("latin-1"), value.encode("latin-1"))
        if request.method == b"OPTIONS":
            request.setResponseCode(204)
            request.setHeader(b"Access-Control-Allow-Methods", b"GET, POST, OPTIONS")
            request.setHeader(b"Access-Control-Allow-Headers", b"Authorization, Content-Type")
            request.setHeader(b"Access-Control-Max-Age", b"600")
            return b""
        result: bytes | int = self._wrapped.render(request)
        return result


class RelayRoot(Resource):
    """
    The root of the site: ``/socket.io/`` goes straight to the socket.io server, everything else to the API.

    socket.io traffic bypasses Klein's routing on purpose: it is the hot path. ``demo``, when given, adds
    children of its own (the demo page at ``/`` and its files, see :func:`kernel_relay.demo.demo_resources`).
    """

    def __init__(
        self,
        api: IResource,
        socketio: IResource,
        demo: Mapping[bytes, IResource] | None = None,
        hosts: HostPolicy | None = None,
    ) -> None:
        super().__init__()
        self.putChild(b"socket.io", socketio)
        for segment, child in (demo or {}).items():
            self.putChild(segment, child)
        self._api = api
        self._hosts = hosts if hosts is not None else HostPolicy()

    def getChildWithDefault(self, path: bytes, request: IRequest) -> IResource:
        refusal = self._refusal(request)
        if refusal is not None:
            return refusal
        child: IResource = super().getChildWithDefault(path, request)
        return child

    def getChild(self, path: bytes, request: IRequest) -> IResource:
        # Give the segment back so the API sees the whole path.
        request.postpath.insert(0, request.prepath.pop())  # type: ignore[attr-defined]
        return self._api

    def render(self, request: IRequest) -> bytes | int:
        refusal = self._refusal(request)
        if refusal is not None:
            return refusal.render(request)
        result: bytes | int = self._api.render(request)
        return result

    def _refusal(self, request: IRequest) -> _Refused | None:
        """
        The answer to a request whose path is not UTF-8 (Klein logs those as critical errors, with a
        traceback) or whose ``Host`` header is not ASCII or not served (see :mod:`.hosts`).
        """
        try:
            unquote_to_bytes(request.path).decode("utf-8")  # type: ignore[attr-defined]
        except UnicodeDecodeError:
            return _Refused(400, "Invalid URL: its path is not UTF-8")
        raw = request.getHeader(b"host")
        if raw is None:
            return None
        if not raw.isascii():
            # (Klein fails on these with an unhandled error.)
            return _Refused(400, "Invalid Host header")
        host = raw.decode("ascii")
        if self._hosts.allows(host):
            return None
        log.warn(
            "Refused a request for host {host!r}: the relay has no token, so it answers only "
            "localhost, IP addresses and names given with --allow-host (DNS rebinding guard)",
            host=host,
        )
        return _Refused(
            403,
            f"Host {host!r} is not served: this relay has no token, so it answers only localhost, IP "
            "addresses and the names given with --allow-host",
        )


class _Refused(Resource):
    """Answers every request with one status and a JSON error."""

    isLeaf = True

    def __init__(self, code: int, message: str) -> None:
        super().__init__()
        self._code = code
        self._message = message

    def render(self, request: IRequest) -> bytes:
        return json_body(request, self._code, {"error": self._message})


#: Request bodies a site takes when it says nothing else: enough for any REST call.
DEFAULT_MAX_BODY = 1024 * 1024


class BoundedRequest(Request):
    """
    A request that refuses a body over its site's ``max_body`` bytes while it arrives.

    twisted.web reads a whole body (into memory, or a temporary file past 100 kB) before any resource sees
    it, so a limit checked in a resource comes too late: a client could fill the disk with one chunked
    POST. A declared ``Content-Length`` over the limit is refused before the body is read; a chunked body
    as soon as it grows past it. Either way the client gets 413 with a JSON error and the connection is
    closed (the rest of the body is never read).
    """

    _refused = False
    _received = 0

    def _max_body(self) -> int:
        limit = getattr(getattr(self.channel, "site", None), "max_body", None)
        return limit if isinstance(limit, int) else DEFAULT_MAX_BODY

    def gotLength(self, length: int | None) -> None:
        if length is not None and length > self._max_body():
            self._refuse(length)
        super().gotLength(length)

    def handleContentChunk(self, data: bytes) -> None:
        if self._refused:
            return
        self._received += len(data)
        if self._received > self._max_body():
            self._refuse(self._received)
            return
        super().handleContentChunk(data)

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        if self._refused:
            return  # answered already; whatever of the body arrived with the headers is dropped
        super().requestReceived(command, path, version)

    def _refuse(self, size: int) -> None:
        self._refused = True
        limit = self._max_body()
        log.warn(
            "Refused a request body of {size}+ bytes (limit {limit}) from {address}",
            size=size,
            limit=limit,
            address=str(getattr(self.getClientAddress(), "host", "")),
        )
        body = json.dumps({"error": f"Request body too large: the limit is {limit} bytes"}).encode()
        transport = self.channel.transport
        if transport is None:
            return
        # The request never reaches a resource, so the answer is written as Twisted writes its own
        # refusals of malformed requests: straight to the connection, which is then closed.
        transport.write(
            b"HTTP/1.1 413 Payload Too Large\r\ncontent-type: application/json\r\n"
            b"connection: close\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)
        )
        transport.loseConnection()

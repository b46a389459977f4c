"""
The guards in front of the REST routes: the token (:class:`AuthGuard`, with kernel tokens' scopes) and
browser origins (:class:`OriginGuard`, which also answers CORS preflights). Each answers a refusal itself,
as JSON, and never lets a refused request reach a route.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from twisted.logger import Logger
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource, Resource

from ..auth import TOKEN_QUERY, Scope, TokenAuth, token_from_authorization
from .api import json_body
from .connections import trust_request_connection
from .origins import OriginPolicy

log = Logger()


#: REST routes a full kernel token may use: they name the kernel they act on.
_KERNEL_ROUTES = re.compile(
    r"^/(?:shutdown/(?P<a>[^/]+)|api/kernels/(?P<b>[^/]+)"
    r"(?:/interrupt|/restart|/execute|/input|/requests(?:/[^/]+)?)?)$"
)
#: The kernel routes a read-only kernel token may use too (with GET): its kernel's requests, read back.
_READ_ROUTES = re.compile(r"^/api/kernels/[^/]+/(?:execute|requests(?:/[^/]+)?)$")


def _scope_allows(scope: Scope, method: bytes, path: str) -> bool:
    """Whether a kernel token's scope covers this REST request."""
    named = kernel_of_route(path)
    if named is None:
        return False
    if scope.allows_kernel_route(named):
        return True
    return method == b"GET" and scope.kernel_id == named and bool(_READ_ROUTES.match(path))


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
    when its connections run short (see :class:`~kernel_relay.http.connections.ConnectionLimiter`).

    ``open_paths`` (``/api/health``) are served to anyone; CORS preflights never reach this guard (the
    :class:`OriginGuard` around it answers them), as browsers send them without credentials.
    """

    isLeaf = True

    def __init__(
        self,
        wrapped: IResource,
        auth: TokenAuth,
        open_paths: frozenset[bytes] = frozenset({b"/api/health", b"/api/health/ready"}),
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
                path = request.path.decode("utf-8", "replace")
                if not _scope_allows(grant, request.method, path):
                    if self._on_refused is not None:
                        self._on_refused()
                    return json_body(
                        request,
                        403,
                        {"error": grant.refusal, "message": grant.refusal, "reason": None},
                    )
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
                # "message" and "reason" are Jupyter Server's error fields, for its clients.
                message = "Authentication required: send 'Authorization: Bearer <token>' or ?token=<token>"
                return json_body(
                    request, 401, {"error": message, "message": message, "reason": None}
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
            request.setHeader(b"Access-Control-Allow-Methods", b"GET, POST, DELETE, OPTIONS")
            request.setHeader(b"Access-Control-Allow-Headers", b"Authorization, Content-Type")
            request.setHeader(b"Access-Control-Max-Age", b"600")
            return b""
        result: bytes | int = self._wrapped.render(request)
        return result


class JSONRefusal(Resource):
    """Answers every request with one status and a JSON error."""

    isLeaf = True

    def __init__(self, code: int, message: str) -> None:
        super().__init__()
        self._code = code
        self._message = message

    def render(self, request: IRequest) -> bytes:
        return json_body(request, self._code, {"error": self._message})

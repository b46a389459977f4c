# -*- test-case-name: tests.http.test_entry -*-
"""
Where every request enters the site: ``--base-url`` and the request-duration metric.

With a base URL such as ``/kernels/`` the relay serves everything under it (the REST routes, the demo page,
socket.io and the Jupyter channels) as it would at ``/``: the prefix is taken off the request's path before
anything else sees it, so no route knows of it; ``/kernels`` redirects to ``/kernels/``, and any path outside
the prefix is 404. Each request's duration, from its arrival at the root to its end (for a WebSocket, its
whole life), is observed with its method, route (a template such as ``/api/kernels/{id}``: never a raw path,
whose ids would make a series each) and status.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Protocol
from urllib.parse import unquote_to_bytes

from twisted.web.iweb import IRequest
from twisted.web.resource import IResource, Resource, getChildForRequest
from twisted.web.util import Redirect

from .guards import JSONRefusal

#: Route templates for the metric's ``handler`` label, first match wins.
ROUTES: tuple[tuple[re.Pattern[bytes], str], ...] = tuple(
    (re.compile(pattern), template)
    for pattern, template in (
        (rb"^/socket\.io/", "/socket.io/"),
        (rb"^/api/kernels/[^/]+/channels$", "/api/kernels/{id}/channels"),
        (rb"^/api/kernels/[^/]+/(interrupt|restart|tokens)$", "/api/kernels/{id}/{action}"),
        (rb"^/api/kernels/[^/]+/?$", "/api/kernels/{id}"),
        (rb"^/api/kernels/?$", "/api/kernels"),
        (rb"^/api/kernelspecs(/.*)?$", "/api/kernelspecs"),
        (rb"^/kernelspecs/", "/kernelspecs/{name}/{file}"),
        (rb"^/api/sessions(/.*)?$", "/api/sessions"),
        (rb"^/api/health(/ready)?$", "/api/health"),
        (rb"^/api/?(status)?$", "/api"),
        (rb"^/spawn/", "/spawn/{name}"),
        (rb"^/shutdown/", "/shutdown/{id}"),
        (rb"^/metrics$", "/metrics"),
        (rb"^/(demo/.*)?$", "/ (demo)"),
    )
)


def route_of(path: bytes) -> str:
    """The route template of a request path (without the base URL), or ``other``."""
    for pattern, template in ROUTES:
        if pattern.match(path):
            return template
    return "other"


class RequestTimer(Protocol):
    def __call__(self, method: str, handler: str, status: int, seconds: float) -> None: ...


def base_url(text: str) -> str:
    """``--base-url``'s value: a path that starts and ends with ``/`` (``kernels`` -> ``/kernels/``)."""
    value = text.strip()
    if re.search(r"[?#\s\\]|//|^[a-z]+:", value):
        raise ValueError("it is a path such as /kernels/ (no scheme, host, query or empty segment)")
    segments = [segment for segment in value.split("/") if segment]
    if any(segment in (".", "..") for segment in segments):
        raise ValueError("it must not contain . or .. segments")
    return "/" + "".join(f"{segment}/" for segment in segments)


class SiteEntry(Resource):
    """The site's root: takes ``base`` (a :func:`base_url`) off each path, times each request, then ``root``."""

    def __init__(
        self,
        root: IResource,
        *,
        base: str = "/",
        clock: Callable[[], float],
        observe: RequestTimer | None = None,
    ) -> None:
        super().__init__()
        self._root = root
        self._base = base.rstrip("/").encode("utf-8")
        self._clock = clock
        self._observe = observe

    def getChildWithDefault(self, path: bytes, request: IRequest) -> IResource:
        self._time(request)
        if not self._base:
            request.postpath.insert(0, request.prepath.pop())  # type: ignore[attr-defined]
            return self._enter(request)
        original: bytes = request.path  # type: ignore[attr-defined]
        if original == self._base:
            return Redirect(self._base + b"/")
        if not original.startswith(self._base + b"/"):
            return JSONRefusal(404, f"Not under the relay's base URL {self._base.decode()}/")
        request.path = original[len(self._base) :]  # type: ignore[attr-defined]
        request.uri = request.uri[len(self._base) :]
        request.prepath = []  # type: ignore[attr-defined]
        request.postpath = [  # type: ignore[attr-defined]
            unquote_to_bytes(segment)
            for segment in request.path.split(b"/")[1:]  # type: ignore[attr-defined]
        ]
        return self._enter(request)

    def _enter(self, request: IRequest) -> IResource:
        child: IResource = getChildForRequest(self._root, request)
        return child

    def render(self, request: IRequest) -> bytes | int:
        # Only for a request with no path at all (a bare "*" or an absolute URI): as the root would.
        self._time(request)
        result: bytes | int = self._root.render(request)
        return result

    def _time(self, request: IRequest) -> None:
        observe = self._observe
        if observe is None:
            return
        began = self._clock()
        method = request.method.decode("ascii", "replace")
        handler = route_of(request.path[len(self._base) :] or b"/")  # type: ignore[attr-defined]

        def finished(_: object) -> None:
            observe(method, handler, int(request.code), self._clock() - began)  # type: ignore[attr-defined]

        request.notifyFinish().addBoth(finished)  # type: ignore[attr-defined]


__all__ = ["ROUTES", "SiteEntry", "base_url", "route_of"]

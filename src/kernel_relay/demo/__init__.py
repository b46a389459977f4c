"""
The demo page: a small console for one kernel, served by the relay itself.

``/`` is the page; ``/demo/<file>`` are its script, style sheet and the vendored socket.io-client bundle
(``static/vendor/``, built from npm by ``tests/browser/build_vendor.js``, licences alongside). The files ship
inside the package, are read once at start-up and served from memory, with:

- ``Content-Security-Policy``: scripts, styles and connections from the page's own origin only, images also
  from ``data:`` URLs (kernel output), no inline script, no framing;
- ``Cache-Control: no-cache`` and a strong ``ETag``, so browsers revalidate every time and get a ``304`` when
  nothing changed (a relay upgrade never leaves a stale script behind a fresh page);
- ``GET`` and ``HEAD`` only.

The page talks to the relay like any other client (the REST routes and the socket.io namespaces), from the
same origin, so the default origin policy serves it with no ``--allow-origin``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from importlib.resources import files
from importlib.resources.abc import Traversable
from typing import Protocol, cast

from twisted.web import http
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource, Resource

__all__ = [
    "ASSETS_SEGMENT",
    "CONTENT_SECURITY_POLICY",
    "DemoFiles",
    "StaticFile",
    "demo_resources",
    "load_static_files",
]

ASSETS_SEGMENT = b"demo"
INDEX = "index.html"

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    ]
)

CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".txt": "text/plain; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
}

COMMON_HEADERS = {
    b"Content-Security-Policy": CONTENT_SECURITY_POLICY.encode("ascii"),
    b"X-Content-Type-Options": b"nosniff",
    b"Referrer-Policy": b"no-referrer",
    b"X-Frame-Options": b"DENY",
    b"Cache-Control": b"no-cache",
}


@dataclass(frozen=True)
class StaticFile:
    """One file served from memory: its bytes, content type and entity tag."""

    body: bytes
    content_type: str
    etag: str

    @classmethod
    def of(cls, name: str, body: bytes) -> StaticFile:
        suffix = name[name.rfind(".") :] if "." in name else ""
        content_type = CONTENT_TYPES.get(suffix, "application/octet-stream")
        digest = hashlib.sha256(body).hexdigest()[:32]
        return cls(body, content_type, f'"{digest}"')


def _walk(folder: Traversable, prefix: str = "") -> Iterator[tuple[str, Traversable]]:
    for entry in sorted(folder.iterdir(), key=lambda entry: entry.name):
        if entry.name.startswith((".", "_")):
            continue
        if entry.is_dir():
            yield from _walk(entry, f"{prefix}{entry.name}/")
        else:
            yield f"{prefix}{entry.name}", entry


def load_static_files(folder: Traversable | None = None) -> dict[str, StaticFile]:
    """Every file under ``folder`` (the package's ``static/`` by default), keyed by its ``/``-joined path."""
    folder = folder if folder is not None else files(__name__) / "static"
    return {name: StaticFile.of(name, entry.read_bytes()) for name, entry in _walk(folder)}


class _Request(Protocol):
    """The slice of a twisted.web request these resources use, typed (``IRequest`` carries no annotations)."""

    method: bytes
    postpath: list[bytes]

    def setHeader(self, name: bytes, value: bytes) -> None: ...

    def setResponseCode(self, code: int, message: bytes | None = None) -> None: ...

    def setETag(self, etag: bytes) -> object: ...


class DemoFiles(Resource):
    """
    Serves a fixed set of in-memory files, looked up by the rest of the request path (so nothing outside the
    set can ever be reached). Unknown paths get a plain 404, methods other than GET and HEAD a 405.
    """

    isLeaf = True

    def __init__(self, static_files: Mapping[str, StaticFile]) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self._files = dict(static_files)

    def render(self, request: IRequest) -> bytes:
        web = cast(_Request, request)
        for name, value in COMMON_HEADERS.items():
            web.setHeader(name, value)
        if web.method not in (b"GET", b"HEAD"):
            web.setResponseCode(http.NOT_ALLOWED)
            web.setHeader(b"Allow", b"GET, HEAD")
            web.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
            return b"Method not allowed\n"
        static = self._files.get(b"/".join(web.postpath).decode("utf-8", "replace"))
        if static is None:
            web.setResponseCode(http.NOT_FOUND)
            web.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
            return b"Not found\n"
        web.setHeader(b"Content-Type", static.content_type.encode("ascii"))
        if web.setETag(static.etag.encode("ascii")) is http.CACHED:
            return b""
        return static.body


def demo_resources(static_files: Mapping[str, StaticFile] | None = None) -> dict[bytes, IResource]:
    """
    The children to mount on the site's root: ``b""`` (the page at ``/``) and :data:`ASSETS_SEGMENT` (every
    other file, at ``/demo/<path>``).
    """
    static_files = static_files if static_files is not None else load_static_files()
    page = {"": static_files[INDEX]}
    assets = {name: static for name, static in static_files.items() if name != INDEX}
    return {b"": DemoFiles(page), ASSETS_SEGMENT: DemoFiles(assets)}

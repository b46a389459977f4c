"""Which web origins may drive the relay, and the CORS headers that say so.

A kernel relay executes code for whoever reaches it, so a page the user merely visits must not be able to
use a relay on ``localhost``. Browsers send ``Origin`` on cross-origin requests and on every WebSocket
handshake; non-browser clients (curl, Node, Python) usually send none. The default policy therefore serves
requests without an ``Origin`` and same-origin requests, and refuses the rest.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

ANY_ORIGIN = "*"


def _default_port(scheme: str) -> int | None:
    return {"http": 80, "ws": 80, "https": 443, "wss": 443}.get(scheme)


def _host_port(netloc: str, scheme: str) -> tuple[str, int | None]:
    parts = urlsplit(f"//{netloc}")
    try:
        port = parts.port
    except ValueError:
        port = None
    return (parts.hostname or "").lower(), port if port is not None else _default_port(scheme)


@dataclass(frozen=True)
class OriginPolicy:
    """
    The set of origins allowed besides the relay's own.

    Each entry of ``allowed`` is an exact origin (``https://app.example.com``), a shell-style pattern
    (``https://*.example.com``), or ``*`` for every origin (the original kernel-relay's behaviour).
    """

    allowed: tuple[str, ...] = ()

    @classmethod
    def from_options(cls, origins: Iterable[str]) -> OriginPolicy:
        return cls(tuple(origin.strip().rstrip("/") for origin in origins if origin.strip()))

    @property
    def allows_any(self) -> bool:
        return ANY_ORIGIN in self.allowed

    def is_allowed(self, origin: str | None, host: str | None, secure: bool = False) -> bool:
        """
        May a request carrying ``Origin: origin`` and ``Host: host`` be served?

        ``secure`` says whether the request itself arrived over TLS, to judge same-origin requests.
        """
        if origin is None:
            return True
        if self.allows_any:
            return True
        origin = origin.rstrip("/")
        if self._is_same_origin(origin, host, secure):
            return True
        lowered = origin.lower()
        return any(fnmatch.fnmatchcase(lowered, pattern.lower()) for pattern in self.allowed)

    def cors_headers(
        self,
        origin: str | None,
        host: str | None,
        secure: bool = False,
        *,
        echo_any: bool = False,
    ) -> dict[str, str]:
        """
        The CORS response headers for an allowed cross-origin request, or ``{}``.

        An explicitly allowed origin is echoed with credentials allowed. Under ``*`` the answer is ``*``
        without credentials (the Fetch standard forbids ``*`` with credentials), unless ``echo_any``: then
        the origin is echoed with credentials. Engine.IO asks for that because engine.io-client 1.x polls
        with ``withCredentials`` and browsers refuse its responses otherwise. It grants a page nothing
        ``*`` did not: the relay sets no cookies and reads tokens only from schemes browsers never send
        on their own.
        """
        if origin is None or not self.is_allowed(origin, host, secure):
            return {}
        if self._is_same_origin(origin.rstrip("/"), host, secure):
            return {}
        if self.allows_any and not echo_any:
            return {"Access-Control-Allow-Origin": ANY_ORIGIN}
        return {
            "Access-Control-Allow-Origin": origin,
            "Access-Control-Allow-Credentials": "true",
            "Vary": "Origin",
        }

    @staticmethod
    def _is_same_origin(origin: str, host: str | None, secure: bool) -> bool:
        if host is None:
            return False
        parts = urlsplit(origin)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            return False
        request_scheme = "https" if secure else "http"
        if parts.scheme != request_scheme:
            return False
        return _host_port(parts.netloc, parts.scheme) == _host_port(host, request_scheme)

"""The value types of the Engine.IO API: server options, handshake facts, the handler protocol."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

KNOWN_TRANSPORTS = ("polling", "websocket")


class OriginCheck(Protocol):
    """
    Which browser origins may use the server, and the CORS headers that say so (the relay's
    ``kernel_relay.http.origins.OriginPolicy`` is one).
    """

    def is_allowed(self, origin: str | None, host: str | None, secure: bool = False) -> bool:
        """May a request with ``Origin: origin`` (None: no such header) for ``Host: host`` be served?"""
        ...

    def cors_headers(
        self, origin: str | None, host: str | None, secure: bool = False, *, echo_any: bool = False
    ) -> dict[str, str]:
        """The CORS headers for an allowed cross-origin request (``echo_any``: echo ``*``'s origin)."""
        ...


class AnyOrigin:
    """Serve every origin and send no CORS headers: the reference server's default."""

    def is_allowed(self, origin: str | None, host: str | None, secure: bool = False) -> bool:
        return True

    def cors_headers(
        self, origin: str | None, host: str | None, secure: bool = False, *, echo_any: bool = False
    ) -> dict[str, str]:
        return {}


#: The query parameters of the Engine.IO protocol itself; the others in a handshake's query are the
#: application's.
PROTOCOL_QUERY_KEYS = frozenset({"EIO", "transport", "t", "sid", "b64", "j"})

#: The request headers a session keeps of its handshake (lower case).
HANDSHAKE_HEADERS = frozenset({"authorization", "origin", "user-agent"})


@dataclass(frozen=True)
class EngineIOOptions:
    """
    Server settings; times are in seconds, sizes in bytes.

    ``transports`` limits what is offered and accepted, so ``("websocket",)`` makes a WebSocket-only
    server and ``("polling",)`` one that never upgrades. ``origins`` decides which browser origins are
    served (an :class:`OriginCheck`); by default every one is, with no CORS headers, as by the
    reference server: a server that runs anything for its clients must pass a policy of its own.

    ``allow_eio3`` also serves Engine.IO protocol 3 (``EIO=3``: socket.io-client 1.x and 2.x) beside
    protocol 4; each session keeps the protocol it opened with. ``max_buffered_bytes`` bounds what
    one session may have waiting to go out (packets queued for the next poll plus what the
    WebSocket connection could not write yet); a session over it is closed with reason
    ``"slow client"``. ``max_total_buffered_bytes`` bounds the same over every session together:
    when it is exceeded, the sessions with the most waiting are closed as slow clients until the
    rest fit. ``max_sessions`` and ``max_sessions_per_address`` bound the open sessions, in all and
    from one client address: a handshake over either is refused (HTTP 503), except that when the
    total is reached the oldest session the application has not vouched for (see
    :meth:`EngineIOSession.vouch`) is closed to make room. ``None`` means no bound.
    """

    ping_interval: float = 25.0
    ping_timeout: float = 20.0
    max_payload: int = 1_000_000
    transports: tuple[str, ...] = ("polling", "websocket")
    origins: OriginCheck = field(default_factory=AnyOrigin)
    upgrade_timeout: float = 10.0
    allow_eio3: bool = True
    max_buffered_bytes: int | None = None
    max_total_buffered_bytes: int | None = None
    max_sessions: int | None = None
    max_sessions_per_address: int | None = None

    def __post_init__(self) -> None:
        unknown = [name for name in self.transports if name not in KNOWN_TRANSPORTS]
        if unknown or not self.transports:
            raise ValueError(f"transports must be a non-empty subset of {KNOWN_TRANSPORTS}")
        if self.ping_interval <= 0 or self.ping_timeout <= 0 or self.upgrade_timeout <= 0:
            raise ValueError("ping_interval, ping_timeout and upgrade_timeout must be positive")
        if self.max_payload <= 0:
            raise ValueError("max_payload must be positive")
        for name in (
            "max_buffered_bytes",
            "max_total_buffered_bytes",
            "max_sessions",
            "max_sessions_per_address",
        ):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be positive (or None)")


@dataclass(frozen=True)
class HandshakeInfo:
    """
    What the request that opened a session said, kept for the layers above (auth, logging): of its
    headers only those in :data:`HANDSHAKE_HEADERS`, since a session lives long and every
    unauthenticated client has one.
    """

    remote_address: str
    query: Mapping[str, str]
    headers: Mapping[str, str]
    secure: bool
    transport: str
    protocol: int


class SessionHandler(Protocol):
    """Receives one session's messages; returned by the server's ``handler_factory``."""

    def message_received(self, data: str | bytes) -> None: ...

    def session_closed(self, reason: str) -> None: ...

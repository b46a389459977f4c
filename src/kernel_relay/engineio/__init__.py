"""
An Engine.IO server for Twisted: HTTP long-polling and WebSocket (Autobahn) on one twisted.web
path, speaking protocol 4 and (unless ``EngineIOOptions.allow_eio3`` is off) protocol 3, the one of
socket.io-client 1.x/2.x, side by side; each session keeps the protocol it opened with.

Public API: :class:`EngineIOServer` (mount ``server.resource()``), :class:`EngineIOOptions`,
:class:`EngineIOSession`, :class:`HandshakeInfo`, the :class:`SessionHandler` protocol that the
``handler_factory`` returns for each new session, :data:`Binary`, what a session sends as binary,
:class:`OriginCheck` (what ``EngineIOOptions.origins`` takes), and the close reasons sessions report
(:data:`SLOW_CLIENT` among them), and :data:`PROTOCOL_QUERY_KEYS`, the handshake query parameters that
are Engine.IO's own.
"""

from .options import (
    PROTOCOL_QUERY_KEYS,
    AnyOrigin,
    EngineIOOptions,
    HandshakeInfo,
    OriginCheck,
    SessionHandler,
)
from .packets import Binary
from .server import SERVER_SHUTDOWN, SESSION_EVICTED, EngineIOServer
from .session import (
    PARSE_ERROR,
    PING_TIMEOUT,
    SERVER_CLOSE,
    SLOW_CLIENT,
    TRANSPORT_CLOSE,
    TRANSPORT_ERROR,
    EngineIOSession,
)

__all__ = [
    "PARSE_ERROR",
    "PING_TIMEOUT",
    "PROTOCOL_QUERY_KEYS",
    "SERVER_CLOSE",
    "SERVER_SHUTDOWN",
    "SESSION_EVICTED",
    "SLOW_CLIENT",
    "TRANSPORT_CLOSE",
    "TRANSPORT_ERROR",
    "AnyOrigin",
    "Binary",
    "EngineIOOptions",
    "EngineIOServer",
    "EngineIOSession",
    "HandshakeInfo",
    "OriginCheck",
    "SessionHandler",
]

"""
An Engine.IO server for Twisted: HTTP long-polling and WebSocket (Autobahn) on one twisted.web
path, speaking protocol 4 and (unless ``EngineIOOptions.allow_eio3`` is off) protocol 3, the one of
socket.io-client 1.x/2.x, side by side; each session keeps the protocol it opened with.

Public API: :class:`EngineIOServer` (mount ``server.resource()``), :class:`EngineIOOptions`,
:class:`EngineIOSession`, :class:`HandshakeInfo`, the :class:`SessionHandler` protocol that the
``handler_factory`` returns for each new session, :data:`Binary`, what a session sends as binary,
:class:`OriginCheck` (what ``EngineIOOptions.origins`` takes), and the close reasons sessions report
(:data:`SLOW_CLIENT` among them).
"""

from kernel_relay.engineio.options import (
    AnyOrigin,
    EngineIOOptions,
    HandshakeInfo,
    OriginCheck,
    SessionHandler,
)
from kernel_relay.engineio.packets import Binary
from kernel_relay.engineio.server import SESSION_EVICTED, EngineIOServer
from kernel_relay.engineio.session import (
    FORCED_CLOSE,
    PING_TIMEOUT,
    SLOW_CLIENT,
    TRANSPORT_CLOSE,
    EngineIOSession,
)

__all__ = [
    "FORCED_CLOSE",
    "PING_TIMEOUT",
    "SESSION_EVICTED",
    "SLOW_CLIENT",
    "TRANSPORT_CLOSE",
    "AnyOrigin",
    "Binary",
    "EngineIOOptions",
    "EngineIOServer",
    "EngineIOSession",
    "HandshakeInfo",
    "OriginCheck",
    "SessionHandler",
]

"""
An Engine.IO server for Twisted: HTTP long-polling and WebSocket (Autobahn) on one twisted.web
path, speaking protocol 4 and (unless ``EngineIOOptions.allow_eio3`` is off) protocol 3, the one of
socket.io-client 1.x/2.x, side by side; each session keeps the protocol it opened with.

Public API: :class:`EngineIOServer` (mount ``server.resource()``), :class:`EngineIOOptions`,
:class:`EngineIOSession`, :class:`HandshakeInfo`, the :class:`SessionHandler` protocol that the
``handler_factory`` returns for each new session, and :data:`Binary`, what a session sends as binary.
"""

from kernel_relay.engineio.options import EngineIOOptions, HandshakeInfo, SessionHandler
from kernel_relay.engineio.packets import Binary
from kernel_relay.engineio.server import EngineIOServer
from kernel_relay.engineio.session import EngineIOSession

__all__ = [
    "Binary",
    "EngineIOOptions",
    "EngineIOServer",
    "EngineIOSession",
    "HandshakeInfo",
    "SessionHandler",
]

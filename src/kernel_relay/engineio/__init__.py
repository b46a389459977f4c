"""
An Engine.IO v4 server for Twisted: HTTP long-polling and WebSocket (Autobahn) on one twisted.web
path.

Public API: :class:`EngineIOServer` (mount ``server.resource()``), :class:`EngineIOOptions`,
:class:`EngineIOSession`, :class:`HandshakeInfo` and the :class:`SessionHandler` protocol that the
``handler_factory`` returns for each new session.
"""

from kernel_relay.engineio.options import EngineIOOptions, HandshakeInfo, SessionHandler
from kernel_relay.engineio.server import EngineIOServer
from kernel_relay.engineio.session import EngineIOSession

__all__ = [
    "EngineIOOptions",
    "EngineIOServer",
    "EngineIOSession",
    "HandshakeInfo",
    "SessionHandler",
]

"""
What the modules of the socket.io server share: the disconnect reasons they give, and what each of them
needs of the others, as small Protocols, so that none imports another one to name its types.

- :class:`EngineSession`: what the layer needs of an Engine.IO session (``EngineIOSession`` provides it).
- :class:`NamespaceMember`: what a :class:`~.namespace.Namespace` needs of the sockets joined to it
  (:class:`~.socket.Socket` provides it).
- :class:`ClientHost`: what a :class:`~.client.Client` needs of the server that made it
  (:class:`~.server.SocketIOServer` provides it).

Imports point one way: ``server`` → ``client`` → ``namespace`` → this module and ``packet``. This module
imports nothing of the package.

Disconnect reasons: besides the ones below, the Engine.IO close reasons reach disconnect handlers as the
session gave them (``kernel_relay.engineio``: ``"transport close"``, ``"ping timeout"``, ...), and so does
Engine.IO's :data:`~kernel_relay.engineio.PARSE_ERROR`, the reason given after a malformed socket.io
packet too, and :data:`~kernel_relay.engineio.SERVER_SHUTDOWN`, :meth:`.SocketIOServer.close`'s default.
"""

from __future__ import annotations

from typing import Final, Protocol, TypeVar

from ..engineio import Binary, HandshakeInfo
from .packet import EncodedPacket

#: The client left the namespace (its DISCONNECT packet).
CLIENT_DISCONNECT: Final = "client namespace disconnect"
#: The server disconnected the socket (``Socket.disconnect``, ``Namespace.disconnect_all``).
SERVER_DISCONNECT: Final = "server namespace disconnect"
#: The client broke the protocol (a CONNECT_ERROR, a second CONNECT, a flood before it was connected).
INVALID_STATE: Final = "invalid state"
#: The client joined no namespace in time.
CONNECT_TIMEOUT: Final = "connect timeout"
#: A connect handler refused the socket (given to the socket's own bookkeeping: it was never connected).
CONNECTION_REFUSED: Final = "connection refused"
#: ``Client.close()`` without a reason, as in the reference server.
FORCED_CLOSE: Final = "forced server close"
#: A bug of ours while handling a client's packet (it is logged).
INTERNAL_ERROR: Final = "internal error"


class EngineSession(Protocol):
    """What the socket.io layer needs of an Engine.IO session (``EngineIOSession`` provides it)."""

    @property
    def sid(self) -> str: ...

    @property
    def handshake(self) -> HandshakeInfo: ...

    @property
    def closed(self) -> bool: ...

    @property
    def buffered_bytes(self) -> int: ...

    def send(self, *messages: str | Binary) -> None: ...

    def close(self, reason: str = ...) -> None: ...

    def vouch(self) -> None:
        """The application accepted this session (it joined a namespace): spare its connection under load."""


class NamespaceMember(Protocol):
    """What a namespace needs of a socket joined to it (``Socket`` provides it)."""

    @property
    def id(self) -> str: ...

    def send_encoded(self, encoded: EncodedPacket) -> None:
        """Send a packet encoded once for every socket of the namespace."""

    def disconnect(self, reason: str = ...) -> None:
        """Leave the namespace from the server side, telling the client."""


_NamespaceT_co = TypeVar("_NamespaceT_co", covariant=True)
_ClientT_contra = TypeVar("_ClientT_contra", contravariant=True)


class ClientHost(Protocol[_NamespaceT_co, _ClientT_contra]):
    """What a client needs of the server that made it (``SocketIOServer`` provides it)."""

    @property
    def serves_main_namespace(self) -> bool:
        """Does a protocol 4 client join ``/`` as soon as it opens?"""

    def resolve(self, name: str) -> _NamespaceT_co | None:
        """The namespace a socket asks to join (made for a matching pattern), None if there is none."""

    def report(self, kind: str) -> None:
        """Count an event of ``kind`` (``"malformed_packet"``, ``"connect_timeout"``)."""

    def client_closed(self, client: _ClientT_contra) -> None:
        """The client's session closed: forget it."""

"""
A socket.io server for Twisted, on top of :mod:`kernel_relay.engineio`: protocol 5 (socket.io-client
3.x/4.x) and, for Engine.IO protocol 3 sessions, protocol 4 (socket.io-client 1.x/2.x; see
:mod:`.client` for how it differs), served side by side.

It knows socket.io packets (events, acks, binary attachments), namespaces and connect/disconnect,
and nothing of Jupyter. Typical use::

    server = SocketIOServer(reactor, engineio_options=EngineIOOptions(ping_interval=25.0))
    root.putChild(b"socket.io", server.resource())

    group = server.of(re.compile(r"/shell/(?P<kernel_id>[^/]+)"))   # or server.of("/exact")

    @group.on_connect
    def joined(socket: Socket, auth: Any) -> None:        # may return a Deferred or be async
        if not allowed(auth):
            raise ConnectionRefused("Not authorized", {"hint": "send a token"})

    @group.on("message")
    def message(socket: Socket, *args: Any) -> Any:       # the result is the ack, if asked for
        socket.emit("reply", *args)                       # bytes travel as attachments
        return "ok"

    @group.on_disconnect
    def left(socket: Socket, reason: str) -> None: ...

API summary:

- :class:`SocketIOServer` ``(reactor, *, engineio_options, connect_timeout=45.0,
  max_attachments=1000)``: ``.resource()``, ``.engine`` (the EngineIOServer), ``.of(name | compiled
  regex) -> NamespaceGroup``, ``.namespace(name) -> Namespace | None``, ``.clients``,
  ``.close(reason)``.
- :class:`NamespaceGroup`: ``on_connect(handler)``, ``on_disconnect(handler)``, ``on(event,
  handler)`` (each also a decorator). Connect handlers ``(socket, auth)`` run in order; raising or
  failing with :class:`ConnectionRefused` answers CONNECT_ERROR ``{"message", "data"}``, any other
  error a generic CONNECT_ERROR. The CONNECT reply comes only after every handler succeeded; what
  the client sends meanwhile is queued and replayed, and what the server emits meanwhile follows the
  CONNECT reply. Event handlers ``(socket, *args)``: the result becomes the ack (None → no args,
  tuple → its items, else one arg); exceptions are logged and no ack is sent. Disconnect handlers
  ``(socket, reason)``.
- :class:`Namespace` (a server's are ``Namespace[Socket]``): ``.name``, ``.params`` (the pattern's named
  groups), ``.group``, ``.sockets``, ``.emit(event, *args)`` (encoded once for all sockets),
  ``.disconnect_all(reason)``. Pattern namespaces exist while someone is joined (or joining); exact ones
  for the server's lifetime.
- :class:`Socket`: ``.id``, ``.namespace``, ``.client``, ``.auth``, ``.connected``, ``.emit(...)``,
  ``.call(event, *args, timeout=None) -> Deferred[list]`` (fails with :class:`AckTimeout` or
  :class:`Disconnected`), ``.disconnect(reason)``, ``.send_encoded(encode_event(namespace, event,
  *args))`` (one encoding for many sockets of a namespace).
- :class:`Client`: one per Engine.IO session, shared by its sockets: ``.sid``, ``.handshake``,
  ``.sockets``, ``.close()``.

Disconnect reasons (constants in :mod:`.interfaces`): ``"client namespace disconnect"``, ``"server
namespace disconnect"``, the reason given to ``disconnect_all``/``close`` (``Client.close()``'s default is
``"forced server close"``), or the Engine.IO close reason (``"transport close"``, ``"ping timeout"``,
...), ``"parse error"`` after a malformed packet, ``"connect timeout"``, ``"invalid state"`` (protocol
violation), ``"internal error"`` (a bug of ours, logged).

:class:`RawJSON` (a ``str`` of already-encoded JSON) may appear anywhere in emitted arguments or
ack results; it is written into the packet verbatim (see :mod:`.packet`).

Robustness: any malformed packet (see :mod:`.packet`), a CONNECT_ERROR or a second CONNECT for a
joined namespace from the client closes its Engine.IO session. Packets for a namespace the client
has not joined are ignored (the reference closes the connection; ignoring tolerates races with a
server-side disconnect and spares the client's other namespaces).
"""

from ..jsontext import RawJSON
from .client import Client
from .errors import AckTimeout, ConnectionRefused, Disconnected
from .namespace import Namespace, NamespaceGroup
from .packet import EncodedPacket, encode_event
from .server import SocketIOServer
from .socket import Socket

__all__ = [
    "AckTimeout",
    "Client",
    "ConnectionRefused",
    "Disconnected",
    "EncodedPacket",
    "Namespace",
    "NamespaceGroup",
    "RawJSON",
    "Socket",
    "SocketIOServer",
    "encode_event",
]

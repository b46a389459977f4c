"""
The socket.io side of one Engine.IO session (:class:`Client`): it decodes the session's messages,
routes packets to its :class:`~.socket.Socket` of each namespace, and answers CONNECT (joining,
refusing, the connect deadline). Nothing here touches a transport: the client only calls
``send``/``close`` on its session, which makes the whole layer testable with a fake session.

A client whose Engine.IO session speaks protocol 3 (socket.io-client 1.x/2.x) speaks socket.io
protocol 4 (:attr:`Client.legacy`): it is joined to ``/`` as soon as it opens (``0`` is sent without
being asked, and ``/``'s connect handlers get the handshake query as ``auth``), a CONNECT may carry
a query after the namespace name that becomes the ``auth`` dict of the connect handlers, a refusal
is an ``ERROR`` packet holding the ConnectionRefused data (or its message), the CONNECT reply holds
no socket id, and socket ids follow the socket.io 2 rule the old clients compute for themselves
(``/`` gets the Engine.IO sid, other namespaces ``<namespace>#<sid>``). A repeated CONNECT to a
joined namespace is ignored.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from ..engineio import PARSE_ERROR, PROTOCOL_QUERY_KEYS, HandshakeInfo
from .errors import ConnectionRefused, PacketError
from .interfaces import (
    CONNECT_TIMEOUT,
    CONNECTION_REFUSED,
    FORCED_CLOSE,
    INTERNAL_ERROR,
    INVALID_STATE,
    ClientHost,
    EngineSession,
)
from .namespace import Namespace
from .packet import (
    EncodedPacket,
    Packet,
    PacketDecoder,
    PacketType,
    ascii_packet,
    encode_packet,
    split_namespace_query,
)
from .socket import Socket

log = Logger()

#: The CONNECT_ERROR message when a connect handler fails with something other than
#: ConnectionRefused.
GENERIC_REFUSAL: Final = "Internal server error"


class Client:
    """
    The socket.io side of one Engine.IO session: its packet decoder and its sockets by namespace.

    It is the ``SessionHandler`` the Engine.IO server calls. Sockets of one client share it, so an
    application can tell that two namespaces are used by the same connection (``client.sid``).
    """

    def __init__(
        self,
        server: ClientHost[Namespace[Socket], Client],
        session: EngineSession,
        reactor: IReactorTime,
        connect_timeout: float,
        max_attachments: int,
        max_payload: int,
    ) -> None:
        self._server = server
        self.session = session
        self.reactor = reactor
        #: The most bytes of attachments this client may have the server hold for one packet.
        self.max_payload = max_payload
        #: True for socket.io protocol 4 (an Engine.IO protocol 3 session), see the module doc.
        self.legacy: bool = session.handshake.protocol < 4
        self._sockets: dict[str, Socket] = {}
        # Attachments for a namespace this client has not joined are dropped as they arrive.
        self._decoder = PacketDecoder(max_attachments, max_payload, self._sockets.__contains__)
        self._closed = False
        self._connect_deadline: IDelayedCall | None = reactor.callLater(
            connect_timeout, self._connect_timed_out
        )

    def __repr__(self) -> str:
        return f"<Client {self.sid} {sorted(self._sockets)}>"

    @property
    def sid(self) -> str:
        """The Engine.IO session id (different from every ``Socket.id``)."""
        return self.session.sid

    @property
    def handshake(self) -> HandshakeInfo:
        return self.session.handshake

    @property
    def sockets(self) -> dict[str, Socket]:
        """This client's sockets by namespace name, connected or still connecting (a copy)."""
        return dict(self._sockets)

    def start(self) -> None:
        """
        Called once the client is registered: a protocol 4 client joins ``/`` right away, if the
        server serves ``/``.
        """
        if self.legacy and not self._closed and self._server.serves_main_namespace:
            query = self.handshake.query
            auth = {key: value for key, value in query.items() if key not in PROTOCOL_QUERY_KEYS}
            self._join("/", auth)

    def close(self, reason: str = FORCED_CLOSE) -> None:
        """Close the Engine.IO session; the client's sockets are disconnected with ``reason``."""
        if self._closed:
            return
        self.session.close(reason)
        # The session reports the close through session_closed; make sure it happened regardless.
        self.session_closed(reason)

    # -- SessionHandler --------------------------------------------------------------------------

    def message_received(self, data: str | bytes) -> None:
        if self._closed:
            return
        try:
            packet = self._decoder.feed(data)
        except PacketError as error:
            log.info(
                "Closing client {sid} after a malformed packet: {error}", sid=self.sid, error=error
            )
            self._server.report("malformed_packet")
            self.close(PARSE_ERROR)
            return
        if packet is None:
            return
        try:
            self._dispatch(packet)
        except Exception:
            # Handlers' errors are caught where they run; this is a last guard so that a bug here
            # costs one client its connection, never the Engine.IO layer or other clients.
            log.failure("Internal error handling a packet from client {sid}", sid=self.sid)
            self.close(INTERNAL_ERROR)

    def _dispatch(self, packet: Packet) -> None:
        if packet.type is PacketType.CONNECT:
            self._connect(packet)
        elif packet.type is PacketType.CONNECT_ERROR:
            log.info("Closing client {sid}: it sent a CONNECT_ERROR", sid=self.sid)
            self.close(INVALID_STATE)
        else:
            socket = self._sockets.get(packet.namespace)
            if socket is None:
                # The reference server closes the connection here. We ignore the packet instead: a
                # client may legitimately race a server-side disconnect of that namespace, and
                # closing would also cut its other namespaces.
                log.debug(
                    "Client {sid} sent {type} to {namespace}, which it has not joined; ignored",
                    sid=self.sid,
                    type=packet.type.name,
                    namespace=packet.namespace,
                )
                return
            socket.receive(packet, self._decoder.last_attachment_bytes)

    def session_closed(self, reason: str) -> None:
        if self._closed:
            return
        self._closed = True
        self._cancel_deadline()
        self._decoder.reset()
        for socket in list(self._sockets.values()):
            socket.drop(reason)
        self._sockets.clear()
        self._server.client_closed(self)

    # -- called by its sockets -------------------------------------------------------------------

    def send_encoded(self, encoded: EncodedPacket) -> None:
        """Send an encoded packet on the session, unless it is closed (for protocol 4 as ASCII text)."""
        if self._closed or self.session.closed:
            return
        if self.legacy:
            encoded = [
                ascii_packet(message)
                if isinstance(message, str) and not message.isascii()
                else message
                for message in encoded
            ]
        self.session.send(*encoded)

    def refuse(self, name: str, reply: dict[str, Any]) -> None:
        """Answer a CONNECT to ``name`` with a refusal: ``reply`` holds its message and maybe its data."""
        # Protocol 4's ERROR packet holds the refusal's data if it has some, else its message.
        payload: Any = reply.get("data", reply["message"]) if self.legacy else reply
        try:
            encoded = encode_packet(Packet(PacketType.CONNECT_ERROR, name, payload))
        except (TypeError, ValueError):
            log.failure("ConnectionRefused data of {namespace} is not JSON", namespace=name)
            fallback = reply["message"] if self.legacy else {"message": reply["message"]}
            encoded = encode_packet(Packet(PacketType.CONNECT_ERROR, name, fallback))
        self.send_encoded(encoded)

    def forget(self, socket: Socket) -> None:
        """``socket`` left its namespace: it is no longer one of this client's."""
        if self._sockets.get(socket.namespace.name) is socket:
            del self._sockets[socket.namespace.name]

    # -- internals -------------------------------------------------------------------------------

    def _connect(self, packet: Packet) -> None:
        name = packet.namespace
        auth: Any = packet.data if packet.data is not None else {}
        if self.legacy:
            name, auth = split_namespace_query(name)
            if name in self._sockets:
                log.debug(
                    "Client {sid} repeated its CONNECT to {namespace}; ignored",
                    sid=self.sid,
                    namespace=name,
                )
                return
        elif name in self._sockets:
            log.info(
                "Closing client {sid}: second CONNECT to {namespace}", sid=self.sid, namespace=name
            )
            self.close(INVALID_STATE)
            return
        self._join(name, auth)

    def _join(self, name: str, auth: Any) -> None:
        namespace = self._server.resolve(name)
        if namespace is None:
            self.refuse(name, {"message": "Invalid namespace"})
            return
        socket_id = None
        if self.legacy:
            socket_id = self.sid if name == "/" else f"{name}#{self.sid}"
        socket = Socket(self, namespace, auth, socket_id)
        self._sockets[name] = socket
        namespace.joining()
        outcome: Deferred[None] = succeed(None)
        for handler in namespace.group.connect_handlers:
            outcome.addCallback(_call_connect_handler, handler, socket, auth)
        outcome.addCallbacks(
            self._connect_succeeded,
            self._connect_failed,
            callbackArgs=(socket,),
            errbackArgs=(socket,),
        )
        outcome.addErrback(
            lambda failure: log.failure("Connecting to {namespace} failed", failure, namespace=name)
        )

    def _connect_succeeded(self, _: None, socket: Socket) -> None:
        if not socket.connecting or self._closed:
            return
        self._cancel_deadline()
        self.session.vouch()
        socket.accept()

    def _connect_failed(self, failure: Failure, socket: Socket) -> None:
        if not socket.connecting or self._closed:
            return
        error = failure.value
        reply: dict[str, Any]
        if isinstance(error, ConnectionRefused):
            reply = {"message": str(error.message)}
            if error.data is not None:
                reply["data"] = error.data
        else:
            log.failure(
                "Connect handler of {namespace} failed", failure, namespace=socket.namespace.name
            )
            reply = {"message": GENERIC_REFUSAL}
        socket.drop(CONNECTION_REFUSED)
        self.refuse(socket.namespace.name, reply)

    def _connect_timed_out(self) -> None:
        self._connect_deadline = None
        if not self._sockets:
            log.info("Closing client {sid}: it joined no namespace in time", sid=self.sid)
            self._server.report("connect_timeout")
            self.close(CONNECT_TIMEOUT)

    def _cancel_deadline(self) -> None:
        deadline, self._connect_deadline = self._connect_deadline, None
        if deadline is not None and deadline.active():
            deadline.cancel()


def _call_connect_handler(
    _: None, handler: Callable[[Socket, Any], object], socket: Socket, auth: Any
) -> Deferred[Any]:
    """Run one connect handler only while the socket still waits (an earlier one may have left)."""
    if not socket.connecting:
        return succeed(None)
    return maybeDeferred(handler, socket, auth)

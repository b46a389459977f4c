"""
Per-connection state: a :class:`Client` for each Engine.IO session and a :class:`Socket` for each
namespace that client joins.

The client decodes the session's messages and routes packets to its sockets; a socket runs the
application's handlers and keeps the ack bookkeeping. Nothing here touches a transport: the client
only calls ``send``/``close`` on its session, which makes the whole layer testable with a fake
session.

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

import secrets
from collections.abc import Callable
from enum import Enum
from types import CoroutineType
from typing import Any, Final

from twisted.internet.defer import Deferred, fail, maybeDeferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from ..engineio import PARSE_ERROR, PROTOCOL_QUERY_KEYS, HandshakeInfo
from .errors import AckTimeout, ConnectionRefused, Disconnected
from .interfaces import (
    CLIENT_DISCONNECT,
    CONNECT_TIMEOUT,
    CONNECTION_REFUSED,
    FORCED_CLOSE,
    INTERNAL_ERROR,
    INVALID_STATE,
    SERVER_DISCONNECT,
    ClientHost,
    EngineSession,
)
from .namespace import Namespace
from .packet import (
    MAX_ACK_ID,
    EncodedPacket,
    Packet,
    PacketDecoder,
    PacketError,
    PacketType,
    ascii_packet,
    check_event_name,
    encode_packet,
    split_namespace_query,
)

log = Logger()

#: Packets a client may send to a namespace whose connect handler has not finished yet; they are
#: replayed once it has. A client that floods a pending namespace beyond this is dropped, and so is
#: one whose queued attachments there exceed the Engine.IO ``max_payload``.
MAX_QUEUED_BEFORE_CONNECT: Final = 1000

#: The CONNECT_ERROR message when a connect handler fails with something other than
#: ConnectionRefused.
GENERIC_REFUSAL: Final = "Internal server error"


def ack_arguments(result: Any) -> list[Any]:
    """An event handler's result as ack arguments: None → none, a tuple → its items, else one."""
    if result is None:
        return []
    if isinstance(result, tuple):
        return list(result)
    return [result]


class _State(Enum):
    CONNECTING = "connecting"
    CONNECTED = "connected"
    DISCONNECTED = "disconnected"


# Looked up on every emit; an enum member costs more to fetch from its class than a global.
_CONNECTED = _State.CONNECTED


class Socket:
    """
    One client's membership of one namespace.

    Created when the client asks to join; ``connected`` turns true once every connect handler has
    accepted it. Emits made before that (typically from a connect handler) are held and sent right
    after the CONNECT reply, so the client sees them in order.
    """

    def __init__(
        self, client: Client, namespace: Namespace[Socket], auth: Any, socket_id: str | None = None
    ) -> None:
        self.id: str = socket_id if socket_id is not None else secrets.token_urlsafe(15)
        self.namespace = namespace
        self.client = client
        self.auth = auth
        self._state = _State.CONNECTING
        self._outbox: list[EncodedPacket] = []
        self._inbox: list[Packet] = []
        self._inbox_bytes = 0
        self._next_ack_id = 0
        self._acks: dict[int, tuple[Deferred[list[Any]], IDelayedCall | None]] = {}

    def __repr__(self) -> str:
        return f"<Socket {self.id} of {self.namespace.name} ({self._state.value})>"

    @property
    def connected(self) -> bool:
        return self._state is _State.CONNECTED

    @property
    def connecting(self) -> bool:
        """Do its connect handlers still run (neither connected yet nor gone)?"""
        return self._state is _State.CONNECTING

    def emit(self, event: str, *args: Any) -> None:
        """Send an event to this client; bytes anywhere in ``args`` travel as binary attachments."""
        check_event_name(event)
        self.send_encoded(
            encode_packet(Packet(PacketType.EVENT, self.namespace.name, [event, *args]))
        )

    def call(self, event: str, *args: Any, timeout: float | None = None) -> Deferred[list[Any]]:
        """
        Emit an event that asks for an ack; the Deferred fires with the ack's arguments.

        It fails with :class:`AckTimeout` after ``timeout`` seconds without an ack, and with
        :class:`Disconnected` if the socket goes away first. Cancelling it forgets the ack.
        """
        check_event_name(event)
        if self._state is _State.DISCONNECTED:
            return fail(Disconnected(f"socket {self.id} is disconnected"))
        ack_id = self._next_ack_id
        self._next_ack_id = 0 if ack_id >= MAX_ACK_ID else ack_id + 1
        encoded = encode_packet(
            Packet(PacketType.EVENT, self.namespace.name, [event, *args], ack_id)
        )

        def forget(_: Deferred[list[Any]]) -> None:
            entry = self._acks.pop(ack_id, None)
            if entry is not None and entry[1] is not None and entry[1].active():
                entry[1].cancel()

        waiting: Deferred[list[Any]] = Deferred(forget)
        timer = None
        if timeout is not None:
            timer = self.client.reactor.callLater(timeout, self._ack_timed_out, ack_id, timeout)
        self._acks[ack_id] = (waiting, timer)
        self.send_encoded(encoded)
        return waiting

    def disconnect(self, reason: str = SERVER_DISCONNECT) -> None:
        """
        Leave the namespace from the server side: the client is told, disconnect handlers run with
        ``reason``.
        """
        self._terminate(reason, tell_client=True)

    def send_encoded(self, encoded: EncodedPacket) -> None:
        """
        Send a packet made by :func:`~.packet.encode_event` for this socket's namespace: one encoding serves
        every socket that sends it (as :meth:`Namespace.emit` does for all of its sockets). Held until the
        CONNECT reply while connecting, dropped once disconnected.
        """
        if self._state is _CONNECTED:
            self.client.send_encoded(encoded)
        elif self._state is _State.CONNECTING:
            self._outbox.append(encoded)
        else:
            log.debug("emit on disconnected socket {socket} dropped", socket=self.id)

    # -- called by its Client --------------------------------------------------------------------

    def accept(self) -> None:
        """Every connect handler said yes: reply CONNECT, then deliver what waited for it."""
        self._state = _State.CONNECTED
        self.namespace.joined(self)
        reply = None if self.client.legacy else {"sid": self.id}
        self.client.send_encoded(
            encode_packet(Packet(PacketType.CONNECT, self.namespace.name, reply))
        )
        outbox, self._outbox = self._outbox, []
        for encoded in outbox:
            self.send_encoded(encoded)
        inbox, self._inbox = self._inbox, []
        self._inbox_bytes = 0
        for packet in inbox:
            if not self.connected:
                break
            self.receive(packet)

    def receive(self, packet: Packet, attachment_bytes: int = 0) -> None:
        """
        Handle a packet for this namespace from the client (queued while connecting, where
        ``attachment_bytes``, what its attachments took, counts against the bound).
        """
        if self._state is _State.CONNECTING:
            if packet.type is PacketType.DISCONNECT:
                self._terminate(CLIENT_DISCONNECT, tell_client=False)
            else:
                self._hold(packet, attachment_bytes)
            return
        if self._state is _State.DISCONNECTED:
            return
        if packet.type is PacketType.EVENT:
            self._event(packet)
        elif packet.type is PacketType.ACK:
            self._ack(packet)
        elif packet.type is PacketType.DISCONNECT:
            self._terminate(CLIENT_DISCONNECT, tell_client=False)

    def drop(self, reason: str) -> None:
        """
        Leave the namespace without a word to the client: its session closed, or a connect handler
        refused it (the client gets the refusal instead). Disconnect handlers run if it was connected.
        """
        self._terminate(reason, tell_client=False)

    # -- internals -------------------------------------------------------------------------------

    def _hold(self, packet: Packet, attachment_bytes: int) -> None:
        """Queue a packet until the connect handlers are done, within the bounds for untrusted input."""
        self._inbox_bytes += attachment_bytes
        if (
            len(self._inbox) >= MAX_QUEUED_BEFORE_CONNECT
            or self._inbox_bytes > self.client.max_payload
        ):
            log.warn(
                "Closing client {sid}: it sent {count} packets ({size} bytes of attachments) to "
                "{namespace} before it was connected",
                sid=self.client.sid,
                count=len(self._inbox) + 1,
                size=self._inbox_bytes,
                namespace=self.namespace.name,
            )
            self.client.close(INVALID_STATE)
            return
        self._inbox.append(packet)

    def _event(self, packet: Packet) -> None:
        event, *args = packet.data
        group = self.namespace.group
        handler = group.event_handler(event)
        if handler is None:
            handler = group.other_events_handler
            if handler is None:
                log.debug(
                    "No handler for event {event!r} on {namespace}",
                    event=event,
                    namespace=self.namespace.name,
                )
                return
            args = [event, *args]
        try:
            result = handler(self, *args)
            if not isinstance(result, Deferred | Failure | CoroutineType):
                # A plain value, the usual case (once per client message): no Deferred to build.
                if packet.id is not None:
                    self._send_ack(result, packet.id)
                return
        except Exception:
            self._handler_failed(None, event)
            return
        # An asynchronous handler: maybeDeferred turns each of these into a Deferred.
        pending = maybeDeferred(lambda: result)
        if packet.id is not None:
            pending.addCallback(self._send_ack, packet.id)
        pending.addErrback(self._handler_failed, event)

    def _send_ack(self, value: Any, ack_id: int) -> None:
        if not self.connected:
            return
        packet = Packet(PacketType.ACK, self.namespace.name, ack_arguments(value), ack_id)
        self.send_encoded(encode_packet(packet))

    def _handler_failed(self, failure: Failure | None, event: str) -> None:
        """Log a handler's failure (``None``: the exception being handled)."""
        log.failure(
            "Handler of event {event!r} on {namespace} failed",
            failure,
            event=event,
            namespace=self.namespace.name,
        )

    def _ack(self, packet: Packet) -> None:
        assert packet.id is not None  # the codec refuses ACKs without an id
        entry = self._acks.pop(packet.id, None)
        if entry is None:
            log.debug("Ack {id} from {socket} matches no call", id=packet.id, socket=self.id)
            return
        waiting, timer = entry
        if timer is not None and timer.active():
            timer.cancel()
        waiting.callback(list(packet.data))

    def _ack_timed_out(self, ack_id: int, timeout: float) -> None:
        entry = self._acks.pop(ack_id, None)
        if entry is not None:
            entry[0].errback(AckTimeout(f"no ack within {timeout} seconds"))

    def _terminate(self, reason: str, tell_client: bool) -> None:
        """Leave the namespace once; only a socket that was connected runs disconnect handlers."""
        state = self._state
        if state is _State.DISCONNECTED:
            return
        self._state = _State.DISCONNECTED
        self._outbox = []
        self._inbox = []
        self._inbox_bytes = 0
        if tell_client:
            if state is _State.CONNECTED:
                self.client.send_encoded(
                    encode_packet(Packet(PacketType.DISCONNECT, self.namespace.name))
                )
            else:
                self.client.refuse(self.namespace.name, {"message": "Connection refused"})
        self.client.forget(self)
        self.namespace.left(self, was_connected=state is _State.CONNECTED)
        acks, self._acks = self._acks, {}
        for waiting, timer in acks.values():
            if timer is not None and timer.active():
                timer.cancel()
            waiting.errback(Disconnected(reason))
        if state is _State.CONNECTED:
            for handler in self.namespace.group.disconnect_handlers:
                try:
                    handler(self, reason)
                except Exception:
                    log.failure(
                        "Disconnect handler on {namespace} failed", namespace=self.namespace.name
                    )


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

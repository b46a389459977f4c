"""
One client's membership of one namespace (:class:`Socket`): the application's handle for emitting,
calling with an ack and disconnecting, and the per-namespace state behind it (packets held while the
connect handlers run, acks awaited).

Split from :mod:`.client` because a socket's rules (what may be queued before CONNECT, how acks
time out, who runs disconnect handlers) are the application-facing half; the client owns the
Engine.IO session and routes packets to its sockets. Nothing here touches a transport.
"""

from __future__ import annotations

import secrets
from enum import Enum
from types import CoroutineType
from typing import TYPE_CHECKING, Any, Final

from twisted.internet.defer import Deferred, fail, maybeDeferred
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from .errors import AckTimeout, Disconnected
from .interfaces import CLIENT_DISCONNECT, INVALID_STATE, SERVER_DISCONNECT
from .namespace import Namespace
from .packet import MAX_ACK_ID, EncodedPacket, Packet, PacketType, check_event_name, encode_packet

if TYPE_CHECKING:
    from .client import Client

log = Logger()

#: Packets a client may send to a namespace whose connect handler has not finished yet; they are
#: replayed once it has. A client that floods a pending namespace beyond this is dropped, and so is
#: one whose queued attachments there exceed the Engine.IO ``max_payload``.
MAX_QUEUED_BEFORE_CONNECT: Final = 1000


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

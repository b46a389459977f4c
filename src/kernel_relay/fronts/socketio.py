"""
The socket.io front: each kernel channel as a socket.io namespace, translated into the relay core.

- ``/shell/<id>``, ``/stdin/<id>``, ``/iopub/<id>``, ``/control/<id>`` are a kernel's channels (``/stdio/<id>``
  is stdin too, as enchannel-socketio-backend 0.1.0 names it); Jupyter messages travel as the event
  ``"msg"`` both ways, acknowledged with the ``msg_id`` the relay sent, or ``null`` when refused.
- One socket.io client (one Engine.IO session, however many namespaces it joins) is one client of the core.
- The core's events (:mod:`kernel_relay.relay.events`) become ``"error"`` and ``"replay_gap"`` events
  (:mod:`.event_words`); a client the core lets go is
  disconnected from the namespace. Tokens come from the CONNECT auth payload, the handshake query or its
  ``Authorization`` header; a resuming iopub client's ``since``/``replay`` from the auth payload or, for
  socket.io 1.x/2.x, the namespace query.

Everything else (admission, routing, the journal, kernel events) is the core's (:mod:`kernel_relay.relay.core`).
"""

from __future__ import annotations

import re
from typing import Any, Final

from twisted.internet.defer import Deferred

from ..auth import token_from_auth_payload, token_from_authorization
from ..engineio import SERVER_SHUTDOWN, SLOW_CLIENT, EngineIOSession
from ..kernels import CHANNELS, IOPUB, STDIN
from ..relay.client import msg_id_of
from ..relay.core import Refused, RelayCore
from ..relay.events import ClientEvent
from ..relay.journal import Resume
from ..relay.payload import Outgoing
from ..socketio import Client as SocketIOClient
from ..socketio import (
    ConnectionRefused,
    EncodedPacket,
    RawJSON,
    Socket,
    SocketIOServer,
    encode_event,
)
from .event_words import details_of, event_name
from .socketio_forms import client_payload, is_one_text, json_text, requested_resume

# enchannel-socketio-backend 0.1.0, the original's client, joins /stdio/<id> for the stdin channel.
CHANNEL_ALIASES: Final = {"stdio": STDIN}
NAMESPACE_PATTERN: Final = re.compile(
    rf"/(?P<channel>{'|'.join((*CHANNELS, *CHANNEL_ALIASES))})/(?P<kernel_id>[^/]+)"
)
MESSAGE_EVENT: Final = "msg"
#: Refusals that say more than their message carry it as data, for socket.io 1.x/2.x (they see only that).
_CODES_WITH_DATA: Final = frozenset({401, 403, 429, 503})
#: What a 401 adds for a socket.io client: where its token goes.
TOKEN_HINT: Final = ': connect with auth {"token": "<token>"}'
_NO_RESUME: Final = Resume(None, False)


def _json_kind(value: object) -> str:
    """What a decoded JSON value is, in JSON's words, for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, bytes | bytearray):
        return "binary data"
    return type(value).__name__


def _unusable(args: tuple[Any, ...]) -> str | None:
    """Why the arguments of a ``"msg"`` event are no Jupyter message, or None."""
    if len(args) != 1:
        return f'a "msg" event takes exactly one argument, a Jupyter message object; it had {len(args)}'
    if not isinstance(args[0], dict):
        return f'the argument of a "msg" event must be a Jupyter message object, not {_json_kind(args[0])}'
    return None


def _channel_and_kernel(socket: Socket) -> tuple[str, str]:
    params = socket.namespace.params
    channel = params["channel"]
    return CHANNEL_ALIASES.get(channel, channel), params["kernel_id"]


#: Namespaces whose ``"msg"`` packet head :class:`_LastEncoded` keeps (one per kernel channel in use).
_MAX_HEADS: Final = 4096


class _LastEncoded:
    """
    The last message encoded for a namespace: a broadcast hands the same message to every client of a kernel's
    iopub, and one encoding serves them all.

    A message that is one JSON text (:func:`is_one_text`, nearly all) is joined straight into its packet's text:
    the packet's head (``2/iopub/<id>,["msg",``) is what :func:`encode_event` writes before an argument, taken
    from it once per namespace, so the text is the same, made in one join instead of two.
    """

    __slots__ = ("_heads", "encoded", "message", "namespace")

    def __init__(self) -> None:
        self.namespace = ""
        self.message: object = None
        self.encoded: EncodedPacket = []
        self._heads: dict[str, str] = {}

    def of(self, namespace: str, message: Outgoing) -> EncodedPacket:
        if message is not self.message or namespace != self.namespace:
            if is_one_text(message):
                head = self._heads.get(namespace) or self._head(namespace)
                self.encoded = [json_text(message, head, "]")]
            else:
                self.encoded = encode_event(namespace, MESSAGE_EVENT, client_payload(message))
            self.namespace, self.message = namespace, message
        return self.encoded

    def _head(self, namespace: str) -> str:
        # The packet of an argument written 0, less the 0]: the text before any argument.
        text = str(encode_event(namespace, MESSAGE_EVENT, RawJSON("0"))[0])
        if len(self._heads) >= _MAX_HEADS:
            self._heads.clear()
        head = self._heads[namespace] = text[:-2]
        return head


class SocketIOClientOfCore:
    """One socket.io client as a :class:`~kernel_relay.relay.core.RelayClient`: its sockets by kernel channel."""

    def __init__(self, client: SocketIOClient, last: _LastEncoded) -> None:
        self._client = client
        self._last = last
        self.sockets: dict[tuple[str, str], Socket] = {}
        # Bytes sent to sockets still connecting: they wait in the socket until its CONNECT reply.
        self._connecting: dict[Socket, int] = {}

    @property
    def client_id(self) -> str:
        return self._client.sid

    @property
    def address(self) -> str:
        return self._client.handshake.remote_address

    @property
    def session(self) -> object:
        return self._client.session

    @property
    def backlog(self) -> int:
        waiting = self._client.session.buffered_bytes
        connecting = self._connecting
        if connecting:
            for socket in [s for s in connecting if not s.connecting]:
                del connecting[socket]
            waiting += sum(connecting.values())
        return waiting

    def deliver(self, kernel_id: str, channel: str, message: Outgoing) -> None:
        socket = self.sockets.get((kernel_id, channel))
        if socket is not None:
            encoded = self._last.of(socket.namespace.name, message)
            if socket.connecting:  # a replay handed out while the socket joins
                self._connecting[socket] = self._connecting.get(socket, 0) + sum(
                    len(part) for part in encoded
                )
            socket.send_encoded(encoded)

    def tell(self, kernel_id: str, channel: str, event: ClientEvent) -> None:
        socket = self.sockets.get((kernel_id, channel))
        if socket is not None:
            socket.emit(event_name(event), details_of(event, kernel_id))

    def let_go(self, kernel_id: str, channel: str, reason: str) -> None:
        socket = self.sockets.get((kernel_id, channel))
        if socket is not None:
            socket.disconnect(reason)


class SocketIOFront:
    """Serves the kernel namespaces of a socket.io server from a relay core."""

    def __init__(self, socketio: SocketIOServer, core: RelayCore) -> None:
        self._socketio = socketio
        self._core = core
        self._clients: dict[str, SocketIOClientOfCore] = {}
        self._last = _LastEncoded()
        group = socketio.of(NAMESPACE_PATTERN)
        group.on_connect(self._connected)
        group.on_disconnect(self._disconnected)
        group.on(MESSAGE_EVENT, self._received)
        group.on_other_events(self._unknown_event)

    def close(self, reason: str = SERVER_SHUTDOWN) -> None:
        """Disconnect every client (the relay is stopping)."""
        self._socketio.close(reason)

    def _client_of(self, socket: Socket) -> SocketIOClientOfCore:
        """
        The core's view of the socket's client, made when it joins its first kernel channel; the core hears
        when its session drained (to hand on its replays) until :meth:`_forget`.
        """
        client = self._clients.get(socket.client.sid)
        if client is None:
            client = self._clients[socket.client.sid] = SocketIOClientOfCore(
                socket.client, self._last
            )
            session = socket.client.session
            if isinstance(session, EngineIOSession):
                core = self._core
                session.on_drained = lambda _: core.drained(client)
        return client

    def _forget(self, client: SocketIOClientOfCore) -> None:
        del self._clients[client.client_id]
        session = client.session
        if isinstance(session, EngineIOSession):
            session.on_drained = None  # and with it the reference cycle through the closure

    def _connected(self, socket: Socket, auth: Any) -> Deferred[None] | None:
        channel, kernel_id = _channel_and_kernel(socket)
        waiting = self._core.find_kernel(kernel_id)
        if waiting is None:
            self._admit(socket, auth, channel, kernel_id)
            return None
        # A kernel this relay has not heard of yet (of its fleet, say): looked up before it is refused.
        return waiting.addCallback(
            lambda _: self._admit(socket, auth, channel, kernel_id) if socket.connecting else None
        )

    def _admit(self, socket: Socket, auth: Any, channel: str, kernel_id: str) -> None:
        client = self._client_of(socket)
        handshake = socket.client.handshake
        credentials = (
            token_from_auth_payload(auth),
            handshake.query.get("token"),
            token_from_authorization(handshake.headers.get("authorization")),
        )
        try:
            kernel = self._core.admit(client, kernel_id, channel, credentials)
        except Refused as refusal:
            raise self._refused(client, refusal) from None
        resume = requested_resume(auth, handshake.query.items()) if channel == IOPUB else _NO_RESUME
        client.sockets[(kernel.id, channel)] = socket
        try:
            self._core.attach(client, kernel, channel, resume)
        except Refused as refusal:
            del client.sockets[(kernel.id, channel)]
            raise self._refused(client, refusal) from None

    def _refused(self, client: SocketIOClientOfCore, refusal: Refused) -> ConnectionRefused:
        """The CONNECT_ERROR a refusal of the core becomes; a client left with no namespace is forgotten."""
        if not client.sockets:
            self._forget(client)
        message = refusal.message + (TOKEN_HINT if refusal.code == 401 else "")
        data = None
        if refusal.code in _CODES_WITH_DATA:
            data = {"code": refusal.code, "message": message}
        return ConnectionRefused(message, data)

    def _disconnected(self, socket: Socket, reason: str) -> None:
        if reason == SLOW_CLIENT:
            self._core.metrics.error("slow_client")
        channel, kernel_id = _channel_and_kernel(socket)
        client = self._clients.get(socket.client.sid)
        if client is None or client.sockets.get((kernel_id, channel)) is not socket:
            return
        del client.sockets[(kernel_id, channel)]
        if not client.sockets:
            self._forget(client)
        self._core.detach(client, kernel_id, channel, reason)

    def _received(self, socket: Socket, *args: Any) -> str | None:
        """Relay a client's message to the kernel; the ack, if asked for, is the message's ``msg_id``."""
        channel, kernel_id = _channel_and_kernel(socket)
        client = self._client_of(socket)
        message = args[0] if len(args) == 1 else None
        try:
            problem = _unusable(args) if channel != IOPUB else None
            if problem is not None:
                self._core.refuse(client, kernel_id, channel, problem, None)
            return self._core.receive(
                client, kernel_id, channel, message if isinstance(message, dict) else {}
            )
        except Refused:
            return None

    def _unknown_event(self, socket: Socket, event: str, *args: Any) -> None:
        """Any event but ``"msg"``: an error event says so, and an ack, if asked for, is null."""
        channel, kernel_id = _channel_and_kernel(socket)
        try:
            self._core.refuse(
                self._client_of(socket),
                kernel_id,
                channel,
                f'unknown event {event!r}: the relay takes only "msg" events (a Jupyter message each)',
                msg_id_of(args[0]) if args else None,
            )
        except Refused:
            pass

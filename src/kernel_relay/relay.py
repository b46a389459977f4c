"""
The mapping between socket.io namespaces and kernel channels: who receives which message.

- ``/iopub/<id>``: every client of the namespace receives every iopub message of the kernel.
- ``/shell/<id>``, ``/control/<id>``, ``/stdin/<id>``: each socket.io client (one Engine.IO session, however
  many namespaces it multiplexes) gets its own ZMQ identity towards the kernel, so the kernel's replies and its
  ``input_request``\\ s reach exactly the client whose request caused them.
- A kernel that stops or dies is announced on iopub with ``execution_state: "dead"`` and its clients are
  disconnected.

Admission and limits (:class:`RelayLimits`): a namespace connect must carry the relay's token when one is
set (see :mod:`.auth`), a kernel takes at most ``max_clients_per_kernel`` clients, and a kernel message
bigger than ``max_message_size`` is not forwarded: its recipients get an ``"error"`` event saying so.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from .auth import Scope, TokenAuth, token_from_auth_payload, token_from_authorization
from .kernels import (
    InvalidMessage,
    Kernel,
    KernelClient,
    KernelMessage,
    KernelRegistry,
    UnknownKernel,
)
from .metrics import TO_CLIENT, TO_KERNEL, RelayMetrics
from .payload import Payload, client_payload
from .replay import IopubJournal, requested_resume
from .socketio import ConnectionRefused, Socket, SocketIOServer

log = Logger()

CHANNELS = ("shell", "stdin", "iopub", "control")
# enchannel-socketio-backend 0.1.0, the original's client, joins /stdio/<id> for the stdin channel.
CHANNEL_ALIASES = {"stdio": "stdin"}
NAMESPACE_PATTERN = re.compile(
    r"/(?P<channel>shell|stdin|stdio|iopub|control)/(?P<kernel_id>[^/]+)"
)
NAMESPACE_PREFIXES = (*CHANNELS, *CHANNEL_ALIASES)
MESSAGE_EVENT = "msg"
ERROR_EVENT = "error"
#: Sent to a resuming iopub client, before its messages, when some it asked for are not kept.
REPLAY_GAP_EVENT = "replay_gap"
#: Roughly the bytes of a status message the relay makes (for metrics and the journal's bound).
STATUS_SIZE = 300
#: The Engine.IO close reason of a client dropped over ``max_buffered_bytes``.
SLOW_CLIENT = "slow client"
#: A joining iopub client gets a replay only while less than this is waiting to go out to it, so that
#: joining again and again without reading cannot pile up copies of the journal.
REPLAY_BACKLOG = 1024 * 1024


def channel_of(socket: Socket) -> str:
    """The kernel channel a socket's namespace stands for, with aliases resolved."""
    channel = socket.namespace.params["channel"]
    return CHANNEL_ALIASES.get(channel, channel)


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


def short_id(kernel_id: str) -> str:
    """The first block of a kernel id: enough to tell kernels apart in a log line."""
    return kernel_id.split("-", 1)[0][:8]


def relay_status(kernel: Kernel, execution_state: str) -> dict[str, Any]:
    """
    An iopub ``status`` message made by the relay, for states the kernel cannot announce itself
    (``dead``, ``restarting``) or that its clients would miss while its sockets reconnect.
    """
    return {
        "header": {
            "msg_id": uuid.uuid4().hex,
            "msg_type": "status",
            "username": "kernel-relay",
            "session": kernel.id,
            "date": datetime.now(UTC).isoformat(),
            "version": "5.3",
        },
        "parent_header": {},
        "metadata": {},
        "content": {"execution_state": execution_state},
        "channel": "iopub",
    }


@dataclass(frozen=True)
class ReplayOptions:
    """Bounds of each kernel's iopub journal (see :mod:`.replay`); ``max_bytes`` 0 keeps nothing."""

    max_bytes: int = 8 * 1024 * 1024
    max_age: float = 600.0


@dataclass(frozen=True)
class RelayLimits:
    """Per-kernel and per-message bounds; ``None`` means unbounded."""

    max_clients_per_kernel: int | None = None
    max_message_size: int | None = None


@dataclass
class ClientLink:
    """One socket.io client's private line to one kernel: its ZMQ sockets and its namespaces by channel."""

    kernel_client: KernelClient
    sockets: dict[str, Socket] = field(default_factory=dict)


class Relay:
    """Serves the kernel namespaces of a socket.io server from the kernels of a registry."""

    def __init__(
        self,
        socketio: SocketIOServer,
        kernels: KernelRegistry,
        *,
        auth: TokenAuth | None = None,
        limits: RelayLimits | None = None,
        metrics: RelayMetrics | None = None,
        replay: ReplayOptions | None = None,
        clock: IReactorTime | None = None,
    ) -> None:
        self._socketio = socketio
        self._kernels = kernels
        self._replay = replay or ReplayOptions()
        if clock is None:
            from twisted.internet import reactor as default_reactor

            clock = cast(IReactorTime, default_reactor)
        self._clock = clock
        self._journals: dict[str, IopubJournal] = {}
        self._auth = auth or TokenAuth()
        self._limits = limits or RelayLimits()
        self.metrics = metrics or RelayMetrics()
        self.metrics.watch(lambda: len(kernels), self.clients_by_channel)
        self._links: dict[tuple[str, str], ClientLink] = {}
        group = socketio.of(NAMESPACE_PATTERN)
        group.on_connect(self._connected)
        group.on_disconnect(self._disconnected)
        group.on(MESSAGE_EVENT, self._received)
        group.on_other_events(self._unknown_event)
        kernels.add_observer(self)

    def client_count(self, kernel_id: str) -> int:
        """How many distinct socket.io clients are connected to any channel of the kernel."""
        clients: set[str] = set()
        for prefix in NAMESPACE_PREFIXES:
            namespace = self._socketio.namespace(f"/{prefix}/{kernel_id}")
            if namespace is not None:
                clients.update(socket.client.sid for socket in namespace.sockets.values())
        return len(clients)

    def clients_by_channel(self) -> dict[str, int]:
        """How many sockets are joined to each channel, over every kernel (for metrics)."""
        counts = dict.fromkeys(CHANNELS, 0)
        for kernel in self._kernels.kernels():
            for prefix in NAMESPACE_PREFIXES:
                namespace = self._socketio.namespace(f"/{prefix}/{kernel.id}")
                if namespace is not None:
                    channel = CHANNEL_ALIASES.get(prefix, prefix)
                    counts[channel] += len(namespace.sockets)
        return counts

    # KernelObserver

    def kernel_started(self, kernel: Kernel) -> None:
        self._journals[kernel.id] = IopubJournal(
            self._clock, max_bytes=self._replay.max_bytes, max_age=self._replay.max_age
        )

        def forward(message: KernelMessage) -> None:
            size = message.size
            if self._too_big(message, size):
                namespace = self._socketio.namespace(f"/iopub/{kernel.id}")
                if namespace is not None:
                    namespace.emit(ERROR_EVENT, self._oversized(kernel, message, size))
                return
            self.publish_iopub(kernel.id, message, size, message.msg_type)

        kernel.add_iopub_listener(forward)

    def publish_iopub(
        self,
        kernel_id: str,
        message: KernelMessage | dict[str, Any],
        size: int = 0,
        msg_type: str = "status",
    ) -> None:
        """
        Number one iopub message (from the kernel or made by the relay), keep it in the kernel's journal,
        and send it to every client of the kernel's iopub namespace.
        """
        journal = self._journals.get(kernel_id)
        namespace = self._socketio.namespace(f"/iopub/{kernel_id}")
        if namespace is None or not len(namespace):
            if journal is not None:
                journal.keep(message, size, msg_type)
            return
        payload: Payload
        if journal is not None:
            payload = journal.record(message, size, msg_type)
        elif isinstance(message, KernelMessage):
            payload = client_payload(message)
        else:
            payload = message
        self.metrics.relayed(TO_CLIENT, size)
        namespace.emit(MESSAGE_EVENT, payload)

    def _too_big(self, message: KernelMessage, size: int) -> bool:
        limit = self._limits.max_message_size
        return limit is not None and size > limit

    def _oversized(self, kernel: Kernel, message: KernelMessage, size: int) -> dict[str, Any]:
        """The ``"error"`` event payload for a kernel message that is over the size limit."""
        self.metrics.error("oversized_message")
        reason = (
            f"a {message.msg_type} message of {size} bytes from the kernel exceeds the relay's "
            f"limit of {self._limits.max_message_size} bytes and was not forwarded"
        )
        log.warn(
            "Kernel {kernel} sent {msg_type} on {channel}: {size} bytes, over the limit; not forwarded",
            kernel=short_id(kernel.id),
            msg_type=message.msg_type,
            channel=message.channel,
            size=size,
        )
        return {
            "message": reason,
            "msg_id": message.msg_id,
            "msg_type": message.msg_type,
            "parent_msg_id": message.parent_msg_id,
            "channel": message.channel,
        }

    def kernel_stopped(self, kernel: Kernel, reason: str) -> None:
        if reason.startswith("died"):
            self.metrics.error("kernel_died")
        self.publish_iopub(kernel.id, relay_status(kernel, "dead"), STATUS_SIZE)
        for prefix in NAMESPACE_PREFIXES:
            namespace = self._socketio.namespace(f"/{prefix}/{kernel.id}")
            if namespace is not None:
                namespace.disconnect_all(f"kernel {reason}")
        for key in [key for key in self._links if key[1] == kernel.id]:
            self._links.pop(key).kernel_client.close()
        self._journals.pop(kernel.id, None)
        self._auth.scoped.revoke_kernel(kernel.id)

    def stopping(self) -> None:
        """
        The relay is stopping, and will shut down every kernel: tell every client first. Iopub clients see
        each kernel ``dead``, as when a kernel alone is shut down, then every client is disconnected.
        """
        for kernel in self._kernels.kernels():
            self.publish_iopub(kernel.id, relay_status(kernel, "dead"), STATUS_SIZE)
        self._socketio.close("server shutting down")

    def kernel_restarting(self, kernel: Kernel) -> None:
        self.publish_iopub(kernel.id, relay_status(kernel, "restarting"), STATUS_SIZE)

    def kernel_restarted(self, kernel: Kernel) -> None:
        self.publish_iopub(kernel.id, relay_status(kernel, "starting"), STATUS_SIZE)

    def kernel_ready(self, kernel: Kernel) -> None:
        # The kernel's own statuses went out while the relay's subscription was reconnecting.
        self.publish_iopub(kernel.id, relay_status(kernel, kernel.execution_state), STATUS_SIZE)

    # HeartbeatListener

    def kernel_unreachable(self, kernel: Kernel, silent_for: float) -> None:
        """Tell every client of the kernel that it stopped answering, instead of leaving them waiting."""
        self.metrics.error("kernel_unreachable")
        error = {
            "message": f"kernel {kernel.id} has not answered its heartbeat for {silent_for:.0f}s: its "
            "process is frozen or its ZeroMQ ports are unreachable; messages to it wait until it answers "
            "again or is shut down",
            "code": "kernel_unreachable",
            "kernel_id": kernel.id,
        }
        for prefix in NAMESPACE_PREFIXES:
            namespace = self._socketio.namespace(f"/{prefix}/{kernel.id}")
            if namespace is not None:
                namespace.emit(ERROR_EVENT, error)

    def kernel_reachable(self, kernel: Kernel) -> None:
        """Nothing to send: the kernel's own replies and iopub messages show it is back."""

    # socket.io handlers

    def _connected(self, socket: Socket, auth: Any) -> None:
        channel = channel_of(socket)
        kernel_id = socket.namespace.params["kernel_id"]
        handshake = socket.client.handshake
        candidates = (
            token_from_auth_payload(auth),
            handshake.query.get("token"),
            token_from_authorization(handshake.headers.get("authorization")),
        )
        grant = self._auth.grant(candidates)
        if isinstance(grant, Scope) and not grant.allows_channel(kernel_id, channel):
            self.metrics.error("auth")
            log.warn(
                "Refused {address} on {namespace}: its token is limited to {access} access to kernel "
                "{kernel}",
                address=handshake.remote_address,
                namespace=socket.namespace.name,
                access=grant.access,
                kernel=short_id(grant.kernel_id),
            )
            raise ConnectionRefused(grant.refusal, {"code": 403, "message": grant.refusal})
        if grant is False:
            self.metrics.error("auth")
            log.warn(
                "Refused {address} on {namespace}: no valid token",
                address=handshake.remote_address,
                namespace=socket.namespace.name,
            )
            reason = 'Authentication required: connect with auth {"token": "<token>"}'
            # socket.io 1.x/2.x clients see only the data, so it repeats the message.
            raise ConnectionRefused(reason, {"code": 401, "message": reason})
        try:
            kernel = self._kernels.get(kernel_id)
        except UnknownKernel:
            self.metrics.error("connect_refused")
            log.info(
                "Refused {address} on {namespace}: no running kernel has that id",
                address=handshake.remote_address,
                namespace=socket.namespace.name,
            )
            raise ConnectionRefused(f"No running kernel with id {kernel_id}") from None
        limit = self._limits.max_clients_per_kernel
        if limit is not None and not self._is_client_of(socket.client.sid, kernel.id):
            if self.client_count(kernel.id) >= limit:
                self.metrics.error("connect_refused")
                log.warn(
                    "Refused {address} on {namespace}: kernel has {limit} clients already",
                    address=handshake.remote_address,
                    namespace=socket.namespace.name,
                    limit=limit,
                )
                reason = f"Kernel {kernel.id} already has the maximum of {limit} clients"
                raise ConnectionRefused(reason, {"code": 429, "message": reason})
        if channel == "iopub":
            self._replay_to(socket, kernel, auth)
        else:
            key = (socket.client.sid, kernel.id)
            link = self._links.get(key)
            if link is None:
                link = self._links[key] = self._open_link(kernel, socket.client.sid)
            link.sockets[channel] = socket
        log.info(
            "Client {address} connected to {channel} of kernel {kernel}",
            address=socket.client.handshake.remote_address,
            channel=channel,
            kernel=short_id(kernel.id),
        )

    def _replay_to(self, socket: Socket, kernel: Kernel, auth: Any) -> None:
        """
        Give a joining iopub client what it asked for: the messages after ``since``, or the running cell's
        output so far. Queued before the connect is acknowledged, so they arrive before any new message.
        """
        journal = self._journals.get(kernel.id)
        query = socket.client.handshake.query.items()
        since, execution, ignored = requested_resume(auth, query)
        for reason in ignored:
            log.info(
                "Client {address} on {namespace}: {reason}",
                address=socket.client.handshake.remote_address,
                namespace=socket.namespace.name,
                reason=reason,
            )
            socket.emit(ERROR_EVENT, {"message": reason, "msg_id": None})
        if journal is None or (since is None and not execution):
            return
        backlog = socket.client.session.buffered_bytes
        if backlog >= REPLAY_BACKLOG:
            self.metrics.error("replay_gap")
            log.warn(
                "No replay for {address} on {namespace}: {backlog} bytes still wait to go out to it",
                address=socket.client.handshake.remote_address,
                namespace=socket.namespace.name,
                backlog=backlog,
            )
            socket.emit(
                REPLAY_GAP_EVENT,
                {
                    "reason": "backlog",
                    "message": f"nothing was replayed: {backlog} bytes sent earlier still wait to go "
                    "out to this client; join again once it has read them",
                    "last_seq": journal.last_seq,
                    "kernel_id": kernel.id,
                },
            )
            return
        if since is not None:
            replay = journal.since(since)
            if replay.gap is not None:
                self.metrics.error("replay_gap")
                socket.emit(REPLAY_GAP_EVENT, {**replay.gap, "kernel_id": kernel.id})
            messages = replay.messages
        else:
            messages = journal.current_execution()
        for message in messages:
            socket.emit(MESSAGE_EVENT, message)
        self.metrics.replayed(len(messages))
        log.info(
            "Replayed {count} iopub message(s) of kernel {kernel} to {address}",
            count=len(messages),
            kernel=short_id(kernel.id),
            address=socket.client.handshake.remote_address,
        )

    def _open_link(self, kernel: Kernel, client_sid: str) -> ClientLink:
        key = (client_sid, kernel.id)

        def deliver(message: KernelMessage) -> None:
            link = self._links.get(key)
            socket = link.sockets.get(message.channel) if link is not None else None
            recipients = [socket] if socket is not None else self._stdin_fallback(kernel, message)
            if not recipients:
                log.warn(
                    "Kernel {kernel} sent {msg_type} on {channel} to a client that is not connected to "
                    "that channel; it was not delivered",
                    kernel=short_id(kernel.id),
                    msg_type=message.msg_type,
                    channel=message.channel,
                )
                return
            size = message.size
            if self._too_big(message, size):
                for recipient in recipients:
                    recipient.emit(ERROR_EVENT, self._oversized(kernel, message, size))
                return
            self.metrics.relayed(TO_CLIENT, size)
            payload = client_payload(message)
            for recipient in recipients:
                recipient.emit(MESSAGE_EVENT, payload)

        return ClientLink(kernel.open_client(client_sid.encode("utf-8"), deliver))

    def _stdin_fallback(self, kernel: Kernel, message: KernelMessage) -> list[Socket]:
        """
        Every stdin socket of the kernel, for an ``input_request`` whose asker has none of its own.

        enchannel-socketio-backend joins ``/stdio/<id>`` on a second Engine.IO connection, not on the one
        its ``execute_request`` came from. The kernel reads an ``input_reply`` from any stdin identity, so
        whichever stdin client answers is heard.
        """
        if message.channel != "stdin":
            return []
        return [
            socket
            for prefix in ("stdin", "stdio")
            if (namespace := self._socketio.namespace(f"/{prefix}/{kernel.id}")) is not None
            for socket in namespace.sockets.values()
            if socket.connected
        ]

    def _is_client_of(self, client_sid: str, kernel_id: str) -> bool:
        """Has this socket.io client joined another namespace of the kernel already?"""
        for prefix in NAMESPACE_PREFIXES:
            namespace = self._socketio.namespace(f"/{prefix}/{kernel_id}")
            if namespace is not None and any(
                other.client.sid == client_sid and other.connected
                for other in namespace.sockets.values()
            ):
                return True
        return False

    def _disconnected(self, socket: Socket, reason: str) -> None:
        if reason == SLOW_CLIENT:
            self.metrics.error("slow_client")
        channel = channel_of(socket)
        kernel_id = socket.namespace.params["kernel_id"]
        key = (socket.client.sid, kernel_id)
        link = self._links.get(key)
        if link is not None and link.sockets.get(channel) is socket:
            del link.sockets[channel]
            if not link.sockets:
                del self._links[key]
                link.kernel_client.close()
        log.info(
            "Client {address} left {channel} of kernel {kernel} ({reason})",
            address=socket.client.handshake.remote_address,
            channel=channel,
            kernel=short_id(kernel_id),
            reason=reason,
        )

    def _received(self, socket: Socket, *args: Any) -> str | None:
        """Relay a client's message to the kernel; the ack, if asked for, is the message's ``msg_id``."""
        channel = channel_of(socket)
        kernel_id = socket.namespace.params["kernel_id"]
        message = args[0] if len(args) == 1 else None
        if channel == "iopub":
            return self._refuse(
                socket, "iopub is read-only: send requests on shell or control", message
            )
        if len(args) != 1:
            return self._refuse(
                socket,
                f'a "msg" event takes exactly one argument, a Jupyter message object; it had {len(args)}',
                message,
            )
        if not isinstance(message, dict):
            return self._refuse(
                socket,
                'the argument of a "msg" event must be a Jupyter message object, not '
                f"{_json_kind(message)}",
                message,
            )
        buffers = message.get("buffers") or []
        if buffers and (
            not isinstance(buffers, list) or not all(isinstance(b, bytes) for b in buffers)
        ):
            return self._refuse(socket, "buffers must be a list of binary attachments", message)
        link = self._links.get((socket.client.sid, kernel_id))
        if link is None:
            return self._refuse(socket, f"kernel {kernel_id} is no longer running", message)
        try:
            msg_id = link.kernel_client.send(channel, message, buffers)
        except InvalidMessage as error:
            return self._refuse(socket, str(error), message)
        self.metrics.relayed(TO_KERNEL, link.kernel_client.last_sent_bytes)
        return msg_id

    def _unknown_event(self, socket: Socket, event: str, *args: Any) -> None:
        """Any event but ``"msg"``: an error event says so, and an ack, if asked for, is null."""
        self._refuse(
            socket,
            f'unknown event {event!r}: the relay takes only "msg" events (a Jupyter message each)',
            args[0] if args else None,
        )

    def _refuse(self, socket: Socket, reason: str, message: object) -> str | None:
        """Tell the client why its message was not relayed; never drop it silently."""
        self.metrics.error("refused_message")
        header = message.get("header") if isinstance(message, dict) else None
        msg_id = header.get("msg_id") if isinstance(header, dict) else None
        log.warn(
            "Refused a message from {address} on {namespace}: {reason}",
            address=socket.client.handshake.remote_address,
            namespace=socket.namespace.name,
            reason=reason,
        )
        socket.emit(ERROR_EVENT, {"message": reason, "msg_id": msg_id})
        return None

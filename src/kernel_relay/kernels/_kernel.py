"""
One running kernel as the relay sees it: its iopub stream and the clients talking to it.

ZMQ routing does the per-client work: each ``KernelClient`` owns DEALER sockets with its own
identity on shell, control and stdin, so the kernel's ROUTER sockets send replies (and
``input_request``) back to exactly the client that asked. Every incoming message is verified with
the kernel's key before anyone sees it.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any

import zmq
from jupyter_client.session import Session
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from ._errors import InvalidMessage, UnknownKernel
from ._messages import (
    CLIENT_CHANNELS,
    STDIN,
    Frame,
    KernelMessage,
    MessageRejected,
    Signer,
    build_client_message,
    decode_frames,
    encode_frames,
    iso_date,
    session_signer,
)
from ._zmq import KERNEL_HWM, CurveKeys, FrameSocket, SocketOpener, channel_url

MessageCallback = Callable[[KernelMessage], None]

#: The relay's ZMQ identity on heartbeat channels (clients' identities are their socket.io ids): one per
#: process, since the relays of a fleet all watch the same kernels.
HEARTBEAT_ID = b"kernel-relay-heartbeat-" + uuid.uuid4().hex[:12].encode()

_log = Logger()

#: How long a closed client's last requests (sent as it closed) may take to reach the kernel.
FLUSH_LINGER = 1.0
#: At most this many messages of a client wait for its sockets to connect (ZeroMQ's own queue holds as many).
MAX_HELD = 1000


def _iso_now(clock: IReactorTime) -> str:
    return iso_date(clock.seconds())


def _new_msg_id() -> str:
    return uuid.uuid4().hex


class KernelClient:
    """
    One client's shell, control and stdin connection to a kernel (see ``Kernel.open_client``).

    Its messages are held until its stdin socket is connected: the kernel answers a request on shell with
    an ``input_request`` on stdin, and its stdin ROUTER drops what it sends to an identity it does not know
    yet. (A reply on shell or control comes back over the connection its request came by.)
    """

    def __init__(self, kernel: Kernel, identity: bytes, on_message: MessageCallback) -> None:
        self.kernel = kernel
        self.identity = identity
        self.session_id = uuid.uuid4().hex
        self._on_message = on_message
        self._sockets: dict[str, FrameSocket] = {}
        self.last_sent_bytes = 0
        """Size of the last message ``send`` sent: its JSON parts and buffers (for metrics)."""
        self._held: list[tuple[str, list[Frame]]] | None = []
        try:
            for channel in CLIENT_CHANNELS:
                self._sockets[channel] = kernel._opener.dealer(
                    channel_url(kernel.connection_info, channel),
                    identity,
                    partial(self._received, channel),
                    kernel.curve,
                    watch=channel == STDIN,
                )
            when_connected = getattr(self._sockets[STDIN], "when_connected", None)
            if when_connected is None:
                self._connected()
            else:
                when_connected(self._connected)
        except BaseException:
            self.close()
            raise

    @property
    def closed(self) -> bool:
        return not self._sockets

    def send(self, channel: str, message: Mapping[str, Any], buffers: Sequence[bytes] = ()) -> str:
        """Complete, sign and send a client's message; returns its msg_id. Raises InvalidMessage."""
        if self.closed:
            raise InvalidMessage(f"the connection to kernel {self.kernel.id} is closed")
        built = build_client_message(
            channel,
            message,
            buffers,
            session_id=self.session_id,
            now_iso=partial(_iso_now, self.kernel._clock),
            new_msg_id=_new_msg_id,
        )
        frames = encode_frames(built, self.kernel._signer)
        if self._held is not None:
            if len(self._held) >= MAX_HELD:
                raise InvalidMessage(
                    f"could not send to kernel {self.kernel.id}: {MAX_HELD} messages already wait for "
                    "the connection to it"
                )
            self._held.append((channel, frames))
        else:
            try:
                self._sockets[channel].send(frames)
            except zmq.Again as exc:
                raise InvalidMessage(
                    f"could not send to kernel {self.kernel.id}: {KERNEL_HWM} messages already wait for "
                    f"it on {channel} (it does not read them)"
                ) from exc
            except Exception as exc:
                raise InvalidMessage(f"could not send to kernel {self.kernel.id}: {exc}") from exc
        self.last_sent_bytes = built.size
        self.kernel._touch()
        return built.msg_id

    def _connected(self) -> None:
        """The stdin socket is connected: what waited is sent, in order."""
        if self._held is None:
            return
        held, self._held = self._held, None
        for held_channel, frames in held:
            socket = self._sockets.get(held_channel)
            if socket is None:
                return  # closed meanwhile
            try:
                socket.send(frames)
            except Exception as exc:
                _log.warn(
                    "A message to kernel {kernel_id} on {channel} was lost: {error}",
                    kernel_id=self.kernel.id,
                    channel=held_channel,
                    error=exc,
                )

    def close(self) -> None:
        """
        Close the sockets; replies still in flight are dropped. Idempotent. What the client sent before its
        stdin socket connected is sent now, and given :data:`FLUSH_LINGER` to reach the kernel.
        """
        if self._held:
            self._connected()
            linger = FLUSH_LINGER
        else:
            self._held = None
            linger = 0.0
        sockets, self._sockets = self._sockets, {}
        for socket in sockets.values():
            socket.close(linger)
        self.kernel._clients.discard(self)

    def _received(self, channel: str, frames: list[Frame]) -> None:
        message = self.kernel._verify(channel, frames)
        if message is None or self.closed:
            return
        try:
            self._on_message(message)
        except Exception:
            _log.failure(
                "client callback failed for {channel} message of kernel {kernel_id}",
                channel=channel,
                kernel_id=self.kernel.id,
            )


class Kernel:
    """
    A running kernel: identity, state, the single iopub subscription, and its clients.

    Created by ``KernelRegistry``; ``execution_state`` follows iopub ``status`` messages and
    becomes ``"dead"`` once the kernel is gone. ``rejected_messages`` counts incoming messages
    dropped because they were malformed or wrongly signed.
    """

    def __init__(
        self,
        *,
        kernel_id: str,
        spec_name: str,
        connection_info: dict[str, Any],
        session: Session,
        clock: IReactorTime,
        opener: SocketOpener,
        pid: int | None = None,
        connection_file: str | None = None,
    ) -> None:
        self.id = kernel_id
        self.spec_name = spec_name
        self.connection_info = connection_info
        self.session = session
        self.pid = pid
        """The local process id when the provisioner has one (tests and diagnostics only)."""
        self.connection_file = connection_file
        self.sandboxed = connection_info.get("sandboxed") is True
        """Whether it runs in the relay's sandbox (see ``_sandbox``): its relay says so in its connection info."""
        self._state = "starting"
        self._busy: dict[str | None, str] = {}
        """The request each line of the kernel is busy with: its shell, a subshell, control (see ``_lane``)."""
        self.reachable = True
        """False while the kernel does not answer its heartbeat (see :mod:`kernel_relay.kernels.heartbeat`)."""
        self.rejected_messages = 0
        self._clock = clock
        self.last_activity = clock.seconds()
        self._opener = opener
        self._signer: Signer | None = session_signer(session)
        self._iopub_listeners: list[MessageCallback] = []
        self._clients: set[KernelClient] = set()
        self._closed = False
        #: The kernel's CurveZMQ keys when its channels are encrypted (then every socket of the relay uses them).
        self.curve = CurveKeys.of(connection_info)
        self._iopub: FrameSocket | None = opener.subscriber(
            channel_url(connection_info, "iopub"), self._iopub_received, self.curve
        )

    @property
    def execution_state(self) -> str:
        """The kernel's ``status``: ``busy`` while any of its lines (shell, subshells, control) runs a request."""
        return self._state

    @execution_state.setter
    def execution_state(self, state: str) -> None:
        # Set from outside (started, restarting, dead): what the old process was busy with is over.
        self._busy.clear()
        self._state = state

    def __repr__(self) -> str:
        return f"<Kernel {self.id} {self.spec_name} {self.execution_state}>"

    @property
    def closed(self) -> bool:
        return self._closed

    def add_iopub_listener(self, callback: MessageCallback) -> None:
        """Receive every verified iopub message of this kernel, in order."""
        self._iopub_listeners.append(callback)

    def remove_iopub_listener(self, callback: MessageCallback) -> None:
        """Stop receiving iopub messages; unknown callbacks are ignored."""
        try:
            self._iopub_listeners.remove(callback)
        except ValueError:
            pass

    def open_client(self, identity: bytes, on_message: MessageCallback) -> KernelClient:
        """
        Connect one client's shell, control and stdin sockets under ZMQ identity ``identity``.

        The identity must be unique among this kernel's open clients (1-255 bytes, not starting with
        a zero byte, which ZMQ reserves).
        """
        if self._closed:
            raise UnknownKernel(f"kernel {self.id} is not running")
        if not isinstance(identity, bytes) or not 0 < len(identity) < 256 or identity[0] == 0:
            raise ValueError("a client identity must be 1-255 bytes and not start with a zero byte")
        if any(client.identity == identity for client in self._clients):
            raise ValueError(f"kernel {self.id} already has a client with that identity")
        client = KernelClient(self, identity, on_message)
        self._clients.add(client)
        return client

    def clients(self) -> list[KernelClient]:
        return list(self._clients)

    def open_heartbeat(self, on_echo: Callable[[list[Frame]], None]) -> FrameSocket:
        """
        A socket to the kernel's heartbeat channel, which echoes every message while the kernel's ZMQ
        side is alive (it keeps answering while the kernel runs code); the caller closes it.
        """
        if self._closed:
            raise UnknownKernel(f"kernel {self.id} is not running")
        return self._opener.dealer(
            channel_url(self.connection_info, "hb"), HEARTBEAT_ID, on_echo, self.curve
        )

    def wait_ready(self, interval: float = 0.5) -> Deferred[None]:
        """
        Fire once the kernel answered a ``kernel_info_request`` and our iopub subscription works.

        ZMQ subscriptions take effect some time after connecting, so the request is repeated every
        ``interval`` seconds until iopub traffic arrives too. Cancel the Deferred to give up.
        """
        seen_iopub = False
        replied = False
        probe: KernelClient | None = None
        timer: IDelayedCall | None = None

        def finish() -> None:
            nonlocal probe, timer
            self.remove_iopub_listener(on_iopub)
            if probe is not None:
                probe.close()
                probe = None
            if timer is not None and timer.active():
                timer.cancel()
            timer = None

        def check() -> None:
            if seen_iopub and replied and not result.called:
                finish()
                result.callback(None)

        def on_iopub(message: KernelMessage) -> None:
            nonlocal seen_iopub
            seen_iopub = True
            check()

        def on_reply(message: KernelMessage) -> None:
            nonlocal replied
            if message.msg_type == "kernel_info_reply":
                replied = True
                check()

        def ask() -> None:
            nonlocal timer
            timer = None
            if probe is None or result.called:
                return
            probe.send("shell", {"header": {"msg_type": "kernel_info_request"}})
            timer = self._clock.callLater(interval, ask)

        result: Deferred[None] = Deferred(lambda _: finish())
        self.add_iopub_listener(on_iopub)
        probe = self.open_client(b"kernel-relay-probe-" + uuid.uuid4().hex.encode(), on_reply)
        ask()
        return result

    def close(self) -> None:
        """Close every socket of this kernel (the process is the registry's business)."""
        if self._closed:
            return
        self._closed = True
        for client in list(self._clients):
            client.close()
        iopub, self._iopub = self._iopub, None
        if iopub is not None:
            iopub.close()

    def _touch(self) -> None:
        self.last_activity = self._clock.seconds()

    def _verify(self, channel: str, frames: list[Frame]) -> KernelMessage | None:
        try:
            _, message = decode_frames(frames, channel, self._signer)
        except MessageRejected as exc:
            self.rejected_messages += 1
            _log.warn(
                "dropped a {channel} message from kernel {kernel_id}: {reason}",
                channel=channel,
                kernel_id=self.id,
                reason=str(exc),
            )
            return None
        self._touch()
        return message

    def _iopub_received(self, frames: list[Frame]) -> None:
        message = self._verify("iopub", frames)
        if message is None or self._closed:
            return
        if message.msg_type == "status":
            self._follow_status(message)
        for listener in list(self._iopub_listeners):
            try:
                listener(message)
            except Exception:
                _log.failure("iopub listener failed for kernel {kernel_id}", kernel_id=self.id)

    def _follow_status(self, message: KernelMessage) -> None:
        """
        ``busy``/``idle`` per line of the kernel: with subshells (protocol 5.5) and control requests, one
        request's ``idle`` comes while another still runs, and the kernel is idle only once none does.
        """
        state = message.content.get("execution_state")
        if not isinstance(state, str):
            return
        parent = message.parent_header
        msg_id = parent.get("msg_id")
        if state not in ("busy", "idle") or not isinstance(msg_id, str):
            self.execution_state = state
            return
        lane = _lane(parent)
        if state == "busy":
            self._busy[lane] = (
                msg_id  # each line runs one request at a time: this one replaces any other
            )
        elif self._busy.get(lane) == msg_id:
            del self._busy[lane]
        self._state = "busy" if self._busy else "idle"


#: Requests ipykernel answers beside the shell (on its control thread), so their busy and idle overlap a cell's.
_CONTROL_REQUESTS = frozenset(
    {
        "debug_request",
        "interrupt_request",
        "shutdown_request",
        "usage_request",
        "kernel_info_request",
        "create_subshell_request",
        "delete_subshell_request",
        "list_subshell_request",
    }
)


def _lane(parent: Mapping[str, Any]) -> str | None:
    """The line of the kernel a request runs on: control, a subshell (by id), or the shell (None)."""
    if parent.get("msg_type") in _CONTROL_REQUESTS:
        return "control"
    subshell = parent.get("subshell_id")
    return subshell if isinstance(subshell, str) else None

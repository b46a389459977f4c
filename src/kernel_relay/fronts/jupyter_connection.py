"""
One Jupyter channels WebSocket (:class:`JupyterConnection`): one client of the core, attached to the channels
its token allows, in the ``v1.kernel.websocket.jupyter.org`` subprotocol when the client offers it, else the
legacy one (:mod:`.jupyter_wire`).

- The core's events (:mod:`kernel_relay.relay.events`) are shown as iopub ``stream`` messages on stderr,
  parented to the message concerned (a gap: to the last cell the client saw), their details in the metadata.
- A restart a client asked for is told as Jupyter Server tells it: without the core's ``restarting`` status
  (``@jupyterlab/services`` reads that as "the server restarted a dead kernel", and reconnects).
- The kernel gone closes the socket with code 1000 and the reason; a client that does not read what is sent
  to it is closed as a slow client once ``max_buffered_bytes`` wait for it (never a silent drop).
- Where the session read to (``last_seq``, kept as its mark) counts only what was handed to an open socket.
  A Jupyter client acknowledges nothing, so when it ends the connection (its close frame, or the socket
  drops) what was handed to it in the last :data:`UNREAD_SECONDS` before may never have been read: in flight,
  or dropped by a client already closing (a browser's and JupyterLab's ``reconnect()`` do). Its mark goes
  back before them: it sees them again rather than never. When the relay closes, its close frame comes after
  everything, so the mark is exact.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any, Final

from autobahn.websocket.types import ConnectionRequest
from twisted.logger import Logger

from ..kernels import CHANNELS, IOPUB, Frame
from ..relay.client import msg_id_of
from ..relay.core import Refused
from ..relay.events import ClientEvent, ReplayGap
from ..relay.payload import Outgoing
from ..relay.status import is_requested_restart
from ..websocket import FramedWebSocketProtocol, WriteBatcher
from .event_words import ERROR, details_of, event_name
from .jupyter_request import Admitted
from .jupyter_sessions import parent_frame
from .jupyter_wire import V1, WireError, decode_legacy, decode_v1, legacy_frame, v1_frame

if TYPE_CHECKING:
    from .jupyter import JupyterFront

log = Logger()

#: Close codes: the kernel is gone (normal closure with a reason), the relay stops, a slow client.
CLOSE_NORMAL: Final = 1000
CLOSE_GOING_AWAY: Final = 1001
CLOSE_POLICY: Final = 1008
CLOSE_INTERNAL_ERROR: Final = 1011

#: What was handed to a client this many seconds before it ended its connection counts as unread (a
#: reconnect sees at most that much output again; the fleet's positions are as fresh as this anyway).
UNREAD_SECONDS: Final = 0.25
#: Where the session was is noted at most this often (so a few notes cover :data:`UNREAD_SECONDS`).
_NOTE_EVERY: Final = UNREAD_SECONDS / 5


class JupyterConnection(FramedWebSocketProtocol):
    """One channels WebSocket: one client of the core, attached to the channels its token allows."""

    def __init__(self, front: JupyterFront, admitted: Admitted, batcher: WriteBatcher) -> None:
        super().__init__(batcher)
        self._front = front
        self.admitted = admitted
        self.client_id = admitted.client_id
        self.address = admitted.address
        self.v1 = False
        self.channels: set[str] = set()
        self.last_seq = 0
        self.last_parent: Frame = b"{}"
        self._closing = False
        # When the session was where: (time, last_seq) before the first message handed on since that
        # time; a note at most every _NOTE_EVERY, the last few only.
        self._notes: deque[tuple[float, int]] = deque(maxlen=8)
        self._next_note = 0.0
        self._client_closed_at: float | None = None

    @property
    def kernel_id(self) -> str:
        return self.admitted.kernel.id

    @property
    def session_id(self) -> str:
        return self.admitted.session_id

    @property
    def session_key(self) -> str:
        return self.admitted.session_key

    # -- RelayClient ----------------------------------------------------------------------------------

    @property
    def backlog(self) -> int:
        return self.unsent_bytes

    @property
    def buffered_bytes(self) -> int:
        return self.unsent_bytes

    def deliver(self, kernel_id: str, channel: str, message: Outgoing) -> None:
        if self._closing:
            return
        if channel == IOPUB and is_requested_restart(message):
            self.last_seq = message.seq or self.last_seq
            return
        # A closing socket takes nothing more: not read, so not counted.
        handed = self.accepts_frames
        if self.v1:
            self.send_message(v1_frame(message), binary=True)
        else:
            parts, binary = legacy_frame(message)
            self.send_message(parts, binary)
        if message.seq and handed:
            now = self._batcher.clock.seconds()
            if now >= self._next_note:
                self._notes.append((now, self.last_seq))
                self._next_note = now + _NOTE_EVERY
            self.last_seq = message.seq
            self.last_parent = message.parts[1]
        limit = self._front.max_buffered_bytes
        # Only a peer that lets the socket fill up is slow: a burst queued within one turn is not.
        if limit and self.falling_behind and self.unsent_bytes > limit:
            self._close_slow("", f"slow client: more than {limit} bytes unread")
        else:
            self._front.budget.report(self, self.unsent_bytes)

    def shed(self, limit: int) -> None:
        """Close as a slow client: every client together has more than ``limit`` bytes waiting."""
        self._close_slow(
            f", the most of any while all clients together were over the limit of {limit}",
            f"slow client: all clients together have over {limit} bytes unread",
        )

    def _close_slow(self, because: str, reason: str) -> None:
        """Close as a slow client: counted, logged (``because`` says more), ``reason`` in the close frame."""
        self._front.core.metrics.error("slow_client")
        log.warn(
            "Closing Jupyter client {address} of kernel {kernel}: {backlog} bytes wait for it{because} "
            "(slow client)",
            address=self.address,
            kernel=self.kernel_id,
            backlog=self.unsent_bytes,
            because=because,
        )
        self.close_with(CLOSE_POLICY, reason)

    def drained(self) -> None:
        if not self._closing:
            self._front.budget.report(self, self.unsent_bytes)
            self._front.core.drained(self)

    def tell(self, kernel_id: str, channel: str, event: ClientEvent) -> None:
        details = details_of(event, kernel_id)
        if isinstance(event, ReplayGap):
            parent = self.admitted.resume_parent or b"{}"
            text = (
                f"[kernel-relay] output was lost while this client was away: {details['message']}"
            )
        else:
            parent = parent_frame(details.get("msg_id") or details.get("parent_msg_id"))
            text = f"[kernel-relay] {details['message']}"
        self._show(kernel_id, event_name(event), details, parent, text)

    def _show(
        self, kernel_id: str, event: str, details: dict[str, Any], parent: Frame, text: str
    ) -> None:
        """Show the client ``text`` on stderr, ``details`` in the message's metadata."""
        if self._closing or IOPUB not in self.channels:
            return
        metadata = {"kernel_relay": {"event": event, **details}}
        self.deliver(kernel_id, IOPUB, self._front.stream(kernel_id, parent, text, metadata))

    def let_go(self, kernel_id: str, channel: str, reason: str) -> None:
        self.close_with(CLOSE_NORMAL, reason)

    # -- the connection -------------------------------------------------------------------------------

    def close_with(self, code: int, reason: str) -> None:
        """Close once, with ``code`` and ``reason`` (cut to what a close frame holds)."""
        if self._closing:
            return
        self._closing = True
        self._front.budget.forget(self)
        self._front.connection_lost(self)
        if self.transport is not None:
            # A client that does not read would get the close frame only after all it left unread: it
            # is cut off instead.
            self.lose(code, reason.encode("utf-8")[:120].decode("utf-8", "ignore"))

    def onConnect(self, request: ConnectionRequest) -> str | None:
        self.v1 = V1 in (request.protocols or [])
        return V1 if self.v1 else None

    def onOpen(self) -> None:
        try:
            self._front.connection_open(self)
        except Exception:
            self._failed("attaching it")

    def _failed(self, doing: str) -> None:
        """A bug met while ``doing`` something for this connection: it is closed whole, with a reason."""
        log.failure(
            "Internal error {doing} (Jupyter client {address}); closing it",
            doing=doing,
            address=self.address,
        )
        self.close_with(CLOSE_INTERNAL_ERROR, "internal error of the relay")

    def message_received(self, message: str | bytes) -> None:
        if self._closing:
            return
        kernel_id = self.kernel_id
        try:
            if self.v1:
                if isinstance(message, str):
                    raise WireError("the v1 protocol sends binary frames only")
                channel, decoded = decode_v1(message)
            else:
                channel, decoded = decode_legacy(message)
        except WireError as error:
            self._malformed(kernel_id, error)
            return
        core = self._front.core
        try:
            if channel not in CHANNELS:
                reason = f"unknown channel {channel[:32]!r}"
                core.refuse(self, kernel_id, IOPUB, reason, msg_id_of(decoded))
            if channel not in self.channels:
                reason = (
                    f"this connection may not send on {channel}: its token allows "
                    f"{', '.join(sorted(self.channels))} only"
                )
                core.refuse(self, kernel_id, channel, reason, msg_id_of(decoded))
            core.receive(self, kernel_id, channel, decoded)
        except Refused:
            pass
        except Exception:
            self._failed("relaying a message")

    def _malformed(self, kernel_id: str, error: WireError) -> None:
        """A frame that is no message of the connection's format: counted, logged (bounded), shown."""
        core = self._front.core
        core.metrics.error("malformed_packet")
        if core.refusal_log.allow(self.address):
            log.warn(
                "Refused a malformed frame from Jupyter client {address}: {error}",
                address=self.address,
                error=error,
            )
        message = f"malformed frame: {error}"
        self._show(kernel_id, ERROR, {"message": message}, b"{}", f"[kernel-relay] {message}")

    def onCloseFrame(self, code: int, reasonRaw: bytes) -> bool | None:
        if not self._closing and self._client_closed_at is None:
            self._client_closed_at = self._batcher.clock.seconds()
        answer: bool | None = super().onCloseFrame(code, reasonRaw)
        return answer

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        super().onClose(wasClean, code, reason)
        if not self._closing:
            # The client ended it: what it was handed just before may be unread (see the module doc).
            # Its last parent stays: a gap is best told in the last cell it may have seen.
            ended = self._client_closed_at
            self.last_seq = self._read_before(
                (self._batcher.clock.seconds() if ended is None else ended) - UNREAD_SECONDS
            )
        self._closing = True
        self._front.budget.forget(self)
        self._front.connection_lost(self)

    def _read_before(self, cutoff: float) -> int:
        """Where the session was at ``cutoff`` (or a little after): the last seq handed on by then."""
        for when, seq in self._notes:
            if when > cutoff:
                return seq
        return self.last_seq

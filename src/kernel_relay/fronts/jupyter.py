"""
The Jupyter kernel WebSocket front: ``/api/kernels/<id>/channels?session_id=...`` as Jupyter Server serves it,
translated into the relay core, so JupyterLab, ``@jupyterlab/services`` and ``jupyter server --gateway-url``
use the relay's kernels unchanged.

- One WebSocket carries all four channels of one kernel, in the ``v1.kernel.websocket.jupyter.org``
  subprotocol when the client offers it, else the legacy one (:mod:`.jupyter_wire`). It is one client of the
  core: replies and ``input_request``\\ s go to it alone, iopub to every client of the kernel, whatever
  their front.
- The request is checked before the upgrade, answering Jupyter Server's JSON errors: the origin, the token
  (``Authorization: token|Bearer`` or ``?token=``; a read-only kernel token gets iopub only), the kernel
  (404). A browser cannot forge such a request from another site: it cannot set ``Authorization``, and the
  origin is checked; the relay never reads a cookie, so it needs no XSRF token.
- Reconnect without loss: when a connection ends, the front notes the last ``relay_seq`` it sent for the
  connection's ``session_id``; a connection that comes back with that ``session_id`` gets the iopub messages
  it missed, in order (bounded by the journal's ``--iopub-replay-*`` options, up to
  :data:`MARKS_PER_KERNEL` sessions per kernel, each mark kept :data:`MARK_AGE` seconds). What is no longer
  kept is told as an iopub ``stream`` message on ``stderr``, parented to the last cell the client saw, so a
  Jupyter client shows it in that cell.
  Errors the core tells (a refused message, an oversized one) come the same way, parented to the message
  concerned. A session keeps its ZMQ identity towards the kernel, so a reply to a request of its last
  connection that comes after it is back reaches it (one that came while it was away is lost: ZeroMQ drops
  what it cannot route); a second connection of a session still connected gets an identity of its own.
- A ``session_id`` is not a credential: it belongs to the principal that made it (the token it came with,
  see :meth:`~kernel_relay.auth.TokenAuth.principal`). Another principal presenting it gets a session of its
  own (another ZMQ identity, no mark of the owner's), so it sees neither the owner's replies nor its resume
  point. A mark keeps only ids (session, principal, the parent's ``msg_id``): at most
  :data:`MARKS_PER_KERNEL` per kernel and :data:`MAX_MARKS` in all, forgotten with their kernel. A
  ``session_id`` that is not 1 to :data:`MAX_SESSION_ID` printable ASCII characters is refused (400) before
  the upgrade.
- A restart a client asked for is told as Jupyter Server tells it: without the core's ``restarting`` status
  (``@jupyterlab/services`` reads that as "the server restarted a dead kernel", and reconnects).
- A kernel that stops or dies is announced as ``dead`` on iopub (by the core), then the socket closes with
  code 1000 and the reason; a client that does not read what is sent to it is closed as a slow client once
  ``max_buffered_bytes`` wait for it (never a silent drop, and no rate limit drops output).
"""

from __future__ import annotations

import re
import uuid
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Protocol

from autobahn.twisted.resource import WebSocketResource
from autobahn.twisted.websocket import WebSocketServerFactory
from autobahn.websocket.types import ConnectionRequest
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IAddress, IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.web.iweb import IRequest
from twisted.web.resource import Resource

from ..auth import TOKEN_QUERY, token_from_authorization
from ..budget import BufferBudget
from ..http.connections import peer_host, trust_request_connection
from ..http.jupyter_api import jupyter_error
from ..http.origins import OriginPolicy
from ..jsontext import JSONError, loads
from ..kernels import DEFAULT_USERNAME, PROTOCOL_VERSION, Frame, Kernel, pack_json
from ..relay.core import (
    CHANNELS,
    ERROR,
    IOPUB,
    REPLAY_GAP,
    Refused,
    RelayCore,
    is_requested_restart,
)
from ..relay.journal import Resume
from ..relay.payload import Outgoing
from ..websocket import FramedWebSocketProtocol, WriteBatcher
from .jupyter_wire import V1, WireError, decode_legacy, decode_v1, legacy_frame, v1_frame

log = Logger()

CHANNELS_PATH: Final = re.compile(r"^/api/kernels/(?P<kernel_id>[^/]+)/channels/?$")
#: How long the front remembers where a disconnected session stopped reading.
MARK_AGE: Final = 3600.0
#: At most this many disconnected sessions are remembered (the oldest are forgotten first)...
MAX_MARKS: Final = 10_000
#: ... and at most this many of one kernel.
MARKS_PER_KERNEL: Final = 1_000
#: The longest ``session_id`` taken (printable ASCII, no space): with the kernel id, the principal and the
#: channels it makes a ZMQ identity, which ZeroMQ bounds at 255 bytes.
MAX_SESSION_ID: Final = 128
_SESSION_ID: Final = re.compile(rf"[\x21-\x7e]{{1,{MAX_SESSION_ID}}}")
#: A parent header longer than this is not looked into for its ``msg_id`` (a real one is a few hundred bytes).
MAX_PARENT_BYTES: Final = 64 * 1024
#: The longest parent ``msg_id`` a mark keeps.
MAX_MSG_ID: Final = 128
#: Close codes: the kernel is gone (normal closure with a reason), the relay stops, a slow client.
CLOSE_NORMAL: Final = 1000
CLOSE_GOING_AWAY: Final = 1001
CLOSE_POLICY: Final = 1008
CLOSE_INTERNAL_ERROR: Final = 1011
_NO_RESUME: Final = Resume(None, False)


class SharedMarks(Protocol):
    """
    Where the sessions of a fleet stopped reading, kept where every relay finds them (``kernel_relay.fleet``):
    a Jupyter client sends no ``since``, so its ``session_id`` is all another relay has to resume it by.
    """

    def save(self, kernel_id: str, marks: Mapping[str, tuple[int, str | None]]) -> None:
        """
        Where each of these sessions of a kernel is: its last ``relay_seq`` and the ``msg_id`` of that
        message's parent. A session is named by its principal and its id (:attr:`_Admitted.session_key`).
        """

    def load(self, kernel_id: str, session_key: str) -> Deferred[tuple[int, str | None] | None]: ...


#: How often the positions of connected sessions are saved for the fleet (a relay that dies loses at most
#: this much of their reading: its sessions resume elsewhere from the last save, and see that much again).
#: A quarter second, so that with a save's own latency a session sees less than half a second again; only
#: positions that moved since the last save are written.
SHARE_INTERVAL: Final = 0.25
#: How long a reconnecting session waits for the fleet to say where it stopped before it goes on without.
SHARE_WAIT: Final = 2.0


@dataclass
class _Mark:
    """Where a disconnected session stopped: the last ``relay_seq`` sent, and its parent's ``msg_id``."""

    seq: int
    parent_id: str | None
    time: float


def parent_frame(msg_id: str | None) -> Frame:
    """The parent header of what the relay tells a session about the cell ``msg_id`` (``{}``: none)."""
    return pack_json({"msg_id": msg_id}) if msg_id else b"{}"


def msg_id_in(parent: Frame) -> str | None:
    """The ``msg_id`` of a parent header, if it is a short string (nothing else of it is kept)."""
    if not parent or len(parent) > MAX_PARENT_BYTES or parent == b"{}":
        return None
    try:
        header = loads(parent)
    except JSONError:
        return None
    msg_id = header.get("msg_id") if isinstance(header, dict) else None
    return msg_id if isinstance(msg_id, str) and 0 < len(msg_id) <= MAX_MSG_ID else None


def _is_websocket_upgrade(request: IRequest) -> bool:
    upgrade = (request.getHeader(b"upgrade") or b"").decode("latin-1").lower()
    return "websocket" in [token.strip() for token in upgrade.split(",")]


def _iso(clock: IReactorTime) -> str:
    return datetime.fromtimestamp(clock.seconds(), UTC).isoformat().replace("+00:00", "Z")


class JupyterConnection(FramedWebSocketProtocol):
    """One channels WebSocket: one client of the core, attached to the channels its token allows."""

    def __init__(self, front: JupyterFront, admitted: _Admitted, batcher: WriteBatcher) -> None:
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
        if self.v1:
            self.send_message(v1_frame(message), binary=True)
        else:
            parts, binary = legacy_frame(message)
            self.send_message(parts, binary)
        if message.seq:
            self.last_seq = message.seq
            self.last_parent = message.parts[1]
        front = self._front
        unsent = self.unsent_bytes
        limit = front.max_buffered_bytes
        # Only a peer that lets the socket fill up is slow: a burst queued within one turn is not.
        if limit and self.falling_behind and unsent > limit:
            front.core.metrics.error("slow_client")
            log.warn(
                "Closing Jupyter client {address} of kernel {kernel}: {backlog} bytes wait for it (slow client)",
                address=self.address,
                kernel=kernel_id,
                backlog=unsent,
            )
            self.close_with(CLOSE_POLICY, f"slow client: more than {limit} bytes unread")
        else:
            front.budget.report(self, unsent)

    def shed(self, limit: int) -> None:
        """Close as a slow client: every client together has more than ``limit`` bytes waiting."""
        self._front.core.metrics.error("slow_client")
        log.warn(
            "Closing Jupyter client {address} of kernel {kernel}: {backlog} bytes wait for it, the most of "
            "any while all clients together were over the limit of {limit} (slow client)",
            address=self.address,
            kernel=self.admitted.kernel.id,
            backlog=self.unsent_bytes,
            limit=limit,
        )
        self.close_with(
            CLOSE_POLICY, f"slow client: all clients together have over {limit} bytes unread"
        )

    def drained(self) -> None:
        if not self._closing:
            self._front.budget.report(self, self.unsent_bytes)
            self._front.core.drained(self)

    def tell(self, kernel_id: str, channel: str, event: str, details: dict[str, Any]) -> None:
        if self._closing or IOPUB not in self.channels:
            return
        if event == REPLAY_GAP:
            parent: Frame = self.admitted.resume_parent or b"{}"
            text = f"[kernel-relay] output was lost while this client was away: {details.get('message')}"
        else:
            msg_id = details.get("msg_id") or details.get("parent_msg_id")
            parent = pack_json({"msg_id": msg_id}) if msg_id else b"{}"
            text = f"[kernel-relay] {details.get('message')}"
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
        kernel_id = self.admitted.kernel.id
        try:
            if self.v1:
                if isinstance(message, str):
                    raise WireError("the v1 protocol sends binary frames only")
                channel, decoded = decode_v1(message)
            else:
                channel, decoded = decode_legacy(message)
        except WireError as error:
            self._front.core.metrics.error("malformed_packet")
            if self._front.core.refusal_log.allow(self.address):
                log.warn(
                    "Refused a malformed frame from Jupyter client {address}: {error}",
                    address=self.address,
                    error=error,
                )
            self.tell(kernel_id, IOPUB, ERROR, {"message": f"malformed frame: {error}"})
            return
        core = self._front.core
        try:
            if channel not in CHANNELS:
                core.refuse(self, kernel_id, IOPUB, f"unknown channel {channel[:32]!r}", decoded)
            if channel not in self.channels:
                core.refuse(
                    self,
                    kernel_id,
                    channel,
                    f"this connection may not send on {channel}: its token allows "
                    f"{', '.join(sorted(self.channels))} only",
                    decoded,
                )
            core.receive(self, kernel_id, channel, decoded)
        except Refused:
            pass
        except Exception:
            self._failed("relaying a message")

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        super().onClose(wasClean, code, reason)
        self._closing = True
        self._front.budget.forget(self)
        self._front.connection_lost(self)


@dataclass
class _Admitted:
    """What the check before the upgrade found: the kernel, the channels allowed, the resume asked for."""

    kernel: Kernel
    channels: list[str]
    session_id: str
    address: str
    principal: str = ""
    resume: Resume = _NO_RESUME
    resume_parent: Frame | None = None

    @property
    def session_key(self) -> str:
        """The session as its marks know it: its principal's, so no other principal finds them."""
        return f"{self.principal}/{self.session_id}"

    @property
    def client_id(self) -> str:
        """
        The core's client id, which is also the connection's ZMQ identity towards the kernel: the same for a
        session that comes back with the same rights, so replies to what it asked before reach it again.
        """
        if not self.session_id:
            return f"jupyter:{uuid.uuid4().hex}"
        channels = ",".join(sorted(self.channels))
        return f"jupyter:{self.kernel.id}:{self.principal}:{self.session_id}:{channels}"


class _ChannelsFactory(WebSocketServerFactory):  # type: ignore[misc]
    """Builds the connection of the request just checked (render and build are synchronous)."""

    def __init__(self, front: JupyterFront, reactor: IReactorTime, max_payload: int) -> None:
        super().__init__(reactor=reactor)  # type: ignore[no-untyped-call]
        self.setProtocolOptions(  # type: ignore[no-untyped-call]
            autoPingInterval=30,
            autoPingTimeout=30,
            failByDrop=False,
            maxMessagePayloadSize=max_payload,
            maxFramePayloadSize=max_payload,
        )
        self.max_payload = max_payload
        self._front = front
        self._batcher = WriteBatcher(reactor)
        self.next: _Admitted | None = None

    def buildProtocol(self, addr: IAddress | None) -> Any:
        admitted, self.next = self.next, None
        if admitted is None:
            return None
        protocol = JupyterConnection(self._front, admitted, self._batcher)
        protocol.factory = self
        return protocol


class _ClientProbe:
    """Stands for a connection not yet made, so the core can admit it (it is never attached)."""

    def __init__(self, address: str) -> None:
        self.client_id = f"probe-{uuid.uuid4().hex}"
        self.address = address
        self.backlog = 0

    def deliver(self, kernel_id: str, channel: str, message: Outgoing) -> None:
        pass

    def tell(self, kernel_id: str, channel: str, event: str, details: dict[str, Any]) -> None:
        pass

    def let_go(self, kernel_id: str, channel: str, reason: str) -> None:
        pass


class JupyterFront:
    """Serves ``/api/kernels/<id>/channels`` from a relay core."""

    def __init__(
        self,
        core: RelayCore,
        reactor: IReactorTime,
        *,
        origins: OriginPolicy | None = None,
        max_payload: int = 16 * 1024 * 1024,
        max_buffered_bytes: int = 64 * 1024 * 1024,
        budget: BufferBudget | None = None,
    ) -> None:
        self.core = core
        self._clock = reactor
        self._origins = origins or OriginPolicy.from_options([])
        self.max_buffered_bytes = max_buffered_bytes
        #: What waits for every connection, against the relay's overall bound (shared with the other fronts).
        self.budget = budget or BufferBudget(None)
        self._factory = _ChannelsFactory(self, reactor, max_payload)
        self._websocket = WebSocketResource(self._factory)  # type: ignore[no-untyped-call]
        self._connections: dict[str, JupyterConnection] = {}
        # kernel id -> session key -> mark, oldest first.
        self._marks: dict[str, OrderedDict[str, _Mark]] = {}
        self._parent_seen: tuple[Frame, str | None] = (b"{}", None)
        self.shared_marks: SharedMarks | None = None
        """Set by the wiring in a fleet; the positions of sessions are then saved for every relay."""
        self._share = LoopingCall(self._share_marks)
        self._share.clock = reactor
        self._shared: dict[tuple[str, str], int] = {}

    def share_marks(self, marks: SharedMarks) -> None:
        """Save where sessions are, on disconnect and every :data:`SHARE_INTERVAL` while connected."""
        self.shared_marks = marks
        if not self._share.running:
            self._share.start(SHARE_INTERVAL, now=False)

    def _share_marks(self) -> None:
        if self.shared_marks is None:
            return
        changed: dict[str, dict[str, tuple[int, str | None]]] = {}
        for connection in self._connections.values():
            admitted = connection.admitted
            key = (admitted.kernel.id, admitted.session_key)
            if (
                admitted.session_id
                and connection.last_seq
                and self._shared.get(key) != connection.last_seq
            ):
                self._shared[key] = connection.last_seq
                changed.setdefault(key[0], {})[key[1]] = (
                    connection.last_seq,
                    self.msg_id_in(connection.last_parent),
                )
        for kernel_id, marks in changed.items():
            self.shared_marks.save(kernel_id, marks)

    def msg_id_in(self, parent: Frame) -> str | None:
        """:func:`msg_id_in`, decoded once for the many sessions that last saw the same message."""
        seen, msg_id = self._parent_seen
        if parent is not seen:
            msg_id = msg_id_in(parent)
            self._parent_seen = (parent, msg_id)
        return msg_id

    def resource(self) -> Resource:
        return _ChannelsResource(self)

    def close(self, reason: str = "the relay is stopping") -> None:
        """Close every connection (the relay is stopping)."""
        if self._share.running:
            self._share.stop()
        for connection in list(self._connections.values()):
            connection.close_with(CLOSE_GOING_AWAY, reason)

    def stream(
        self, kernel_id: str, parent: Frame, text: str, metadata: dict[str, Any]
    ) -> Outgoing:
        """A ``stream`` message on stderr made by the relay, for what a Jupyter client should show."""
        header = {
            "msg_id": uuid.uuid4().hex,
            "msg_type": "stream",
            "username": DEFAULT_USERNAME,
            "session": kernel_id,
            "date": _iso(self._clock),
            "version": PROTOCOL_VERSION,
        }
        content = {"name": "stderr", "text": text if text.endswith("\n") else text + "\n"}
        return Outgoing(
            (pack_json(header), parent, pack_json(metadata), pack_json(content)), [], IOPUB
        )

    # -- before the upgrade ---------------------------------------------------------------------------

    def render(self, request: IRequest) -> bytes | int:
        match = CHANNELS_PATH.match(request.path.decode("utf-8", "replace"))
        if match is None:
            return jupyter_error(request, 404, "Not found")
        if request.method != b"GET" or not _is_websocket_upgrade(request):
            request.setHeader(b"Allow", b"GET")
            return jupyter_error(
                request,
                400 if request.method == b"GET" else 405,
                "this is the kernel channels WebSocket: connect with a WebSocket upgrade (GET)",
            )
        origin = request.getHeader(b"origin")
        host = request.getHeader(b"host")
        if not self._origins.is_allowed(
            origin.decode("latin-1") if origin else None,
            host.decode("latin-1") if host else None,
            request.isSecure(),
        ):
            log.warn("Refused a kernel WebSocket from origin {origin!r}", origin=origin)
            return jupyter_error(request, 403, f"Origin {origin!r} is not allowed")
        args: dict[bytes, list[bytes]] = request.args or {}  # type: ignore[attr-defined]
        query = {
            key.decode("utf-8", "replace"): [v.decode("utf-8", "replace") for v in values]
            for key, values in args.items()
        }
        header = request.getHeader(b"authorization")
        credentials = [
            token_from_authorization(header.decode("latin-1") if header else None),
            *query.get(TOKEN_QUERY, []),
        ]
        address = peer_host(request.getClientAddress())
        probe = _ClientProbe(address)
        kernel_id = match.group("kernel_id")
        granted: list[str] = []
        first_refusal: Refused | None = None
        kernel: Kernel | None = None
        for channel in (IOPUB, "shell", "control", "stdin"):
            try:
                kernel = self.core.admit(probe, kernel_id, channel, credentials)
            except Refused as refusal:
                if channel == IOPUB or refusal.code in (401, 404, 429):
                    first_refusal = refusal
                    break
                continue
            granted.append(channel)
        if first_refusal is not None or kernel is None:
            refused = first_refusal or Refused("refused", 403)
            return jupyter_error(request, refused.code or 403, refused.message)
        session_id = (query.get("session_id") or [""])[0]
        if session_id and not _SESSION_ID.fullmatch(session_id):
            if self.core.refusal_log.allow(address):
                log.info(
                    "Refused a kernel WebSocket from {address}: malformed session_id",
                    address=address,
                )
            return jupyter_error(
                request,
                400,
                f"session_id must be 1 to {MAX_SESSION_ID} printable ASCII characters without spaces",
            )
        admitted = _Admitted(kernel, granted, session_id, address, self.core.principal(credentials))
        marks = self._marks.get(kernel.id)
        mark = marks.pop(admitted.session_key, None) if marks and session_id else None
        if mark is not None and self._clock.seconds() - mark.time <= MARK_AGE:
            admitted.resume = Resume(mark.seq, False)
            admitted.resume_parent = parent_frame(mark.parent_id)
        trust_request_connection(request)
        self._factory.next = admitted
        result: bytes | int = self._websocket.render(request)
        return result

    # -- connections ----------------------------------------------------------------------------------

    def connection_open(self, connection: JupyterConnection) -> None:
        admitted = connection.admitted
        kernel = admitted.kernel
        if not self.core.has_kernel(kernel.id):  # it stopped during the handshake
            connection.close_with(CLOSE_NORMAL, f"kernel {kernel.id} is no longer running")
            return
        if connection.client_id in self._connections:
            # The session's earlier connection is still open. Both stay, with an identity each: JupyterLab's
            # server, for one, opens a connection it then abandons beside the live one, in either order, and
            # replacing the older would sometimes cut the live one. The abandoned one ends as a slow client
            # or when it stops answering pings.
            connection.client_id = f"{connection.client_id}:{uuid.uuid4().hex[:8]}"
        self._connections[connection.client_id] = connection
        if self.shared_marks is not None and admitted.session_id and IOPUB in admitted.channels:
            # Not known here, or known from an earlier visit: it may have read on another relay of the
            # fleet since (the fresher mark wins). Its other channels work at once; iopub joins once the
            # fleet has said (what comes meanwhile waits in the journal).
            for channel in admitted.channels:
                if channel != IOPUB:
                    connection.channels.add(channel)
                    self.core.attach(connection, kernel, channel, _NO_RESUME)
            start = self.core.last_seq(kernel.id)
            asked = self.shared_marks.load(kernel.id, admitted.session_key)
            asked.addTimeout(SHARE_WAIT, self._clock)
            asked.addErrback(lambda failure: None)
            asked.addCallback(lambda found: self._join_iopub(connection, found, start))
            return
        if admitted.resume.since is not None:
            connection.last_seq = admitted.resume.since  # the replay, if any, moves it on
        for channel in admitted.channels:
            connection.channels.add(channel)
            self.core.attach(
                connection, kernel, channel, admitted.resume if channel == IOPUB else _NO_RESUME
            )

    def _join_iopub(
        self, connection: JupyterConnection, found: tuple[int, str | None] | None, start: int
    ) -> None:
        """
        Attach a session's iopub once the fleet said where it stopped; a session new to the fleet gets what
        came since it connected (``start``).
        """
        admitted = connection.admitted
        if self._connections.get(connection.client_id) is not connection:
            return  # gone meanwhile
        if not self.core.has_kernel(admitted.kernel.id):
            connection.close_with(CLOSE_NORMAL, f"kernel {admitted.kernel.id} is no longer running")
            return
        here = admitted.resume.since
        if found is not None and (here is None or found[0] > here):
            admitted.resume = Resume(found[0], False)
            admitted.resume_parent = parent_frame(found[1])
            connection.last_seq = found[0]
        elif here is not None:
            connection.last_seq = here
        elif start:
            admitted.resume = Resume(start, False)
        connection.channels.add(IOPUB)
        self.core.attach(connection, admitted.kernel, IOPUB, admitted.resume)

    def connection_lost(self, connection: JupyterConnection) -> None:
        if self._connections.get(connection.client_id) is not connection:
            return
        del self._connections[connection.client_id]
        admitted = connection.admitted
        kernel_id = admitted.kernel.id
        for channel in list(connection.channels):
            self.core.detach(connection, kernel_id, channel, "closed")
        session_key = admitted.session_key
        self._shared.pop((kernel_id, session_key), None)
        # A kernel that stopped takes its marks with it (kernel_stopped): none is made for it after.
        if admitted.session_id and IOPUB in connection.channels and self.core.has_kernel(kernel_id):
            parent_id = self.msg_id_in(connection.last_parent)
            self._remember(kernel_id, session_key, _Mark(connection.last_seq, parent_id, 0.0))
            if self.shared_marks is not None and connection.last_seq:
                self.shared_marks.save(kernel_id, {session_key: (connection.last_seq, parent_id)})

    def _remember(self, kernel_id: str, session_key: str, mark: _Mark) -> None:
        now = mark.time = self._clock.seconds()
        marks = self._marks.setdefault(kernel_id, OrderedDict())
        marks[session_key] = mark
        marks.move_to_end(session_key)
        if len(marks) > MARKS_PER_KERNEL:
            marks.popitem(last=False)
        total = 0
        for kernel, kept in list(self._marks.items()):
            while kept and now - next(iter(kept.values())).time > MARK_AGE:
                kept.popitem(last=False)
            if not kept:
                del self._marks[kernel]
            total += len(kept)
        while total > MAX_MARKS:
            # The oldest mark of all goes first.
            oldest = min(self._marks.values(), key=lambda kept: next(iter(kept.values())).time)
            oldest.popitem(last=False)
            total -= 1
            if not oldest:
                self._marks = {k: v for k, v in self._marks.items() if v}

    def marks_of(self, kernel_id: str) -> int:
        """How many disconnected sessions of the kernel are remembered here."""
        return len(self._marks.get(kernel_id, ()))

    # -- KernelObserver: marks go with their kernel -----------------------------------------------------

    def kernel_stopped(self, kernel: Kernel, reason: str) -> None:
        self._marks.pop(kernel.id, None)
        for key in [key for key in self._shared if key[0] == kernel.id]:
            del self._shared[key]

    def kernel_started(self, kernel: Kernel) -> None:
        pass

    def kernel_restarting(self, kernel: Kernel) -> None:
        pass

    def kernel_restarted(self, kernel: Kernel) -> None:
        pass

    def kernel_ready(self, kernel: Kernel) -> None:
        pass


class _ChannelsResource(Resource):
    isLeaf = True

    def __init__(self, front: JupyterFront) -> None:
        super().__init__()
        self._front = front

    def render(self, request: IRequest) -> bytes | int:
        return self._front.render(request)

"""
The relay core: which client is attached to which kernel channel, and who receives which message.

- iopub: every attached client receives every iopub message of the kernel, numbered and kept in the kernel's
  journal (:mod:`.journal`) so a client that comes back gets what it missed, streamed from the journal as it
  reads (:mod:`.replay`; a front calls :meth:`RelayCore.drained` when a client's transport drained).
- shell, control, stdin: each client (one connection of a front, however many channels and kernels it uses)
  has its own ZMQ identity towards each kernel, so replies and ``input_request``\\ s reach exactly the client
  whose request caused them; an ``input_request`` whose client is not attached to stdin goes to every stdin
  client of the kernel (the kernel takes the first ``input_reply``).
- Admission: a client presents candidate tokens (see :mod:`kernel_relay.auth`); a kernel token opens only its
  kernel (read-only ones its iopub); a kernel takes at most ``max_clients_per_kernel`` clients.
- Kernel events: a kernel that stops or dies is announced on iopub as ``dead`` and its clients are let go; a
  restart is announced as ``restarting`` (marked as asked for: :func:`is_requested_restart`) and ``starting``;
  a kernel that stops answering its heartbeat is told
  to every client of it.

The core speaks to clients only through :class:`RelayClient` (deliver a message, tell an event, let go of a
channel), so it knows no wire format: each front (``kernel_relay.fronts``) adapts one protocol to it. It must
not import a front, socket.io, Engine.IO or HTTP.
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, NoReturn, Protocol

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from ..auth import Scope, TokenAuth
from ..kernels import (
    DEFAULT_USERNAME,
    PROTOCOL_VERSION,
    InvalidMessage,
    Kernel,
    KernelClient,
    KernelMessage,
    KernelRegistry,
    UnknownKernel,
)
from ..metrics import TO_CLIENT, TO_KERNEL, RelayMetrics
from .journal import IopubJournal, Resume, with_sequence
from .lograte import LogLimit
from .payload import Outgoing
from .replay import ReplayStream

log = Logger()

CHANNELS: Final = ("shell", "stdin", "iopub", "control")
IOPUB: Final = "iopub"
STDIN: Final = "stdin"
#: The events a client may be told besides messages (see :meth:`RelayClient.tell`).
ERROR: Final = "error"
REPLAY_GAP: Final = "replay_gap"
#: Roughly the bytes of a status message the relay makes (for metrics and the journal's bound).
STATUS_SIZE: Final = 300
#: A joining iopub client gets a replay only while less than this is waiting to go out to it, so that
#: joining again and again without reading cannot pile up copies of the journal.
REPLAY_BACKLOG: Final = 1024 * 1024


class RelayClient(Protocol):
    """One client connection of a front, as the core sees it."""

    @property
    def client_id(self) -> str:
        """Unique among the core's clients (the front's connection or session id)."""
        ...

    @property
    def address(self) -> str:
        """Where the client connects from, for logs."""
        ...

    @property
    def backlog(self) -> int:
        """Bytes sent to the client that still wait to go out."""
        ...

    def deliver(self, kernel_id: str, channel: str, message: Outgoing) -> None:
        """Send a Jupyter message of the kernel's channel to the client."""
        ...

    def tell(self, kernel_id: str, channel: str, event: str, details: dict[str, Any]) -> None:
        """Tell the client an :data:`ERROR` or a :data:`REPLAY_GAP` on one of its channels."""
        ...

    def let_go(self, kernel_id: str, channel: str, reason: str) -> None:
        """The core is done with the client on this channel (its kernel stopped): disconnect it."""
        ...


class IopubNumbering(Protocol):
    """
    Who numbers iopub messages when the numbers are not this process's alone (a fleet, see
    ``kernel_relay.fleet.numbering``): ``ready`` gets each number, in the order the messages were given.
    """

    def number(
        self, kernel_id: str, msg_id: str, message: Outgoing, ready: Callable[[int | None], None]
    ) -> None:
        """``ready`` gets the message's number, or None: the fleet cannot place it on this relay."""

    def after(self, kernel_id: str, ready: Callable[[int], None]) -> None:
        """``ready`` gets the latest number once every message given before is numbered."""

    def forget(self, kernel_id: str) -> None: ...

    def fetch(self, kernel_id: str, since: int) -> Deferred[list[tuple[int, float, Outgoing]]]:
        """The fleet's kept messages after ``since``: (seq, time, message), oldest first."""


class Refused(Exception):
    """
    The core will not do what a client asked: ``message`` says why, ``code`` is an HTTP-like status for
    fronts that show one (401 no valid token, 403 outside a token's scope, 404 unknown kernel, 429 full).
    """

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


@dataclass(frozen=True)
class ReplayOptions:
    """Bounds of each kernel's iopub journal (see :mod:`.journal`); ``max_bytes`` 0 keeps nothing."""

    max_bytes: int = 8 * 1024 * 1024
    max_age: float = 600.0


@dataclass(frozen=True)
class RelayLimits:
    """Per-kernel and per-message bounds; ``None`` means unbounded."""

    max_clients_per_kernel: int | None = None
    max_message_size: int | None = None


@dataclass
class _Link:
    """One client's private line to one kernel: its ZMQ sockets, and the channels it is attached to there."""

    kernel_client: KernelClient
    channels: set[str] = field(default_factory=set)


def short_id(kernel_id: str) -> str:
    """The first block of a kernel id: enough to tell kernels apart in a log line."""
    return kernel_id.split("-", 1)[0][:8]


#: The metadata of the relay's ``restarting`` status for a restart a client asked for (the relay never
#: restarts a kernel by itself: one that dies is announced ``dead``).
REQUESTED_RESTART: Final = {"kernel_relay": {"restart": "requested"}}
_RESTARTING_CONTENT: Final = b'{"execution_state":"restarting"}'
_REQUESTED_MARK: Final = b'"restart":"requested"'


def is_requested_restart(message: Outgoing) -> bool:
    """
    Whether ``message`` is the relay's ``restarting`` status for a restart a client asked for: Jupyter Server
    sends none for those, and its clients read ``restarting`` as "the server restarted a dead kernel".
    """
    content = message.parts[3]
    return (
        len(content) == len(_RESTARTING_CONTENT)
        and bytes(content) == _RESTARTING_CONTENT
        and _REQUESTED_MARK in bytes(message.parts[2])
    )


def relay_status(
    kernel: Kernel,
    execution_state: str,
    clock: IReactorTime,
    metadata: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """
    An iopub ``status`` message made by the relay, for states the kernel cannot announce itself
    (``dead``, ``restarting``) or that its clients would miss while its sockets reconnect.
    """
    return {
        "header": {
            "msg_id": uuid.uuid4().hex,
            "msg_type": "status",
            "username": DEFAULT_USERNAME,
            "session": kernel.id,
            "date": datetime.fromtimestamp(clock.seconds(), UTC).isoformat(),
            "version": PROTOCOL_VERSION,
        },
        "parent_header": {},
        "metadata": metadata or {},
        "content": {"execution_state": execution_state},
        "channel": IOPUB,
    }


def _msg_id_of(message: object) -> str | None:
    header = message.get("header") if isinstance(message, dict) else None
    msg_id = header.get("msg_id") if isinstance(header, dict) else None
    return msg_id if isinstance(msg_id, str) else None


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


class RelayCore:
    """Attaches clients of every front to the kernels of a registry, and routes their messages."""

    def __init__(
        self,
        kernels: KernelRegistry,
        clock: IReactorTime,
        *,
        auth: TokenAuth | None = None,
        limits: RelayLimits | None = None,
        metrics: RelayMetrics | None = None,
        replay: ReplayOptions | None = None,
        numbering: IopubNumbering | None = None,
    ) -> None:
        self._kernels = kernels
        self._numbering = numbering
        self._clock = clock
        self._auth = auth or TokenAuth()
        self._limits = limits or RelayLimits()
        self._replay = replay or ReplayOptions()
        self.metrics = metrics or RelayMetrics()
        self.refusal_log = LogLimit(clock, "refusals")
        """Bounds the lines each client's refused (or malformed) messages write to the log."""
        self._journals: dict[str, IopubJournal] = {}
        # kernel id -> channel -> client id -> client
        self._attached: dict[str, dict[str, dict[str, RelayClient]]] = {}
        self._links: dict[tuple[str, str], _Link] = {}
        # kernel id -> client id -> the client's replay under way, and the same by client id -> kernel id
        self._replays: dict[str, dict[str, ReplayStream]] = {}
        self._replays_of: dict[str, dict[str, ReplayStream]] = {}
        self.metrics.watch(lambda: len(kernels), self.clients_by_channel)
        kernels.add_observer(self)

    # -- queries -------------------------------------------------------------------------------------------

    def has_kernel(self, kernel_id: str) -> bool:
        """Whether the kernel runs (a front checks again once a slow handshake is over)."""
        return kernel_id in self._kernels

    def last_seq(self, kernel_id: str) -> int:
        """The latest ``relay_seq`` of the kernel's iopub here (0 before any)."""
        journal = self._journals.get(kernel_id)
        return journal.last_seq if journal is not None else 0

    def client_count(self, kernel_id: str) -> int:
        """How many distinct clients are attached to any channel of the kernel."""
        channels = self._attached.get(kernel_id, {})
        return len({client_id for clients in channels.values() for client_id in clients})

    def clients_by_channel(self) -> dict[str, int]:
        """How many clients are attached to each channel, over every kernel (for metrics)."""
        counts = dict.fromkeys(CHANNELS, 0)
        for channels in self._attached.values():
            for channel, clients in channels.items():
                counts[channel] += len(clients)
        return counts

    def principal(self, credentials: Sequence[str | None]) -> str:
        """Whom ``credentials`` make their holder, as a name that is no secret (see ``TokenAuth.principal``)."""
        return self._auth.principal(credentials)

    # -- clients -------------------------------------------------------------------------------------------

    def admit(
        self,
        client: RelayClient,
        kernel_id: str,
        channel: str,
        credentials: Sequence[str | None],
    ) -> Kernel:
        """The kernel a client may attach to on ``channel``; :class:`Refused` says why not."""
        grant = self._auth.grant(credentials)
        where = f"{channel} of kernel {short_id(kernel_id)}"
        if isinstance(grant, Scope) and not grant.allows_channel(kernel_id, channel):
            self.metrics.error("auth")
            log.warn(
                "Refused {address} on {where}: its token is limited to {access} access to kernel {kernel}",
                address=client.address,
                where=where,
                access=grant.access,
                kernel=short_id(grant.kernel_id),
            )
            raise Refused(grant.refusal, 403)
        if grant is False:
            self.metrics.error("auth")
            log.warn(
                "Refused {address} on {where}: no valid token", address=client.address, where=where
            )
            raise Refused('Authentication required: connect with auth {"token": "<token>"}', 401)
        try:
            kernel = self._kernels.get(kernel_id)
        except UnknownKernel:
            self.metrics.error("connect_refused")
            log.info(
                "Refused {address} on {where}: no running kernel has that id",
                address=client.address,
                where=where,
            )
            raise Refused(f"No running kernel with id {kernel_id}", 404) from None
        limit = self._limits.max_clients_per_kernel
        attached = self._attached.get(kernel.id, {})
        if limit is not None and not any(client.client_id in c for c in attached.values()):
            if self.client_count(kernel.id) >= limit:
                self.metrics.error("connect_refused")
                log.warn(
                    "Refused {address} on {where}: kernel has {limit} clients already",
                    address=client.address,
                    where=where,
                    limit=limit,
                )
                raise Refused(f"Kernel {kernel.id} already has the maximum of {limit} clients", 429)
        return kernel

    def attach(self, client: RelayClient, kernel: Kernel, channel: str, resume: Resume) -> None:
        """
        Attach an admitted client to a kernel's channel. A joining iopub client first gets what ``resume``
        asks for (the messages after ``since``, or the running cell's output so far).
        """
        if channel != IOPUB:
            key = (client.client_id, kernel.id)
            link = self._links.get(key)
            if link is None:
                link = self._links[key] = self._open_link(kernel, client)
            link.channels.add(channel)
        self._attached.setdefault(kernel.id, {}).setdefault(channel, {})[client.client_id] = client
        log.info(
            "Client {address} connected to {channel} of kernel {kernel}",
            address=client.address,
            channel=channel,
            kernel=short_id(kernel.id),
        )
        if channel == IOPUB:
            # Attached first: a client closed by what its replay costs is detached like any other.
            self._replay_to(client, kernel, resume)

    def detach(self, client: RelayClient, kernel_id: str, channel: str, reason: str) -> None:
        """The client left a kernel's channel (or the core let it go); its ZMQ line closes with its last channel."""
        channels = self._attached.get(kernel_id)
        clients = channels.get(channel) if channels is not None else None
        if clients is None or clients.get(client.client_id) is not client:
            return
        del clients[client.client_id]
        if channel == IOPUB:
            self._end_replay(kernel_id, client.client_id)
        key = (client.client_id, kernel_id)
        link = self._links.get(key)
        if link is not None and channel in link.channels:
            link.channels.discard(channel)
            if not link.channels:
                del self._links[key]
                link.kernel_client.close()
        log.info(
            "Client {address} left {channel} of kernel {kernel} ({reason})",
            address=client.address,
            channel=channel,
            kernel=short_id(kernel_id),
            reason=reason,
        )

    def drained(self, client: RelayClient) -> None:
        """What was sent to the client has gone out (its front's transport drained): hand on its replays."""
        replays = self._replays_of.get(client.client_id)
        if replays is not None:
            for replay in list(replays.values()):
                if replay.client is client:
                    replay.feed()

    def receive(self, client: RelayClient, kernel_id: str, channel: str, message: Any) -> str:
        """
        Relay a client's Jupyter message to the kernel and return the ``msg_id`` it was sent with;
        :class:`Refused` (already counted, logged and told to the client) when it cannot be.
        """
        if channel == IOPUB:
            self.refuse(
                client,
                kernel_id,
                channel,
                "iopub is read-only: send requests on shell or control",
                message,
            )
        if not isinstance(message, dict):
            self.refuse(
                client,
                kernel_id,
                channel,
                f'the argument of a "msg" event must be a Jupyter message object, not {_json_kind(message)}',
                message,
            )
        buffers = message.get("buffers") or []
        if buffers and (
            not isinstance(buffers, list) or not all(isinstance(b, bytes) for b in buffers)
        ):
            self.refuse(
                client, kernel_id, channel, "buffers must be a list of binary attachments", message
            )
        link = self._links.get((client.client_id, kernel_id))
        if link is None:
            self.refuse(
                client, kernel_id, channel, f"kernel {kernel_id} is no longer running", message
            )
        try:
            msg_id = link.kernel_client.send(channel, message, buffers)
        except InvalidMessage as error:
            self.refuse(client, kernel_id, channel, str(error), message)
        self.metrics.relayed(TO_KERNEL, link.kernel_client.last_sent_bytes)
        return msg_id

    def refuse(
        self, client: RelayClient, kernel_id: str, channel: str, reason: str, message: object
    ) -> NoReturn:
        """Tell the client why its message was not relayed (never drop it silently), then raise Refused."""
        self.metrics.error("refused_message")
        if self.refusal_log.allow(client.address):
            log.warn(
                "Refused a message from {address} on {channel} of kernel {kernel}: {reason}",
                address=client.address,
                channel=channel,
                kernel=short_id(kernel_id),
                reason=reason,
            )
        client.tell(kernel_id, channel, ERROR, {"message": reason, "msg_id": _msg_id_of(message)})
        raise Refused(reason)

    # -- iopub -----------------------------------------------------------------------------------------

    def publish_iopub(
        self,
        kernel_id: str,
        message: KernelMessage | dict[str, Any],
        size: int = 0,
        msg_type: str = "status",
    ) -> None:
        """
        Number one iopub message (from the kernel or made by the relay), keep it in the kernel's journal,
        and deliver it to every iopub client of the kernel.
        """
        journal = self._journals.get(kernel_id)
        if self._numbering is not None and journal is not None:
            self._publish_numbered(kernel_id, journal, message, size, msg_type)
            return
        clients = self._attached.get(kernel_id, {}).get(IOPUB)
        outgoing: Outgoing
        if journal is not None:
            outgoing = journal.record(message, size, msg_type)
        elif isinstance(message, KernelMessage):
            outgoing = Outgoing.of_kernel(message)
        else:
            outgoing = Outgoing.of_dict(message)
        if not clients:
            return
        self.metrics.relayed(TO_CLIENT, size)
        replays = self._replays.get(kernel_id)
        if replays:
            self._deliver_live(kernel_id, clients, replays, outgoing, journal is not None)
            return
        for client in list(clients.values()):
            client.deliver(kernel_id, IOPUB, outgoing)

    def _deliver_live(
        self,
        kernel_id: str,
        clients: dict[str, RelayClient],
        replays: dict[str, ReplayStream],
        outgoing: Outgoing,
        kept: bool,
    ) -> None:
        """Deliver a live iopub message; a client whose replay is under way gets it in its turn."""
        for client in list(clients.values()):
            replay = replays.get(client.client_id)
            if replay is not None and replay.client is client:
                replay.live(outgoing, kept)
            else:
                client.deliver(kernel_id, IOPUB, outgoing)

    def _publish_numbered(
        self,
        kernel_id: str,
        journal: IopubJournal,
        message: KernelMessage | dict[str, Any],
        size: int,
        msg_type: str,
    ) -> None:
        """``publish_iopub`` with the fleet's numbers: a kernel's message is kept, a relay's own is not."""
        assert self._numbering is not None
        kernel_message = isinstance(message, KernelMessage)
        outgoing = (
            Outgoing.of_kernel(message)
            if isinstance(message, KernelMessage)
            else Outgoing.of_dict(message)
        )

        def ready(seq: int | None) -> None:
            if self._journals.get(kernel_id) is not journal:
                return  # the kernel ended meanwhile
            if seq is None:
                self._unplaced(kernel_id, journal)
                return
            numbered = (
                journal.record(outgoing, size, msg_type, seq)
                if kernel_message
                else with_sequence(outgoing, seq)
            )
            clients = self._attached.get(kernel_id, {}).get(IOPUB)
            if not clients:
                return
            self.metrics.relayed(TO_CLIENT, size)
            replays = self._replays.get(kernel_id)
            if replays:
                self._deliver_live(kernel_id, clients, replays, numbered, kernel_message)
                return
            for client in list(clients.values()):
                client.deliver(kernel_id, IOPUB, numbered)

        if isinstance(message, KernelMessage):
            self._numbering.number(kernel_id, message.msg_id, outgoing, ready)
        else:
            self._numbering.after(kernel_id, ready)

    def _unplaced(self, kernel_id: str, journal: IopubJournal) -> None:
        """A kernel's message the fleet numbered too long ago for this relay: its clients hear of a gap."""
        self.metrics.error("replay_gap")
        gap = {
            "reason": "fleet",
            "message": "a message of the kernel reached this relay after the fleet's stream had moved "
            "past it: it is not delivered here",
            "last_seq": journal.last_seq,
            "kernel_id": kernel_id,
        }
        for client in list(self._attached.get(kernel_id, {}).get(IOPUB, {}).values()):
            client.tell(kernel_id, IOPUB, REPLAY_GAP, gap)

    def _replay_to(self, client: RelayClient, kernel: Kernel, resume: Resume) -> None:
        for reason in resume.ignored:
            log.info(
                "Client {address} on iopub of kernel {kernel}: {reason}",
                address=client.address,
                kernel=short_id(kernel.id),
                reason=reason,
            )
            client.tell(kernel.id, IOPUB, ERROR, {"message": reason, "msg_id": None})
        journal = self._journals.get(kernel.id)
        if journal is None or (resume.since is None and not resume.execution):
            return
        backlog = client.backlog
        if backlog >= REPLAY_BACKLOG:
            self.metrics.error("replay_gap")
            log.warn(
                "No replay for {address} on iopub of kernel {kernel}: {backlog} bytes still wait to go out to it",
                address=client.address,
                kernel=short_id(kernel.id),
                backlog=backlog,
            )
            gap = {
                "reason": "backlog",
                "message": f"nothing was replayed: {backlog} bytes sent earlier still wait to go out to "
                "this client; join again once it has read them",
                "last_seq": journal.last_seq,
                "kernel_id": kernel.id,
            }
            client.tell(kernel.id, IOPUB, REPLAY_GAP, gap)
            return
        if (
            resume.since is not None
            and self._numbering is not None
            and (resume.since + 1 < journal.first_seq or resume.since > journal.last_seq)
        ):
            # Older than what this relay keeps, or newer than what it has seen: the fleet's stream knows.
            self._catch_up(client, kernel, journal, resume.since)
            return
        if resume.since is not None:
            if resume.since > journal.last_seq:
                replay = journal.since(resume.since)
                assert replay.gap is not None
                self.metrics.error("replay_gap")
                client.tell(kernel.id, IOPUB, REPLAY_GAP, {**replay.gap, "kernel_id": kernel.id})
                return
            position = resume.since
        else:
            start = journal.execution_start()
            if start is None:
                return
            position = start - 1
        self._start_replay(client, kernel, journal, position).feed()

    def _start_replay(
        self, client: RelayClient, kernel: Kernel, journal: IopubJournal, position: int
    ) -> ReplayStream:
        """A replay to the client from after ``position``, handed on as it drains (see :mod:`.replay`)."""
        self._end_replay(kernel.id, client.client_id)
        replay = ReplayStream(
            client,
            kernel.id,
            journal,
            position,
            tell=self._tell_gap,
            done=self._replay_done,
        )
        self._replays.setdefault(kernel.id, {})[client.client_id] = replay
        self._replays_of.setdefault(client.client_id, {})[kernel.id] = replay
        return replay

    def _tell_gap(
        self, client: RelayClient, kernel_id: str, event: str, details: dict[str, Any]
    ) -> None:
        self.metrics.error("replay_gap")
        client.tell(kernel_id, IOPUB, event, details)

    def _replay_done(self, replay: ReplayStream) -> None:
        self._end_replay(replay.kernel_id, replay.client.client_id, replay)
        self.metrics.replayed(replay.count)
        log.info(
            "Replayed {count} iopub message(s) of kernel {kernel} to {address}{fleet}",
            count=replay.count,
            kernel=short_id(replay.kernel_id),
            address=replay.client.address,
            fleet=f" ({replay.from_elsewhere} from the fleet)" if replay.from_elsewhere else "",
        )

    def _end_replay(
        self, kernel_id: str, client_id: str, replay: ReplayStream | None = None
    ) -> ReplayStream | None:
        """Forget the client's replay of the kernel (``replay`` only, if given); the one forgotten."""
        replays = self._replays.get(kernel_id)
        current = replays.get(client_id) if replays is not None else None
        if current is None or (replay is not None and current is not replay):
            return None
        current.stop()
        del replays[client_id]  # type: ignore[union-attr]
        if not replays:
            del self._replays[kernel_id]
        of_client = self._replays_of[client_id]
        del of_client[kernel_id]
        if not of_client:
            del self._replays_of[client_id]
        return current

    def _catch_up(
        self, client: RelayClient, kernel: Kernel, journal: IopubJournal, since: int
    ) -> None:
        """
        Replay to a client that resumes from before what this relay keeps (it saw them on another relay of
        the fleet): the older messages come from the fleet's stream, then this relay's own, then what came
        meanwhile, each once and in order.
        """
        assert self._numbering is not None
        replay = self._start_replay(client, kernel, journal, since)
        replay.waiting = True  # live messages wait in it meanwhile
        # Where this relay's own journal takes over (nothing of its own yet: the stream gives all).
        first_local = journal.first_seq if journal.last_seq else sys.maxsize

        def fetched(entries: list[tuple[int, float, Outgoing]]) -> None:
            horizon = self._clock.seconds() - self._replay.max_age
            older = [
                (seq, m)
                for seq, when, m in entries
                if since < seq < first_local and when >= horizon
            ]
            finish(older, None)

        def failed(failure: Failure) -> None:
            finish([], f"the fleet's stream could not be read: {failure.getErrorMessage()}")

        def finish(older: list[tuple[int, Outgoing]], problem: str | None) -> None:
            if replay.ended:
                return  # the client left meanwhile
            if older:
                first = older[0][0]
            elif first_local != sys.maxsize:
                first = min(first_local, journal.last_seq + 1)
            else:  # what this relay recorded during the fetch, if anything
                first = journal.first_seq
            if first > since + 1:
                self.metrics.error("replay_gap")
                gap = {
                    "reason": "expired",
                    "message": problem or f"messages {since + 1} to {first - 1} are no longer kept",
                    "from": since + 1,
                    "to": first - 1,
                    "kernel_id": kernel.id,
                }
                client.tell(kernel.id, IOPUB, REPLAY_GAP, gap)
            # The journal takes over where the stream's messages end (from first_local, or, with nothing of
            # its own before the fetch, from what it recorded since): none twice, and the gap told once.
            replay.start(
                [with_sequence(m, seq) for seq, m in older],
                first_local if first_local != sys.maxsize else first,
            )

        self._numbering.fetch(kernel.id, since).addCallbacks(fetched, failed)

    # -- shell, control, stdin -------------------------------------------------------------------------

    def _open_link(self, kernel: Kernel, client: RelayClient) -> _Link:
        key = (client.client_id, kernel.id)

        def deliver(message: KernelMessage) -> None:
            link = self._links.get(key)
            channel = message.channel
            if link is not None and channel in link.channels:
                recipients = [client]
            else:
                recipients = self._stdin_fallback(kernel, message)
            if not recipients:
                log.warn(
                    "Kernel {kernel} sent {msg_type} on {channel} to a client that is not connected to "
                    "that channel; it was not delivered",
                    kernel=short_id(kernel.id),
                    msg_type=message.msg_type,
                    channel=channel,
                )
                return
            size = message.size
            if self._too_big(size):
                details = self._oversized(kernel, message, size)
                for recipient in recipients:
                    recipient.tell(kernel.id, channel, ERROR, details)
                return
            self.metrics.relayed(TO_CLIENT, size)
            outgoing = Outgoing.of_kernel(message)
            for recipient in recipients:
                recipient.deliver(kernel.id, channel, outgoing)

        return _Link(kernel.open_client(client.client_id.encode("utf-8"), deliver))

    def _stdin_fallback(self, kernel: Kernel, message: KernelMessage) -> list[RelayClient]:
        """
        Every stdin client of the kernel, for an ``input_request`` whose asker has none of its own.

        enchannel-socketio-backend joins stdin on a second connection, not on the one its
        ``execute_request`` came from. The kernel reads an ``input_reply`` from any stdin identity, so
        whichever stdin client answers is heard.
        """
        if message.channel != STDIN:
            return []
        return list(self._attached.get(kernel.id, {}).get(STDIN, {}).values())

    def _too_big(self, size: int) -> bool:
        limit = self._limits.max_message_size
        return limit is not None and size > limit

    def _oversized(self, kernel: Kernel, message: KernelMessage, size: int) -> dict[str, Any]:
        """What clients are told of a kernel message over the size limit."""
        self.metrics.error("oversized_message")
        log.warn(
            "Kernel {kernel} sent {msg_type} on {channel}: {size} bytes, over the limit; not forwarded",
            kernel=short_id(kernel.id),
            msg_type=message.msg_type,
            channel=message.channel,
            size=size,
        )
        return {
            "message": f"a {message.msg_type} message of {size} bytes from the kernel exceeds the relay's "
            f"limit of {self._limits.max_message_size} bytes and was not forwarded",
            "msg_id": message.msg_id,
            "msg_type": message.msg_type,
            "parent_msg_id": message.parent_msg_id,
            "channel": message.channel,
        }

    # -- KernelObserver ---------------------------------------------------------------------------------

    def kernel_started(self, kernel: Kernel) -> None:
        self._journals[kernel.id] = IopubJournal(
            self._clock, max_bytes=self._replay.max_bytes, max_age=self._replay.max_age
        )

        def forward(message: KernelMessage) -> None:
            size = message.size
            if self._too_big(size):
                details = self._oversized(kernel, message, size)
                for client in list(self._attached.get(kernel.id, {}).get(IOPUB, {}).values()):
                    client.tell(kernel.id, IOPUB, ERROR, details)
                return
            self.publish_iopub(kernel.id, message, size, message.msg_type)

        kernel.add_iopub_listener(forward)

    def kernel_stopped(self, kernel: Kernel, reason: str) -> None:
        if self._numbering is not None:
            # What the kernel said last is still being numbered: it reaches the clients before they go.
            self._numbering.after(kernel.id, lambda _: self._kernel_ended(kernel, reason))
        else:
            self._kernel_ended(kernel, reason)

    def _kernel_ended(self, kernel: Kernel, reason: str) -> None:
        if reason.startswith("died"):
            self.metrics.error("kernel_died")
        self._cut_replays(kernel, reason)
        if reason == "shutdown" or reason.startswith("died"):
            status = relay_status(kernel, "dead", self._clock)
            journal = self._journals.get(kernel.id)
            if self._numbering is not None and journal is not None:
                # Now, not behind later messages: its clients are let go right after.
                dead = with_sequence(Outgoing.of_dict(status), journal.last_seq)
                for client in list(self._attached.get(kernel.id, {}).get(IOPUB, {}).values()):
                    client.deliver(kernel.id, IOPUB, dead)
            else:
                self.publish_iopub(kernel.id, status, STATUS_SIZE)
        for channel, clients in list(self._attached.get(kernel.id, {}).items()):
            for client in list(clients.values()):
                client.let_go(kernel.id, channel, f"kernel {reason}")
        self._attached.pop(kernel.id, None)
        for key in [key for key in self._links if key[1] == kernel.id]:
            self._links.pop(key).kernel_client.close()
        self._journals.pop(kernel.id, None)
        if self._numbering is not None:
            self._numbering.forget(kernel.id)
        self._auth.scoped.revoke_kernel(kernel.id)

    def _cut_replays(self, kernel: Kernel, reason: str) -> None:
        """The kernel ended: its clients that were still replaying are told what they will not get."""
        journal = self._journals.get(kernel.id)
        for replay in list(self._replays.get(kernel.id, {}).values()):
            self._end_replay(kernel.id, replay.client.client_id, replay)
            last = journal.last_seq if journal is not None else replay.position
            if last > replay.position:
                self._tell_gap(
                    replay.client,
                    kernel.id,
                    REPLAY_GAP,
                    {
                        "reason": "ended",
                        "message": f"the replay was cut short (kernel {reason}): messages "
                        f"{replay.position + 1} to {last} were not sent",
                        "from": replay.position + 1,
                        "to": last,
                        "kernel_id": kernel.id,
                    },
                )

    def kernel_restarting(self, kernel: Kernel) -> None:
        self.publish_iopub(
            kernel.id,
            relay_status(kernel, "restarting", self._clock, REQUESTED_RESTART),
            STATUS_SIZE,
        )

    def kernel_restarted(self, kernel: Kernel) -> None:
        self._publish_status(kernel, "starting")

    def kernel_ready(self, kernel: Kernel) -> None:
        # The kernel's own statuses went out while the relay's subscription was reconnecting.
        self._publish_status(kernel, kernel.execution_state)

    def stopping(self) -> None:
        """The relay is stopping and will shut down its kernels: their iopub clients see each one ``dead``."""
        for kernel in self._kernels.owned():
            self._publish_status(kernel, "dead")

    def _publish_status(self, kernel: Kernel, execution_state: str) -> None:
        self.publish_iopub(
            kernel.id, relay_status(kernel, execution_state, self._clock), STATUS_SIZE
        )

    # -- HeartbeatListener ------------------------------------------------------------------------------

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
        for channel, clients in list(self._attached.get(kernel.id, {}).items()):
            for client in list(clients.values()):
                client.tell(kernel.id, channel, ERROR, error)

    def kernel_reachable(self, kernel: Kernel) -> None:
        """Nothing to send: the kernel's own replies and iopub messages show it is back."""

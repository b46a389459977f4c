"""
The relay core: which client is attached to which kernel channel, and who receives which message.

- iopub: every attached client receives every iopub message of the kernel, numbered (:mod:`.numbering`) and
  kept in the kernel's journal (:mod:`.journal`) so a client that comes back gets what it missed, streamed
  from the journal as it reads (:mod:`.replays`; a front calls :meth:`RelayCore.drained` when a client's
  transport drained).
- shell, control, stdin: each client (one connection of a front, however many channels and kernels it uses)
  has its own ZMQ identity towards each kernel, so replies and ``input_request``\\ s reach exactly the client
  whose request caused them; an ``input_request`` whose client is not attached to stdin goes to every stdin
  client of the kernel (the kernel takes the first ``input_reply``).
- Admission (:mod:`.admission`): a client presents candidate tokens; a kernel token opens only its kernel
  (read-only ones its iopub); a kernel takes at most ``max_clients_per_kernel`` clients.
- Kernel events: a kernel that stops or dies is announced on iopub as ``dead`` and its clients are let go; a
  restart is announced as ``restarting`` (marked as asked for: :func:`.status.is_requested_restart`) and
  ``starting``; a kernel that stops answering its heartbeat is told to every client of it.

The core speaks to clients only through :class:`~.client.RelayClient` (deliver a message, tell an event of
:mod:`.events`, let go of a channel), so it knows no wire format: each front (``kernel_relay.fronts``) adapts
one protocol to it. It must not import a front, socket.io, Engine.IO or HTTP.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from ..auth import TokenAuth
from ..kernels import (
    CHANNELS,
    IOPUB,
    InvalidMessage,
    Kernel,
    KernelMessage,
    KernelRegistry,
    SocketsExhausted,
)
from ..metrics import TO_CLIENT, TO_KERNEL, RelayMetrics
from .admission import Admission
from .client import InternalClient, Refused, RelayClient, msg_id_of, short_id
from .events import ClientEvent, KernelUnreachable, MessageRefused, MessageTooBig, MessageUnplaced
from .journal import IopubJournal, Resume
from .ledger import LedgerOptions, RequestLedger
from .links import Links
from .lograte import LogLimit
from .numbering import FleetNumbering, IopubNumbering, LocalNumbering, Numbering
from .payload import Outgoing
from .replays import REPLAY_BACKLOG, Replays
from .status import REQUESTED_RESTART, STATUS_SIZE, current_state, relay_status

__all__ = [
    "CHANNELS",
    "IOPUB",
    "REPLAY_BACKLOG",
    "IopubNumbering",
    "Refused",
    "RelayClient",
    "RelayCore",
    "RelayLimits",
    "ReplayOptions",
]

log = Logger()


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
        ledger: LedgerOptions | None = None,
    ) -> None:
        self._kernels = kernels
        self._numbering: Numbering = (
            FleetNumbering(numbering) if numbering is not None else LocalNumbering()
        )
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
        self.ledger = RequestLedger(clock, ledger)
        """Every execute_request sent through the core, readable again by its msg_id (:mod:`.ledger`)."""
        self._links = Links(self.metrics, self._clients_on, self._too_big, self.ledger.observe)
        self._replays = Replays(self._numbering, self.metrics, clock, self._replay.max_age)
        self._admission = Admission(
            kernels,
            self._auth,
            self.metrics,
            self._limits.max_clients_per_kernel,
            self._is_attached,
            self.client_count,
        )
        self.metrics.watch(lambda: len(kernels), self.clients_by_channel)
        kernels.add_observer(self)

    # -- queries -------------------------------------------------------------------------------------------

    def has_kernel(self, kernel_id: str) -> bool:
        """Whether the kernel runs (a front checks again once a slow handshake is over)."""
        return kernel_id in self._kernels

    def find_kernel(self, kernel_id: str) -> Deferred[None] | None:
        """Before a client of an unknown kernel is refused: see :meth:`KernelRegistry.find`."""
        return self._kernels.find(kernel_id)

    def last_seq(self, kernel_id: str) -> int:
        """The latest ``relay_seq`` of the kernel's iopub here (0 before any)."""
        journal = self._journals.get(kernel_id)
        return journal.last_seq if journal is not None else 0

    def client_count(self, kernel_id: str) -> int:
        """How many distinct client connections are attached to any channel of the kernel (no InternalClient)."""
        on = [c for clients in self._attached.get(kernel_id, {}).values() for c in clients.values()]
        return len({c.client_id for c in on if not isinstance(c, InternalClient)})

    def _clients_on(self, kernel_id: str, channel: str) -> list[RelayClient]:
        return list(self._attached.get(kernel_id, {}).get(channel, {}).values())

    def _is_attached(self, kernel_id: str, client_id: str) -> bool:
        return any(client_id in clients for clients in self._attached.get(kernel_id, {}).values())

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
        return self._admission.admit(
            client.address, client.client_id, kernel_id, channel, credentials
        )

    def allowed_channels(
        self, address: str, kernel_id: str, credentials: Sequence[str | None]
    ) -> tuple[Kernel, tuple[str, ...]]:
        """
        The kernel and the channels of it a new client holding ``credentials`` may use, iopub first;
        :class:`Refused` when not even iopub (a token of another kernel, none valid), or the kernel is
        unknown or full.
        """
        return self._admission.channels(address, kernel_id, credentials)

    def attach(self, client: RelayClient, kernel: Kernel, channel: str, resume: Resume) -> None:
        """
        Attach an admitted client to a kernel's channel. A joining iopub client is first told the kernel's
        state (:func:`.status.current_state`), then gets what ``resume`` asks for (the messages after
        ``since``, or the running cell's output so far). Raises :class:`Refused` (503) when the client's line
        to the kernel cannot be opened: the relay has no ZeroMQ socket left.
        """
        if channel != IOPUB:
            try:
                self._links.join(client, kernel, channel)
            except SocketsExhausted as error:
                self.metrics.error("sockets_exhausted")
                log.warn(
                    "Client {address} refused: {error}", address=client.address, error=str(error)
                )
                raise Refused(f"The relay is full: {error}", 503) from None
        self._attached.setdefault(kernel.id, {}).setdefault(channel, {})[client.client_id] = client
        log.info(
            "Client {address} connected to {channel} of kernel {kernel}",
            address=client.address,
            channel=channel,
            kernel=short_id(kernel.id),
        )
        if channel == IOPUB:
            # The kernel's state before anything else: no client is left to guess it ("Unknown").
            # The number it has read up to: its since, none before a replay of the cell, else the latest.
            seq = (
                resume.since
                if resume.since is not None
                else 0
                if resume.execution
                else self.last_seq(kernel.id)
            )
            client.deliver(kernel.id, IOPUB, current_state(kernel, self._clock, seq))
            # Attached first: a client closed by what its replay costs is detached like any other.
            self._replays.resume(client, kernel.id, self._journals.get(kernel.id), resume)

    def detach(self, client: RelayClient, kernel_id: str, channel: str, reason: str) -> None:
        """The client left a kernel's channel (or the core let it go); its ZMQ line closes with its last channel."""
        channels = self._attached.get(kernel_id)
        clients = channels.get(channel) if channels is not None else None
        if clients is None or clients.get(client.client_id) is not client:
            return
        del clients[client.client_id]
        if channel == IOPUB:
            self._replays.end(kernel_id, client.client_id)
        self._links.leave(client.client_id, kernel_id, channel)
        log.info(
            "Client {address} left {channel} of kernel {kernel} ({reason})",
            address=client.address,
            channel=channel,
            kernel=short_id(kernel_id),
            reason=reason,
        )

    def drained(self, client: RelayClient) -> None:
        """What was sent to the client has gone out (its front's transport drained): hand on its replays."""
        self._replays.drained(client)

    def receive(
        self, client: RelayClient, kernel_id: str, channel: str, message: Mapping[str, Any]
    ) -> str:
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
                msg_id_of(message),
            )
        buffers = message.get("buffers") or []
        if buffers and (
            not isinstance(buffers, list) or not all(isinstance(b, bytes) for b in buffers)
        ):
            reason = "buffers must be a list of binary attachments"
            self.refuse(client, kernel_id, channel, reason, msg_id_of(message))
        line = self._links.line(client.client_id, kernel_id)
        if line is None:
            reason = f"kernel {kernel_id} is no longer running"
            self.refuse(client, kernel_id, channel, reason, msg_id_of(message))
        try:
            msg_id = line.send(channel, message, buffers)
        except InvalidMessage as error:
            self.refuse(client, kernel_id, channel, str(error), msg_id_of(message))
        self.metrics.relayed(TO_KERNEL, line.last_sent_bytes)
        self.ledger.sent(kernel_id, channel, message, msg_id)
        return msg_id

    def refuse(
        self, client: RelayClient, kernel_id: str, channel: str, reason: str, msg_id: str | None
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
        client.tell(kernel_id, channel, MessageRefused(reason, msg_id))
        raise Refused(reason)

    # -- iopub -----------------------------------------------------------------------------------------

    def publish_iopub(
        self,
        kernel_id: str,
        message: Outgoing,
        kind: tuple[str | None, int, str] = (None, STATUS_SIZE, "status"),
    ) -> None:
        """
        Number one iopub message (``kind``: its ``msg_id``, or None for one the relay made; its size; its
        ``msg_type``), keep it in the kernel's journal, and deliver it to every iopub client of the kernel.
        """
        journal = self._journals.get(kernel_id)
        if journal is None:
            self._to_iopub(kernel_id, message, kind[1], False)
        else:
            self._numbering.place(kernel_id, journal, message, kind, self._placed)

    def _placed(
        self,
        kernel_id: str,
        journal: IopubJournal,
        size: int,
        numbered: Outgoing | None,
        kept: bool,
    ) -> None:
        """An iopub message is numbered: deliver it (unless its kernel ended meanwhile)."""
        if self._journals.get(kernel_id) is not journal:
            return
        if numbered is None:
            self._unplaced(kernel_id, journal)
        else:
            self._to_iopub(kernel_id, numbered, size, kept)

    def _to_iopub(self, kernel_id: str, message: Outgoing, size: int, kept: bool) -> None:
        clients = self._attached.get(kernel_id, {}).get(IOPUB)
        if not clients:
            return
        self.metrics.relayed(TO_CLIENT, size)
        self._replays.deliver(kernel_id, clients, message, kept)

    def _unplaced(self, kernel_id: str, journal: IopubJournal) -> None:
        """A kernel's message the fleet numbered too long ago for this relay: its clients hear of a gap."""
        self.metrics.error("replay_gap")
        self._tell_all(kernel_id, MessageUnplaced(journal.last_seq), IOPUB)

    def _tell_all(self, kernel_id: str, event: ClientEvent, channel: str | None = None) -> None:
        """Tell every client of the kernel (on ``channel``, or on each channel it uses)."""
        for on, clients in list(self._attached.get(kernel_id, {}).items()):
            if channel is None or on == channel:
                for client in list(clients.values()):
                    client.tell(kernel_id, on, event)

    # -- kernel messages ---------------------------------------------------------------------------------

    def _too_big(self, kernel: Kernel, message: KernelMessage, size: int) -> MessageTooBig | None:
        """What clients are told of a kernel's message (of ``size`` bytes) over the size limit, or None."""
        limit = self._limits.max_message_size
        if limit is None or size <= limit:
            return None
        self.metrics.error("oversized_message")
        log.warn(
            "Kernel {kernel} sent {msg_type} on {channel}: {size} bytes, over the limit; not forwarded",
            kernel=short_id(kernel.id),
            msg_type=message.msg_type,
            channel=message.channel,
            size=size,
        )
        return MessageTooBig(
            message.msg_type, size, limit, message.msg_id, message.parent_msg_id, message.channel
        )

    # -- KernelObserver ---------------------------------------------------------------------------------

    def kernel_started(self, kernel: Kernel) -> None:
        self._journals[kernel.id] = IopubJournal(
            self._clock, max_bytes=self._replay.max_bytes, max_age=self._replay.max_age
        )

        def forward(message: KernelMessage) -> None:
            size = message.size
            too_big = self._too_big(kernel, message, size)
            if too_big is not None:
                self.ledger.lost(kernel.id, message)
                self._tell_all(kernel.id, too_big, IOPUB)
                return
            self.ledger.observe(kernel.id, message)
            kind = (message.msg_id, size, message.msg_type)
            self.publish_iopub(kernel.id, Outgoing.of_kernel(message), kind)

        kernel.add_iopub_listener(forward)

    def kernel_stopped(self, kernel: Kernel, reason: str) -> None:
        # What the kernel said last may still be being numbered: it reaches the clients before they go.
        self._numbering.settled(kernel.id, lambda: self._kernel_ended(kernel, reason))

    def _kernel_ended(self, kernel: Kernel, reason: str) -> None:
        if reason.startswith("died"):
            self.metrics.error("kernel_died")
        journal = self._journals.get(kernel.id)
        self.ledger.kernel_ended(kernel.id, reason)
        self._replays.cut(kernel.id, journal, reason)
        if reason == "shutdown" or reason.startswith("died"):
            status = relay_status(kernel, "dead", self._clock)
            if journal is not None:
                # Now, not behind later messages: its clients are let go right after.
                dead, kept = self._numbering.place_now(journal, status)
                self._to_iopub(kernel.id, dead, STATUS_SIZE, kept)
            else:
                self.publish_iopub(kernel.id, status)
        for channel, clients in list(self._attached.get(kernel.id, {}).items()):
            for client in list(clients.values()):
                client.let_go(kernel.id, channel, f"kernel {reason}")
        self._attached.pop(kernel.id, None)
        self._links.close_kernel(kernel.id)
        self._journals.pop(kernel.id, None)
        self._numbering.forget(kernel.id)
        self._auth.scoped.revoke_kernel(kernel.id)

    def kernel_restarting(self, kernel: Kernel) -> None:
        self.ledger.kernel_ended(kernel.id, "restarting")
        self.publish_iopub(
            kernel.id, relay_status(kernel, "restarting", self._clock, REQUESTED_RESTART)
        )

    def kernel_restarted(self, kernel: Kernel) -> None:
        self.publish_iopub(kernel.id, relay_status(kernel, "starting", self._clock))

    def kernel_ready(self, kernel: Kernel) -> None:
        # The kernel's own statuses went out while the relay's subscription was reconnecting.
        self.publish_iopub(kernel.id, relay_status(kernel, kernel.execution_state, self._clock))

    def stopping(self) -> None:
        """The relay is stopping and will shut down its kernels: their iopub clients see each one ``dead``."""
        for kernel in self._kernels.owned():
            self.publish_iopub(kernel.id, relay_status(kernel, "dead", self._clock))

    # -- HeartbeatListener ------------------------------------------------------------------------------

    def kernel_unreachable(self, kernel: Kernel, silent_for: float) -> None:
        """Tell every client of the kernel that it stopped answering, instead of leaving them waiting."""
        self.metrics.error("kernel_unreachable")
        self._tell_all(kernel.id, KernelUnreachable(silent_for))

    def kernel_reachable(self, kernel: Kernel) -> None:
        """Nothing to send: the kernel's own replies and iopub messages show it is back."""

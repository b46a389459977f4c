"""
What the core tells a client besides its kernels' messages, as typed values (frozen dataclasses): each front
renders them in its own form and words, so the core knows no wire format and no client's vocabulary.

- :data:`KernelError`: something the client should know that concerns one of its messages or its kernel (a
  message refused, one of the kernel's too big to forward, a kernel that stopped answering).
- :data:`ReplayGap`: output a resuming iopub client will not get, and why.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MessageRefused:
    """A client's message (or an option it sent) was not used: ``reason`` says why."""

    reason: str
    msg_id: str | None = None


@dataclass(frozen=True)
class MessageTooBig:
    """A kernel's message over the relay's size limit: it reached no client."""

    msg_type: str
    size: int
    limit: int
    msg_id: str
    parent_msg_id: str
    channel: str


@dataclass(frozen=True)
class KernelUnreachable:
    """The kernel has not answered its heartbeat for ``silent_for`` seconds."""

    silent_for: float


@dataclass(frozen=True)
class ReplayBacklogged:
    """No replay: ``backlog`` bytes sent earlier still wait to go out to the client."""

    backlog: int
    last_seq: int


@dataclass(frozen=True)
class ReplayExpired:
    """Messages ``first`` to ``last`` are no longer kept (``problem``: why they could not be had, if known)."""

    first: int
    last: int
    problem: str | None = None


@dataclass(frozen=True)
class ReplayAhead:
    """The client asked to resume after ``since``, a number this relay never gave (it is at ``last_seq``)."""

    since: int
    last_seq: int


@dataclass(frozen=True)
class MessageUnplaced:
    """A kernel's message came after the fleet's numbering had moved past it: not delivered here."""

    last_seq: int


@dataclass(frozen=True)
class ReplayCut:
    """The kernel ended (``why``) during the client's replay: messages ``first`` to ``last`` were not sent."""

    first: int
    last: int
    why: str


KernelError = MessageRefused | MessageTooBig | KernelUnreachable
ReplayGap = ReplayBacklogged | ReplayExpired | ReplayAhead | MessageUnplaced | ReplayCut
ClientEvent = KernelError | ReplayGap
"""Everything :meth:`RelayClient.tell <kernel_relay.relay.client.RelayClient.tell>` carries."""

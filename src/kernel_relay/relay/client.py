"""
The client contract: what a front implements for each of its client connections (:class:`RelayClient`), and
what the core answers when it will not do what a client asked (:class:`Refused`).

A front adapts one wire protocol to these four members and three methods, and nothing more: every decision
(admission, routing, replay, what a client is told) is the core's. A client that is no connection derives
from :class:`InternalClient`.
"""

from __future__ import annotations

from typing import Protocol

from .events import ClientEvent
from .payload import Outgoing


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

    def tell(self, kernel_id: str, channel: str, event: ClientEvent) -> None:
        """Tell the client an event of the core (:mod:`.events`) on one of its channels, in its front's words."""
        ...

    def let_go(self, kernel_id: str, channel: str, reason: str) -> None:
        """The core is done with the client on this channel (its kernel stopped): disconnect it."""
        ...


class InternalClient:
    """
    Base of a client of the core that is no client connection (the REST front's line to a kernel, which acts
    for HTTP requests): it counts neither in ``max_clients_per_kernel`` nor in a kernel's connections. Its
    front bounds it its own way.
    """


class Refused(Exception):
    """
    The core will not do what a client asked: ``message`` says why, ``code`` is an HTTP-like status for
    fronts that show one (401 no valid token, 403 outside a token's scope, 404 unknown kernel, 429 full).
    """

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


def short_id(kernel_id: str) -> str:
    """The first block of a kernel id: enough to tell kernels apart in a log line."""
    return kernel_id.split("-", 1)[0][:8]


def msg_id_of(message: object) -> str | None:
    """The ``msg_id`` of a client's message, if it has one (to say which message a refusal is about)."""
    header = message.get("header") if isinstance(message, dict) else None
    msg_id = header.get("msg_id") if isinstance(header, dict) else None
    return msg_id if isinstance(msg_id, str) else None

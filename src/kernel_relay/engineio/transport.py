"""
What an Engine.IO session needs from a transport (:class:`Transport`): HTTP long-polling
(:mod:`.polling`) and WebSocket (:mod:`.websocket`) each implement it, and tests fake it.

An interface module of its own so that the session, the server and both transports share it without
importing each other.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from .packets import Packet


class Transport(Protocol):
    """What a session needs from a transport (HTTP long-polling or one WebSocket connection)."""

    @property
    def name(self) -> str: ...

    @property
    def writable(self) -> bool:
        """Can ``send`` deliver packets now (a poll is pending, or the WebSocket is open)?"""
        ...

    @property
    def resumable(self) -> bool:
        """Might ``writable`` become true again later (a polling client's next request)?"""
        ...

    def send(self, packets: Sequence[Packet]) -> None:
        """Deliver ``packets`` in order; only called while ``writable``."""
        ...

    def finish(self, packets: Sequence[Packet]) -> None:
        """Deliver ``packets``, then signal the close as this transport does; while ``writable``."""
        ...

    def close(self) -> None:
        """The session is done with this transport: release it (idempotent)."""
        ...

    @property
    def connection(self) -> object | None:
        """The network connection (a Twisted transport) carrying this transport now, if any."""
        ...

    def discard(self) -> None:
        """Another transport took over: refuse whatever is still waiting here, then release."""
        ...

    def abort(self) -> None:
        """
        The session ends at once: drop what was handed over but not yet written, signal the close if
        that can go out now, then release (a slow client's backlog is never written).
        """
        ...

    @property
    def buffered_bytes(self) -> int:
        """Bytes handed to the connection that it could not write to the network yet."""
        ...

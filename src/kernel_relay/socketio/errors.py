"""Exceptions of the socket.io server API."""

from __future__ import annotations

from typing import Any


class ConnectionRefused(Exception):
    """
    Raised (or failed with) by a connect handler to refuse a client, with a reason it will see.

    The client receives a CONNECT_ERROR packet ``{"message": message, "data": data}``; ``data`` is
    left out when it is ``None``. Any other exception refuses with a generic message, so internal
    details never leak to clients.
    """

    def __init__(self, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.data = data


class AckTimeout(Exception):
    """The client did not acknowledge an event within the timeout given to ``Socket.call``."""


class Disconnected(Exception):
    """The socket was disconnected (or never connected) before the client acknowledged an event."""


class PacketError(ValueError):
    """A message that is not a valid socket.io packet (or arrives when it cannot be accepted)."""

"""The value types of the Engine.IO API: server options, handshake facts, the handler protocol."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from kernel_relay.origins import OriginPolicy

KNOWN_TRANSPORTS = ("polling", "websocket")


@dataclass(frozen=True)
class EngineIOOptions:
    """
    Server settings; times are in seconds, sizes in bytes.

    ``transports`` limits what is offered and accepted, so ``("websocket",)`` makes a WebSocket-only
    server and ``("polling",)`` one that never upgrades.
    """

    ping_interval: float = 25.0
    ping_timeout: float = 20.0
    max_payload: int = 1_000_000
    transports: tuple[str, ...] = ("polling", "websocket")
    origins: OriginPolicy = field(default_factory=OriginPolicy)
    upgrade_timeout: float = 10.0

    def __post_init__(self) -> None:
        unknown = [name for name in self.transports if name not in KNOWN_TRANSPORTS]
        if unknown or not self.transports:
            raise ValueError(f"transports must be a non-empty subset of {KNOWN_TRANSPORTS}")
        if self.ping_interval <= 0 or self.ping_timeout <= 0 or self.upgrade_timeout <= 0:
            raise ValueError("ping_interval, ping_timeout and upgrade_timeout must be positive")
        if self.max_payload <= 0:
            raise ValueError("max_payload must be positive")


@dataclass(frozen=True)
class HandshakeInfo:
    """What the request that opened a session said, kept for the layers above (auth, logging)."""

    remote_address: str
    query: Mapping[str, str]
    headers: Mapping[str, str]
    secure: bool
    transport: str
    protocol: int


class SessionHandler(Protocol):
    """Receives one session's messages; returned by the server's ``handler_factory``."""

    def message_received(self, data: str | bytes) -> None: ...

    def session_closed(self, reason: str) -> None: ...

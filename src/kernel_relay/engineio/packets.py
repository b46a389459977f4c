"""
Engine.IO packets and their two wire encodings, with no I/O.

A packet is a type digit plus optional data. Over WebSocket each packet is one frame (binary
messages are sent as raw binary frames); over HTTP long-polling several packets share one body,
separated by the record separator ``\\x1e``, binary messages written as ``b`` + base64.
Everything here is a pure function of its input so the codec can be tested (and fuzzed) offline.

The codec is looked up by protocol version (:func:`codec_for`) because Engine.IO v3 encodes payloads
differently; only v4 exists today, and callers never hard-code it.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Protocol

RECORD_SEPARATOR = "\x1e"
BINARY_PREFIX = "b"


class PacketType(IntEnum):
    """The seven Engine.IO packet types; the value is the digit on the wire."""

    OPEN = 0
    CLOSE = 1
    PING = 2
    PONG = 3
    MESSAGE = 4
    UPGRADE = 5
    NOOP = 6


class PacketDecodeError(ValueError):
    """Raised for anything a peer sends that is not a well-formed packet or payload."""


@dataclass(frozen=True)
class Packet:
    """
    One Engine.IO packet.

    ``data`` is text for every packet type; only a ``MESSAGE`` may carry ``bytes`` (binary message).
    """

    type: PacketType
    data: str | bytes = ""

    def __post_init__(self) -> None:
        if isinstance(self.data, bytes) and self.type is not PacketType.MESSAGE:
            raise ValueError(f"only message packets can carry binary data, not {self.type.name}")

    @property
    def is_binary(self) -> bool:
        return isinstance(self.data, bytes)


class PacketCodec(Protocol):
    """The encoding of one protocol version; transports use only this interface."""

    protocol: int

    def encode_frame(self, packet: Packet) -> str | bytes: ...

    def decode_frame(self, frame: str | bytes) -> Packet: ...

    def encode_payload(self, packets: Sequence[Packet]) -> str: ...

    def decode_payload(self, body: bytes) -> list[Packet]: ...


def _decode_text_packet(text: str) -> Packet:
    if not text:
        raise PacketDecodeError("empty packet")
    head, rest = text[0], text[1:]
    if head == BINARY_PREFIX:
        try:
            return Packet(PacketType.MESSAGE, base64.b64decode(rest.encode("ascii"), validate=True))
        except (UnicodeEncodeError, binascii.Error) as exc:
            raise PacketDecodeError("invalid base64 in binary packet") from exc
    if not ("0" <= head <= "6"):
        raise PacketDecodeError(f"unknown packet type {head!r}")
    return Packet(PacketType(int(head)), rest)


def _encode_text_packet(packet: Packet) -> str:
    if isinstance(packet.data, bytes):
        return BINARY_PREFIX + base64.b64encode(packet.data).decode("ascii")
    return f"{int(packet.type)}{packet.data}"


class V4Codec:
    """Engine.IO protocol 4: ``\\x1e``-separated payloads, binary always base64 in payloads."""

    protocol = 4

    def encode_frame(self, packet: Packet) -> str | bytes:
        """One WebSocket frame: text for text packets, the raw bytes for a binary message."""
        if isinstance(packet.data, bytes):
            return packet.data
        return _encode_text_packet(packet)

    def decode_frame(self, frame: str | bytes) -> Packet:
        """A WebSocket frame: a binary frame is always a binary message."""
        if isinstance(frame, bytes):
            return Packet(PacketType.MESSAGE, frame)
        # As in the reference server, a text frame may also use the "b" + base64 form.
        return _decode_text_packet(frame)

    def encode_payload(self, packets: Sequence[Packet]) -> str:
        """A polling response body carrying ``packets`` in order."""
        if not packets:
            raise ValueError("a payload carries at least one packet")
        return RECORD_SEPARATOR.join(_encode_text_packet(packet) for packet in packets)

    def decode_payload(self, body: bytes) -> list[Packet]:
        """A polling request body; all or nothing, so a bad body dispatches no packet at all."""
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise PacketDecodeError("payload is not valid UTF-8") from exc
        return [_decode_text_packet(part) for part in text.split(RECORD_SEPARATOR)]


_CODECS: dict[int, PacketCodec] = {4: V4Codec()}

SUPPORTED_PROTOCOLS: frozenset[int] = frozenset(_CODECS)


def codec_for(protocol: int) -> PacketCodec:
    """The codec of ``protocol``; ``KeyError`` for versions this server does not speak."""
    return _CODECS[protocol]

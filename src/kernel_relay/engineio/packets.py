"""
Engine.IO packets and their two wire encodings, with no I/O.

A packet is a type digit plus optional data. Over WebSocket each packet is one frame (binary
messages are sent as raw binary frames); over HTTP long-polling several packets share one body,
separated by the record separator ``\\x1e``, binary messages written as ``b`` + base64.
Everything here is a pure function of its input so the codec can be tested (and fuzzed) offline.

The codec is looked up by protocol version (:func:`codec_for`) because the two protocol generations
encode differently:

- **v4** (:class:`V4Codec`): payloads are packets joined by ``\\x1e``; binary messages in payloads are
  ``b`` + base64; a WebSocket binary frame is the raw message.
- **v3** (:class:`V3Codec`, socket.io 1.x/2.x clients): text payloads are ``<length>:<packet>``
  records whose length counts UTF-16 code units (as JavaScript's ``String.length``, so an astral
  character counts 2); binary messages in text payloads are ``b4`` + base64. A client that did not
  ask for ``b64=1`` may receive (and send) *binary payloads*: records ``<0|1><length digits as bytes
  0-9><0xFF><packet>``, 0 for a UTF-8 text packet and 1 for a binary one whose first byte is the
  packet type. A WebSocket binary frame is the type byte (``0x04``) followed by the message.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable, Sequence
from enum import IntEnum
from typing import NamedTuple, Protocol

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


#: The types by wire digit: indexing a tuple costs far less than calling the enum class.
_TYPES = tuple(PacketType)
#: ``new_packet_unchecked(Packet, (type, data))``: a Packet without ``Packet.__new__``'s check, for data
#: that cannot fail it (text, or any data of a message), on the paths taken once per message.
new_packet_unchecked = tuple.__new__

#: Binary message data: ``bytes``, or on the way out a read-only view of a kernel's ZMQ frame, which is
#: passed on without being copied into ``bytes`` first. What peers send is always ``bytes``.
Binary = bytes | memoryview


def as_binary(data: object) -> Binary:
    """Message data other than ``str`` or ``bytes``: a flat byte view as it is, anything else copied."""
    if isinstance(data, memoryview) and data.ndim == 1 and data.format == "B":
        return data
    if isinstance(data, bytes | bytearray | memoryview):
        return bytes(data)
    raise TypeError(f"message data must be str or bytes, not {type(data).__name__}")


_DIGIT = {packet_type: str(int(packet_type)) for packet_type in PacketType}
_DIGIT_BYTES = {packet_type: digit.encode() for packet_type, digit in _DIGIT.items()}


class PacketDecodeError(ValueError):
    """Raised for anything a peer sends that is not a well-formed packet or payload."""


class _PacketFields(NamedTuple):
    type: PacketType
    data: str | Binary = ""


class Packet(_PacketFields):
    """
    One Engine.IO packet (an immutable pair: one is made for every message sent or received).

    ``data`` is text for every packet type; only a ``MESSAGE`` may carry :data:`Binary` data.
    """

    __slots__ = ()

    def __new__(cls, type: PacketType, data: str | Binary = "") -> Packet:
        if not isinstance(data, str) and type is not PacketType.MESSAGE:
            raise ValueError(f"only message packets can carry binary data, not {type.name}")
        return tuple.__new__(cls, (type, data))

    @property
    def is_binary(self) -> bool:
        return not isinstance(self.data, str)


class PacketCodec(Protocol):
    """The encoding of one protocol version; transports use only this interface."""

    protocol: int

    def encode_frame(self, packet: Packet) -> str | Binary: ...

    def decode_frame(self, frame: str | bytes) -> Packet: ...

    @property
    def binary_payloads(self) -> bool:
        """Does this protocol have binary polling payloads (``application/octet-stream``)?"""
        ...

    def encode_payload(self, packets: Sequence[Packet], binary: bool = False) -> str | bytes:
        """A polling body; ``binary`` allows a binary payload if the protocol has them."""
        ...

    def decode_payload(
        self, body: bytes, binary: bool = False, *, byte_strings: bool = False
    ) -> list[Packet]:
        """
        A polling body; ``binary`` when it was sent as ``application/octet-stream``; ``byte_strings`` for a
        protocol 3 client that asked for base64 (``b64``), whose text packets may be UTF-8 bytes written one
        character per byte (socket.io-client 1.x).
        """
        ...


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
    # Text data is valid in every packet type: no need for Packet's check, once per client message.
    return new_packet_unchecked(Packet, (_TYPES[ord(head) - 48], rest))


def _text_frame(packet: Packet) -> str:
    """A text packet as every protocol writes it on its own: its type digit, then its data."""
    data: str = packet.data  # type: ignore[assignment]  # (typing.cast would be a call per frame)
    return _DIGIT[packet.type] + data


def text_frame_parts(packet: Packet) -> tuple[bytes, bytes]:
    """
    :func:`_text_frame` in UTF-8 as two parts, the type digit and the data: a large message (a kernel's
    10 MB output) is then not copied once more to put the digit in front of it.
    """
    data: str = packet.data  # type: ignore[assignment]
    return _DIGIT_BYTES[packet.type], data.encode("utf-8")


def _encode_text_packet(packet: Packet) -> str:
    if not isinstance(packet.data, str):
        return BINARY_PREFIX + base64.b64encode(packet.data).decode("ascii")
    return _text_frame(packet)


class V4Codec:
    """Engine.IO protocol 4: ``\\x1e``-separated payloads, binary always base64 in payloads."""

    protocol = 4
    binary_payloads = False

    def encode_frame(self, packet: Packet) -> str | Binary:
        """One WebSocket frame: text for text packets, the raw bytes for a binary message."""
        if not isinstance(packet.data, str):
            return packet.data
        return _text_frame(packet)

    def decode_frame(self, frame: str | bytes) -> Packet:
        """A WebSocket frame: a binary frame is always a binary message."""
        if isinstance(frame, bytes):
            return Packet(PacketType.MESSAGE, frame)
        # As in the reference server, a text frame may also use the "b" + base64 form.
        return _decode_text_packet(frame)

    def encode_payload(self, packets: Sequence[Packet], binary: bool = False) -> str:
        """A polling response body carrying ``packets`` in order (v4 payloads are always text)."""
        if not packets:
            raise ValueError("a payload carries at least one packet")
        return RECORD_SEPARATOR.join(_encode_text_packet(packet) for packet in packets)

    def decode_payload(
        self, body: bytes, binary: bool = False, *, byte_strings: bool = False
    ) -> list[Packet]:
        """A polling request body; all or nothing, so a bad body dispatches no packet at all."""
        if binary:
            raise PacketDecodeError("protocol 4 has no binary payloads")
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise PacketDecodeError("payload is not valid UTF-8") from exc
        return [_decode_text_packet(part) for part in text.split(RECORD_SEPARATOR)]


_ASTRAL = re.compile("[\U00010000-\U0010ffff]")
#: Digits a length may have in a v3 payload (the reference allows more, but no body we accept is
#: that long).
MAX_LENGTH_DIGITS = 10
_LENGTH_DIGITS = re.compile(f"[0-9]{{1,{MAX_LENGTH_DIGITS}}}:")
BINARY_SEPARATOR = 0xFF


def utf16_length(text: str) -> int:
    """``text``'s length as JavaScript counts it: in UTF-16 code units."""
    if text.isascii():
        return len(text)
    return len(text) + len(_ASTRAL.findall(text))


def _undo_byte_string(text: str) -> str:
    """
    A text packet of a protocol 3 polling payload as its sender meant it.

    engine.io-client 1.x (socket.io-client 1.x) without XHR2, so with ``b64``, writes each packet of a
    text payload as its UTF-8 bytes, one character per byte, and the request encodes that string as
    UTF-8 again; 2.x sends the text itself. For ``b64`` sessions both are accepted: a packet whose
    characters are all below U+0100 and whose bytes are valid UTF-8 is taken as the 1.x form (text sent
    by 2.x qualifies only if it is itself mojibake such as "Ã©"). Clients with XHR2 send such text in
    binary payloads instead, and ASCII, the overwhelmingly common case, is the same in both.
    """
    if text.isascii():
        return text
    try:
        return text.encode("latin-1").decode("utf-8")
    except UnicodeError:
        return text


def _decode_v3_text_packet(text: str) -> Packet:
    if text[:1] == BINARY_PREFIX:
        if text[1:2] != str(int(PacketType.MESSAGE)):
            raise PacketDecodeError("only message packets can be binary")
        try:
            return Packet(
                PacketType.MESSAGE, base64.b64decode(text[2:].encode("ascii"), validate=True)
            )
        except (UnicodeEncodeError, binascii.Error) as exc:
            raise PacketDecodeError("invalid base64 in binary packet") from exc
    if not text:
        raise PacketDecodeError("empty packet")
    head = text[0]
    if not ("0" <= head <= "6"):
        raise PacketDecodeError(f"unknown packet type {head!r}")
    return Packet(_TYPES[ord(head) - 48], text[1:])


def _encode_v3_text_packet(packet: Packet) -> str:
    if not isinstance(packet.data, str):
        return f"{BINARY_PREFIX}{int(packet.type)}" + base64.b64encode(packet.data).decode("ascii")
    return _text_frame(packet)


def _length_digits(length: int) -> bytes:
    return bytes(int(digit) for digit in str(length))


class V3Codec:
    """
    Engine.IO protocol 3: length-prefixed payloads (UTF-16 lengths), binary payloads, typed binary
    WebSocket frames.
    """

    protocol = 3
    binary_payloads = True

    def encode_frame(self, packet: Packet) -> str | Binary:
        """One WebSocket frame; a binary message is the type byte followed by its bytes."""
        if not isinstance(packet.data, str):
            return bytes([int(packet.type)]) + packet.data
        return _text_frame(packet)

    def decode_frame(self, frame: str | bytes) -> Packet:
        """A WebSocket frame: a binary frame starts with its packet type byte (only ``4`` here)."""
        if isinstance(frame, bytes):
            if not frame:
                raise PacketDecodeError("empty binary frame")
            if frame[0] != PacketType.MESSAGE:
                raise PacketDecodeError(f"binary frame of packet type {frame[0]}")
            return Packet(PacketType.MESSAGE, frame[1:])
        return _decode_v3_text_packet(frame)

    def encode_payload(self, packets: Sequence[Packet], binary: bool = False) -> str | bytes:
        """
        A polling response body: binary (``bytes``) when ``binary`` is allowed and some packet is
        binary, as the reference does, else text with binary messages in base64.
        """
        if not packets:
            raise ValueError("a payload carries at least one packet")
        if binary and any(packet.is_binary for packet in packets):
            return self._encode_binary_payload(packets)
        parts = []
        for packet in packets:
            encoded = _encode_v3_text_packet(packet)
            parts.append(f"{utf16_length(encoded)}:{encoded}")
        return "".join(parts)

    @staticmethod
    def _encode_binary_payload(packets: Sequence[Packet]) -> bytes:
        chunks: list[bytes] = []
        for packet in packets:
            if not isinstance(packet.data, str):
                body = bytes([int(packet.type)]) + packet.data
                kind = 1
            else:
                body = _text_frame(packet).encode("utf-8", "surrogatepass")
                kind = 0
            chunks.append(bytes([kind]) + _length_digits(len(body)) + bytes([BINARY_SEPARATOR]))
            chunks.append(body)
        return b"".join(chunks)

    def decode_payload(
        self, body: bytes, binary: bool = False, *, byte_strings: bool = False
    ) -> list[Packet]:
        """A polling request body, text or binary; all or nothing."""
        if binary:
            return self._decode_binary_payload(body)
        packets = self._decode_text_payload(body)
        if not byte_strings:
            return packets
        return [
            Packet(packet.type, _undo_byte_string(packet.data))
            if isinstance(packet.data, str)
            else packet
            for packet in packets
        ]

    def _decode_text_payload(self, body: bytes) -> list[Packet]:
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise PacketDecodeError("payload is not valid UTF-8") from exc
        if not text:
            raise PacketDecodeError("empty payload")
        if _ASTRAL.search(text) is None:
            return self._decode_text_records(len(text), lambda start, end, strict: text[start:end])
        # Lengths count UTF-16 code units: work on the UTF-16 form, two bytes per unit.
        units = text.encode("utf-16-le")

        def take(start: int, end: int, strict: bool) -> str:
            try:
                return units[start * 2 : end * 2].decode(
                    "utf-16-le", "strict" if strict else "replace"
                )
            except UnicodeDecodeError as exc:
                raise PacketDecodeError("a length splits a character") from exc

        return self._decode_text_records(len(units) // 2, take)

    @staticmethod
    def _decode_text_records(size: int, take: Callable[[int, int, bool], str]) -> list[Packet]:
        """
        Split ``<length>:<packet>`` records; ``take(start, end, strict)`` reads a span counted in
        length units (``strict``: refuse a span that splits a character).
        """
        packets: list[Packet] = []
        position = 0
        while position < size:
            # Lengths and colons are ASCII, so reading them leniently is exact.
            header = take(position, min(size, position + MAX_LENGTH_DIGITS + 1), False)
            match = _LENGTH_DIGITS.match(header)
            if match is None:
                raise PacketDecodeError("invalid length in payload")
            length = int(match.group()[:-1])
            start = position + match.end()
            end = start + length
            if length == 0 or end > size:
                raise PacketDecodeError("payload length out of range")
            packets.append(_decode_v3_text_packet(take(start, end, True)))
            position = end
        return packets

    @staticmethod
    def _decode_binary_payload(body: bytes) -> list[Packet]:
        packets: list[Packet] = []
        position = 0
        size = len(body)
        if not body:
            raise PacketDecodeError("empty payload")
        while position < size:
            kind = body[position]
            if kind not in (0, 1):
                raise PacketDecodeError("invalid record kind in binary payload")
            separator = body.find(BINARY_SEPARATOR, position + 1, position + 2 + MAX_LENGTH_DIGITS)
            digits = body[position + 1 : separator]
            if separator == -1 or not digits or any(digit > 9 for digit in digits):
                raise PacketDecodeError("invalid length in binary payload")
            length = int("".join(str(digit) for digit in digits))
            start = separator + 1
            end = start + length
            if length == 0 or end > size:
                raise PacketDecodeError("binary payload length out of range")
            record = body[start:end]
            if kind == 1:
                if record[0] != PacketType.MESSAGE:
                    raise PacketDecodeError(f"binary record of packet type {record[0]}")
                packets.append(Packet(PacketType.MESSAGE, record[1:]))
            else:
                try:
                    text = record.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise PacketDecodeError("text record is not valid UTF-8") from exc
                packets.append(_decode_v3_text_packet(text))
            position = end
        return packets


_CODECS: dict[int, PacketCodec] = {3: V3Codec(), 4: V4Codec()}

SUPPORTED_PROTOCOLS: frozenset[int] = frozenset(_CODECS)


def codec_for(protocol: int) -> PacketCodec:
    """The codec of ``protocol``; ``KeyError`` for versions this server does not speak."""
    return _CODECS[protocol]

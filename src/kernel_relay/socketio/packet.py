"""
The socket.io packet codec (protocol 5, and protocol 4 of socket.io 1.x/2.x, which shares the wire
grammar): packets in, Engine.IO message bodies out, and back.

No I/O and no reactor here, so every rule of the wire format can be tested with plain values.

A packet travels as one text message, ``<type>[<n>-][<namespace>,][<ack id>][<JSON payload>]``,
followed by ``n`` binary messages (attachments) for the two binary types. Binary values inside the
payload are replaced by ``{"_placeholder":true,"num":i}`` objects pointing at attachment ``i``
(:mod:`.attachments`); the JSON text itself is written by :mod:`.json_writer`.

Decoding is strict because every message comes from an untrusted peer: anything the grammar does not
allow raises :class:`~.errors.PacketError`, and the caller is expected to drop the connection.

Protocol 4 differs in meaning, not in grammar: type 4 is ``ERROR`` (a string or object, where protocol
5 has CONNECT_ERROR with ``{"message", "data"}``), CONNECT packets carry no payload, and a client's
CONNECT may hold a query after the namespace (``0/shell/abc?token=x,``), which
:func:`split_namespace_query` takes apart.

:class:`RawJSON` is a ``str`` holding JSON text that is already encoded (for instance a kernel
message part as the kernel sent it); the encoder writes it into the payload verbatim instead of
encoding it as a string, so forwarding JSON costs no decode/encode round trip. The caller vouches
that the text is one valid JSON value (it is not checked).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from enum import IntEnum
from functools import lru_cache
from typing import Any, Final, NamedTuple
from urllib.parse import parse_qsl

from ..engineio import Binary
from ..jsontext import JSONError, loads
from .attachments import deconstruct_payload, reconstruct
from .errors import PacketError
from .json_writer import dumps, escape_non_ascii, write_with_raw

#: Largest number of binary attachments one packet may announce. The reference parser allows 10,
#: which is too few for Jupyter messages carrying many buffers; each attachment is already bounded
#: by the Engine.IO ``max_payload``, so this caps what one half-received packet can hold in memory.
DEFAULT_MAX_ATTACHMENTS: Final = 1000

#: Ack ids are JavaScript numbers on the other side, so they must stay exact there.
MAX_ACK_ID: Final = 2**53 - 1

#: Event names that socket.io clients and servers reserve for themselves and never send as events.
RESERVED_EVENTS: Final = frozenset(
    {"connect", "connect_error", "disconnect", "disconnecting", "newListener", "removeListener"}
)

_DIGITS = re.compile(r"[0-9]+")
_MAX_ID_DIGITS = 16  # 2**53 has 16 decimal digits
_MAX_COUNT_DIGITS = 10


class PacketType(IntEnum):
    """The seven socket.io packet types (their wire digit is the value)."""

    CONNECT = 0
    DISCONNECT = 1
    EVENT = 2
    ACK = 3
    CONNECT_ERROR = 4
    BINARY_EVENT = 5
    BINARY_ACK = 6


class Packet(NamedTuple):
    """
    One socket.io packet (an immutable tuple: one is made for every event sent or received).

    ``data`` is ``None`` when the packet carries no payload. Decoded binary packets are reported
    with the plain ``EVENT``/``ACK`` type and their attachments already put back in place as
    ``bytes``; the encoder picks the binary types by itself when the payload holds bytes.
    """

    type: PacketType
    namespace: str = "/"
    data: Any = None
    id: int | None = None


# Enum members as module constants: looking one up on its class costs more than a dict lookup.
_EVENT = PacketType.EVENT
_ACK = PacketType.ACK
_BINARY_EVENT = PacketType.BINARY_EVENT
_BINARY_ACK = PacketType.BINARY_ACK
_WITH_PAYLOAD = frozenset({_EVENT, _ACK, _BINARY_EVENT, _BINARY_ACK})
_TYPES = tuple(PacketType)  # by wire digit
_DIGITS_OF = {packet_type: str(int(packet_type)) for packet_type in PacketType}


def _data_offset(text: str) -> int:
    """Where the JSON data of an encoded packet starts (after type, attachment count, namespace, id)."""
    index = 1
    if text[:1] in ("5", "6"):
        index = text.find("-", index) + 1
    if text.startswith("/", index):
        comma = text.find(",", index)
        if comma < 0:
            return len(text)
        index = comma + 1
    while index < len(text) and text[index].isdigit():
        index += 1
    return index


@lru_cache(maxsize=4)
def ascii_packet(text: str) -> str:
    """
    ``text`` (an encoded packet) with every non-ASCII character of its JSON data written as a ``\\u`` escape.

    For Engine.IO protocol 3 clients: engine.io-client 1.x reads polling payloads as bytes with lengths
    in bytes, 2.x as text with lengths in characters, so only ASCII text means the same to both. The
    JSON value is unchanged. Cached, because a broadcast hands the same text to every such client.
    """
    start = _data_offset(text)
    return text[:start] + escape_non_ascii(text[start:])


def encode_packet(packet: Packet) -> list[str | Binary]:
    """
    Encode ``packet`` as the Engine.IO messages to send: one text message, then any attachments.

    Raises ``TypeError``/``ValueError`` for a payload JSON cannot represent (a programming error of
    the caller, never caused by a peer).
    """
    packet_type, namespace, data, ack_id = packet
    attachments: list[Binary] = []
    raw = False
    if data is not None and packet_type in _WITH_PAYLOAD:
        data, attachments, raw = deconstruct_payload(data)
        if attachments:
            packet_type = (
                _BINARY_ACK if packet_type is _ACK or packet_type is _BINARY_ACK else _BINARY_EVENT
            )
        elif packet_type is _BINARY_EVENT:
            packet_type = _EVENT
        elif packet_type is _BINARY_ACK:
            packet_type = _ACK
    parts = [_DIGITS_OF[packet_type]]
    if packet_type is _BINARY_EVENT or packet_type is _BINARY_ACK:
        parts.append(f"{len(attachments)}-")
    if namespace != "/":
        parts.append(namespace)
        parts.append(",")
    if ack_id is not None:
        parts.append(str(ack_id))
    if data is not None:
        if raw:
            # Straight into parts: a large RawJSON (a 10 MB kernel output) is copied once, by the join.
            write_with_raw(data, parts)
        else:
            parts.append(dumps(data))
    messages: list[str | Binary] = ["".join(parts)]
    messages.extend(attachments)
    return messages


#: A packet as encoded for sending: its text message, then its attachments.
EncodedPacket = list["str | Binary"]


def check_event_name(event: str) -> None:
    """Event names are strings, and none of the :data:`RESERVED_EVENTS`: raise TypeError or ValueError."""
    if not isinstance(event, str):
        raise TypeError(f"event names are strings, not {type(event).__name__}")
    if event in RESERVED_EVENTS:
        raise ValueError(f"{event!r} is a reserved event name")


def encode_event(namespace: str, event: str, *args: Any) -> EncodedPacket:
    """An event packet for ``namespace``, encoded once, for ``Socket.send_encoded``."""
    check_event_name(event)
    return encode_packet(Packet(PacketType.EVENT, namespace, [event, *args]))


def split_namespace_query(namespace: str) -> tuple[str, dict[str, str]]:
    """
    A protocol 4 CONNECT namespace with its query taken apart: ``"/a?x=1&y=2"`` gives
    ``("/a", {"x": "1", "y": "2"})``; the last value of a repeated key wins.
    """
    name, mark, query = namespace.partition("?")
    if not mark:
        return namespace, {}
    return name, dict(parse_qsl(query, keep_blank_values=True))


def _check_payload(packet_type: PacketType, data: Any, ack_id: int | None) -> None:
    """Enforce what each packet type may carry (see the protocol's packet table)."""
    if packet_type is PacketType.CONNECT:
        ok = data is None or isinstance(data, dict)
    elif packet_type is PacketType.DISCONNECT:
        ok = data is None
    elif packet_type is PacketType.CONNECT_ERROR:
        ok = isinstance(data, (str, dict))
    elif packet_type in (PacketType.EVENT, PacketType.BINARY_EVENT):
        ok = (
            isinstance(data, list)
            and len(data) > 0
            and isinstance(data[0], str)
            and data[0] not in RESERVED_EVENTS
        )
    else:  # ACK, BINARY_ACK
        ok = isinstance(data, list) and ack_id is not None
    if not ok:
        raise PacketError(f"invalid payload for a {packet_type.name} packet")
    if ack_id is not None and packet_type not in (
        PacketType.EVENT,
        PacketType.ACK,
        PacketType.BINARY_EVENT,
        PacketType.BINARY_ACK,
    ):
        raise PacketError(f"a {packet_type.name} packet cannot carry an ack id")


def decode_text(text: str, max_attachments: int = DEFAULT_MAX_ATTACHMENTS) -> tuple[Packet, int]:
    """
    Parse the text message of a packet; return it and the number of attachments that must follow.

    For binary types the returned packet still holds the placeholders; :class:`PacketDecoder` puts
    the attachments in once they have arrived.
    """
    if not text or text[0] not in "0123456":
        raise PacketError("unknown packet type")
    packet_type = _TYPES[ord(text[0]) - 48]
    position = 1
    attachments = 0
    if packet_type in (PacketType.BINARY_EVENT, PacketType.BINARY_ACK):
        match = _DIGITS.match(text, position)
        if (
            match is None
            or len(match.group()) > _MAX_COUNT_DIGITS
            or text[match.end() : match.end() + 1] != "-"
        ):
            raise PacketError("invalid attachment count")
        attachments = int(match.group())
        if attachments > max_attachments:
            raise PacketError(f"too many attachments ({attachments} > {max_attachments})")
        position = match.end() + 1
    namespace = "/"
    if text.startswith("/", position):
        comma = text.find(",", position)
        end = len(text) if comma == -1 else comma
        namespace = text[position:end]
        position = end + 1
    ack_id: int | None = None
    match = _DIGITS.match(text, position)
    if match is not None:
        if len(match.group()) > _MAX_ID_DIGITS:
            raise PacketError("ack id too large")
        ack_id = int(match.group())
        if ack_id > MAX_ACK_ID:
            raise PacketError("ack id too large")
        position = match.end()
    data: Any = None
    if position < len(text):
        try:
            data = loads(text[position:])
        except JSONError as error:
            raise PacketError(f"invalid JSON payload: {error}") from None
        if data is None:
            raise PacketError("a null payload is not allowed")
    _check_payload(packet_type, data, ack_id)
    return Packet(packet_type, namespace, data, ack_id), attachments


class PacketDecoder:
    """
    Turns the Engine.IO messages of one connection into packets, joining binary attachments.

    Feed every received message to :meth:`feed`; it returns a complete packet or ``None`` while
    attachments are still expected. After a :class:`PacketError` the decoder is reset, but the
    protocol says the connection should be closed anyway.

    What a half-received packet may hold is bounded before anything is trusted: its attachments
    together may not exceed ``max_attachment_bytes`` (a :class:`PacketError` once they do), and the
    attachments of a packet for a namespace ``wanted`` says no to (one the client has not joined) are
    counted and dropped as they arrive, never kept; such a packet completes as ``None``.
    """

    def __init__(
        self,
        max_attachments: int = DEFAULT_MAX_ATTACHMENTS,
        max_attachment_bytes: int | None = None,
        wanted: Callable[[str], bool] | None = None,
    ) -> None:
        self._max_attachments = max_attachments
        self._max_attachment_bytes = max_attachment_bytes
        self._wanted = wanted
        self._partial: Packet | None = None
        self._expected = 0
        self._attachments: list[bytes] = []
        self._received = 0
        self._bytes = 0
        self._discarding = False
        #: The bytes of attachments in the packet :meth:`feed` returned last (0 for one without).
        self.last_attachment_bytes = 0

    @property
    def awaiting_attachments(self) -> bool:
        """True between a binary packet's text and its last attachment."""
        return self._partial is not None

    def reset(self) -> None:
        """Forget a half-received binary packet."""
        self._partial = None
        self._expected = 0
        self._attachments = []
        self._received = 0
        self._bytes = 0
        self._discarding = False

    def feed(self, message: str | bytes) -> Packet | None:
        """Take one Engine.IO message; return the packet it completes, if any."""
        self.last_attachment_bytes = 0
        if isinstance(message, str):
            if self._partial is not None:
                self.reset()
                raise PacketError("text message while binary attachments were expected")
            packet, expected = decode_text(message, self._max_attachments)
            if packet.type in (PacketType.BINARY_EVENT, PacketType.BINARY_ACK):
                if expected == 0:
                    return self._complete(packet, [])
                self._partial = packet
                self._expected = expected
                self._attachments = []
                self._discarding = self._wanted is not None and not self._wanted(packet.namespace)
                return None
            return packet
        if self._partial is None:
            raise PacketError("binary message outside a binary packet")
        self._received += 1
        self._bytes += len(message)
        limit = self._max_attachment_bytes
        if limit is not None and self._bytes > limit:
            total = self._bytes
            self.reset()
            raise PacketError(f"attachments of one packet over {limit} bytes ({total} so far)")
        if not self._discarding:
            self._attachments.append(bytes(message))
        if self._received < self._expected:
            return None
        packet, attachments, discarded, size = (
            self._partial,
            self._attachments,
            self._discarding,
            self._bytes,
        )
        self.reset()
        if discarded:
            return None
        self.last_attachment_bytes = size
        return self._complete(packet, attachments)

    @staticmethod
    def _complete(packet: Packet, attachments: list[bytes]) -> Packet:
        try:
            data = reconstruct(packet.data, attachments)
        except RecursionError:
            raise PacketError("payload nested too deeply") from None
        plain = PacketType.EVENT if packet.type is PacketType.BINARY_EVENT else PacketType.ACK
        return Packet(plain, packet.namespace, data, packet.id)

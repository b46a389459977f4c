"""
The WebSocket frames the relay reads and writes itself (RFC 6455 section 5.2), as pure functions: the
header of an unmasked server frame, and the parse of a whole, final, masked client data frame.

A server's frames are unmasked and we never fragment or compress, so a frame is a 2-10 byte header and
the payload. What clients send nearly always is a whole, final, masked text or binary frame of an
allowed size, with valid UTF-8 if text: :func:`parse_data_frame` reads those, at a fraction of the
Python work per frame of Autobahn's reader, and leaves every other frame to Autobahn. No I/O here:
:mod:`kernel_relay.websocket` uses these on its connections.
"""

from __future__ import annotations

import struct
from typing import Final

# First header byte of a final (unfragmented) text or binary frame.
FINAL_TEXT: Final = 0x81
FINAL_BINARY: Final = 0x82
_LENGTH_16 = struct.Struct("!BBH")
_LENGTH_64 = struct.Struct("!BBQ")


def parse_data_frame(data: bytes, offset: int, max_payload: int) -> tuple[str | bytes, int] | None:
    """
    The message of the complete client data frame at ``offset`` and where the next frame starts; None
    unless the frame is final, unfragmented, uncompressed, masked, text or binary, no bigger than
    ``max_payload`` (0: no limit), minimally encoded and, if text, valid UTF-8. Autobahn reads any
    other frame, and fails the connection for those that break the protocol.
    """
    end = len(data)
    if end - offset < 6:
        return None
    first, second = data[offset], data[offset + 1]
    if (first != FINAL_TEXT and first != FINAL_BINARY) or not second & 0x80:
        return None
    size = second & 0x7F
    start = offset + 2
    if size == 126:
        size = int.from_bytes(data[start : start + 2], "big")
        start += 2
        if size < 126:
            return None
    elif size == 127:
        size = int.from_bytes(data[start : start + 8], "big")
        start += 8
        if size < 0x10000 or size >> 63:
            return None
    if max_payload and size > max_payload:
        return None
    mask = data[start : start + 4]
    start += 4
    stop = start + size
    if stop > end:  # the frame (mask included) has not all arrived
        return None
    masked = data[start:stop]
    key = (mask * (size // 4 + 1))[:size]
    payload = (int.from_bytes(masked, "little") ^ int.from_bytes(key, "little")).to_bytes(
        size, "little"
    )
    if first == FINAL_BINARY:
        return payload, stop
    try:
        return payload.decode("utf-8"), stop
    except UnicodeDecodeError:
        return None


def frame_header(first_byte: int, size: int) -> bytes:
    """The header of an unmasked frame carrying ``size`` payload bytes (RFC 6455 section 5.2)."""
    if size < 126:
        return bytes((first_byte, size))
    if size < 0x10000:
        return _LENGTH_16.pack(first_byte, 126, size)
    return _LENGTH_64.pack(first_byte, 127, size)


#: Frames handed over after this many seconds without any go out at once instead of at the end of the

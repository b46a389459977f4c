"""The WebSocket frame headers the relay writes itself (RFC 6455 section 5.2), at each length boundary."""

from __future__ import annotations

import pytest

from kernel_relay.engineio.websocket import frame_header


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        (0, b"\x82\x00"),
        (125, b"\x82\x7d"),
        (126, b"\x82\x7e\x00\x7e"),
        (65535, b"\x82\x7e\xff\xff"),
        (65536, b"\x82\x7f\x00\x00\x00\x00\x00\x01\x00\x00"),
        (10_000_000, b"\x82\x7f" + (10_000_000).to_bytes(8, "big")),
    ],
)
def test_binary_frame_headers(size: int, expected: bytes) -> None:
    """7-bit lengths up to 125, then 126 and a 16-bit length, then 127 and a 64-bit one; no mask bit."""
    assert frame_header(0x82, size) == expected


def test_text_frame_header_has_the_text_opcode_and_fin() -> None:
    """Text frames differ only in the opcode."""
    assert frame_header(0x81, 5) == b"\x81\x05"

"""Unit tests for the Engine.IO v4 packet codec (pure functions, no I/O)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kernel_relay.engineio.packets import (
    SUPPORTED_PROTOCOLS,
    Packet,
    PacketDecodeError,
    PacketType,
    codec_for,
)

codec = codec_for(4)

text_data = st.text().filter(lambda t: "\x1e" not in t)
packets = st.one_of(
    st.builds(Packet, st.sampled_from(list(PacketType)), text_data),
    st.builds(Packet, st.just(PacketType.MESSAGE), st.binary()),
)


def test_protocols_3_and_4_are_supported() -> None:
    """The codec registry offers protocols 3 and 4 and refuses others with KeyError."""
    assert SUPPORTED_PROTOCOLS == {3, 4}
    assert codec.protocol == 4
    assert codec_for(3).protocol == 3
    with pytest.raises(KeyError):
        codec_for(2)


def test_encode_payload_matches_spec_example() -> None:
    """Text packets are type digit + data, joined by the record separator."""
    payload = codec.encode_payload(
        [
            Packet(PacketType.MESSAGE, "hello"),
            Packet(PacketType.PING),
            Packet(PacketType.MESSAGE, "world"),
        ]
    )
    assert payload == "4hello\x1e2\x1e4world"


def test_binary_is_base64_in_payloads() -> None:
    """A binary message in a polling payload is 'b' + base64."""
    payload = codec.encode_payload(
        [Packet(PacketType.MESSAGE, "hello"), Packet(PacketType.MESSAGE, b"\x01\x02\x03\x04")]
    )
    assert payload == "4hello\x1ebAQIDBA=="


def test_decode_payload_with_binary() -> None:
    """The spec's mixed payload decodes to a text and a binary message."""
    assert codec.decode_payload(b"4hello\x1ebAQIDBA==") == [
        Packet(PacketType.MESSAGE, "hello"),
        Packet(PacketType.MESSAGE, b"\x01\x02\x03\x04"),
    ]


def test_frames_binary_raw_and_text_prefixed() -> None:
    """WebSocket frames carry binary messages raw and text packets as digit + data."""
    assert codec.encode_frame(Packet(PacketType.MESSAGE, b"\x00\xff")) == b"\x00\xff"
    assert codec.encode_frame(Packet(PacketType.PONG, "probe")) == "3probe"
    assert codec.decode_frame(b"\x00\xff") == Packet(PacketType.MESSAGE, b"\x00\xff")
    assert codec.decode_frame("2probe") == Packet(PacketType.PING, "probe")
    assert codec.decode_frame("4") == Packet(PacketType.MESSAGE, "")


def test_utf8_text_round_trips() -> None:
    """Non-ASCII text survives a payload round trip (UTF-8 on the wire)."""
    body = codec.encode_payload([Packet(PacketType.MESSAGE, "€ ünïcödé 🎉")]).encode("utf-8")
    assert codec.decode_payload(body) == [Packet(PacketType.MESSAGE, "€ ünïcödé 🎉")]


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"abc",
        b"7",
        b"4a\x1e",
        b"\x1e4a",
        b"4a\x1e\x1e4b",
        b"b!!!",
        b"bAQ",
        b"\xff\xfe",
        b"x4hello",
    ],
)
def test_bad_payloads_are_refused(body: bytes) -> None:
    """Empty, unknown-type, empty-part, bad-base64 and non-UTF-8 payloads are refused."""
    with pytest.raises(PacketDecodeError):
        codec.decode_payload(body)


@pytest.mark.parametrize("frame", ["", "abc", "9", "b%%%"])
def test_bad_frames_are_refused(frame: str) -> None:
    """Empty, unknown-type and bad-base64 text frames raise PacketDecodeError."""
    with pytest.raises(PacketDecodeError):
        codec.decode_frame(frame)


def test_binary_only_on_messages() -> None:
    """Constructing a non-message packet with bytes is a programming error."""
    with pytest.raises(ValueError):
        Packet(PacketType.PING, b"x")


def test_empty_payload_cannot_be_encoded() -> None:
    """A payload must carry at least one packet."""
    with pytest.raises(ValueError):
        codec.encode_payload([])


@given(st.lists(packets, min_size=1, max_size=8))
def test_payload_round_trip(items: list[Packet]) -> None:
    """Any list of packets survives encode_payload then decode_payload unchanged."""
    assert codec.decode_payload(codec.encode_payload(items).encode("utf-8")) == items


@given(packets)
def test_frame_round_trip(packet: Packet) -> None:
    """Any packet survives encode_frame then decode_frame unchanged."""
    assert codec.decode_frame(codec.encode_frame(packet)) == packet


@given(st.binary(max_size=200))
def test_arbitrary_bodies_decode_or_refuse_cleanly(body: bytes) -> None:
    """Random bytes either decode to packets or raise PacketDecodeError, nothing else."""
    try:
        result = codec.decode_payload(body)
    except PacketDecodeError:
        return
    assert result and all(isinstance(p, Packet) for p in result)


@given(st.text(max_size=100))
def test_arbitrary_frames_decode_or_refuse_cleanly(frame: str) -> None:
    """Random text frames either decode to a packet or raise PacketDecodeError, nothing else."""
    try:
        result = codec.decode_frame(frame)
    except PacketDecodeError:
        return
    assert isinstance(result, Packet)

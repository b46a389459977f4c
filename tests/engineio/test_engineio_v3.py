"""Engine.IO protocol 3: the codec (text, binary and base64 payloads, typed frames), the client-driven
heartbeat, the slow-client limit, and protocol 3 over the polling resource."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kernel_relay.engineio import EngineIOOptions
from kernel_relay.engineio.errors import ErrorCode
from kernel_relay.engineio.packets import (
    Packet,
    PacketDecodeError,
    PacketType,
    codec_for,
    utf16_length,
)
from kernel_relay.engineio.session import PING_TIMEOUT, SLOW_CLIENT
from tests.engineio.test_engineio_polling import Harness, Request, error_of
from tests.engineio.test_engineio_session import OPTIONS, FakeTransport, make

codec = codec_for(3)
T = PacketType
M = PacketType.MESSAGE

packets = st.one_of(
    st.builds(Packet, st.sampled_from(list(PacketType)), st.text()),
    st.builds(Packet, st.just(M), st.binary()),
)


# -- codec -------------------------------------------------------------------------------------


def test_text_payload_matches_spec_example() -> None:
    """Lengths count characters, not bytes: the spec's "6:4hello2:4€"."""
    payload = codec.encode_payload([Packet(M, "hello"), Packet(M, "€")])
    assert payload == "6:4hello2:4€"
    assert codec.decode_payload("6:4hello2:4€".encode()) == [Packet(M, "hello"), Packet(M, "€")]


def test_lengths_are_utf16_code_units() -> None:
    """An astral character counts two, as JavaScript's String.length does."""
    assert utf16_length("a🎉é") == 4
    assert codec.encode_payload([Packet(M, "🎉x")]) == "4:4🎉x"
    body = "4:4🎉x3:4€a2:4b".encode()
    assert codec.decode_payload(body) == [Packet(M, "🎉x"), Packet(M, "€a"), Packet(M, "b")]


def test_length_splitting_an_astral_character_is_refused() -> None:
    """A length that ends inside a surrogate pair is a decode error, not a broken string."""
    with pytest.raises(PacketDecodeError):
        codec.decode_payload("2:4🎉".encode())


def test_text_payload_with_base64_binary() -> None:
    """Binary messages in text payloads are "b4" + base64, as in the spec's example."""
    payload = codec.encode_payload([Packet(M, "€"), Packet(M, b"\x01\x02\x03\x04")])
    assert payload == "2:4€10:b4AQIDBA=="
    assert codec.decode_payload(payload.encode()) == [
        Packet(M, "€"),
        Packet(M, b"\x01\x02\x03\x04"),
    ]


def test_binary_payload_matches_spec_example() -> None:
    """With binary allowed, a payload holding a binary message uses the 0/1, digits, 0xFF framing."""
    payload = codec.encode_payload([Packet(M, "€"), Packet(M, b"\x01\x02\x03\x04")], binary=True)
    assert payload == bytes.fromhex("0004ff34e282ac0105ff0401020304")
    assert codec.decode_payload(payload, binary=True) == [
        Packet(M, "€"),
        Packet(M, b"\x01\x02\x03\x04"),
    ]


def test_binary_payload_lengths_of_several_digits() -> None:
    """Lengths over 9 are written one decimal digit per byte."""
    data = bytes(range(256)) * 5
    payload = codec.encode_payload([Packet(M, data)], binary=True)
    assert isinstance(payload, bytes)
    assert payload[:6] == bytes([1, 1, 2, 8, 1, 0xFF])
    assert codec.decode_payload(payload, binary=True) == [Packet(M, data)]


def test_text_only_payload_stays_text_even_when_binary_is_allowed() -> None:
    """Without a binary message, the payload is text whatever the client supports."""
    assert codec.encode_payload([Packet(T.PONG), Packet(M, "x")], binary=True) == "1:32:4x"


def test_frames_carry_the_type_byte_for_binary() -> None:
    """A binary WebSocket frame is 0x04 then the message; text frames are "<type><data>"."""
    assert codec.encode_frame(Packet(M, b"\x01\x02")) == b"\x04\x01\x02"
    assert codec.decode_frame(b"\x04\x01\x02") == Packet(M, b"\x01\x02")
    assert codec.encode_frame(Packet(T.PONG, "probe")) == "3probe"
    assert codec.decode_frame("2probe") == Packet(T.PING, "probe")
    assert codec.decode_frame("b4AQI=") == Packet(M, b"\x01\x02")


@pytest.mark.parametrize("frame", [b"", b"\x02ping", "", "9x", "b2AQI=", "b4!!"])
def test_bad_frames_are_refused(frame: str | bytes) -> None:
    """Empty frames, binary frames of other types, unknown types and bad base64 are refused."""
    with pytest.raises(PacketDecodeError):
        codec.decode_frame(frame)


@pytest.mark.parametrize(
    "body",
    [b"", b"abc", b"6:4hell", b"0:", b"1:", b"x:4a", b"12345678901:4", b"2:4a3", b"5:b4!!!"],
)
def test_bad_text_payloads_are_refused(body: bytes) -> None:
    """Missing or wrong lengths, empty records, trailing garbage and bad base64 are refused."""
    with pytest.raises(PacketDecodeError):
        codec.decode_payload(body)


@pytest.mark.parametrize(
    "body",
    [
        b"",
        bytes([2, 1, 255, 0x34]),  # unknown record kind
        bytes([0, 255, 0x34]),  # no length digits
        bytes([0, 10, 255, 0x34]),  # a "digit" over 9
        bytes([0, 5, 255, 0x34]),  # shorter than announced
        bytes([0, 1]),  # no separator
        bytes([1, 2, 255, 2, 9]),  # binary record of a ping
        bytes([0, 2, 255, 0xFF, 0xFE]),  # text record that is not UTF-8
    ],
)
def test_bad_binary_payloads_are_refused(body: bytes) -> None:
    """Every malformed binary payload raises PacketDecodeError."""
    with pytest.raises(PacketDecodeError):
        codec.decode_payload(body, binary=True)


@given(st.lists(packets, min_size=1, max_size=8))
def test_text_payload_round_trip(items: list[Packet]) -> None:
    """Any list of packets survives a text payload (binary as base64) unchanged."""
    payload = codec.encode_payload(items)
    assert isinstance(payload, str)
    assert codec.decode_payload(payload.encode("utf-8")) == items


@given(st.lists(packets, min_size=1, max_size=8))
def test_binary_payload_round_trip(items: list[Packet]) -> None:
    """Any list of packets survives a payload with binary allowed, binary or text."""
    payload = codec.encode_payload(items, binary=True)
    body = payload if isinstance(payload, bytes) else payload.encode("utf-8")
    assert codec.decode_payload(body, binary=isinstance(payload, bytes)) == items


@given(packets)
def test_frame_round_trip(packet: Packet) -> None:
    """Any packet survives encode_frame then decode_frame unchanged."""
    assert codec.decode_frame(codec.encode_frame(packet)) == packet


@given(st.binary(max_size=200), st.booleans())
def test_arbitrary_bodies_decode_or_refuse_cleanly(body: bytes, binary: bool) -> None:
    """Random bytes, as text or binary payloads, decode to packets or raise PacketDecodeError."""
    try:
        result = codec.decode_payload(body, binary)
    except PacketDecodeError:
        return
    assert result and all(isinstance(p, Packet) for p in result)


@given(st.lists(st.tuples(st.integers(0, 30), st.text(max_size=12)), max_size=6))
def test_arbitrary_length_records_decode_or_refuse_cleanly(
    records: list[tuple[int, str]],
) -> None:
    """Records with random (often wrong) lengths and astral text never escape PacketDecodeError."""
    body = "".join(f"{length}:{text}" for length, text in records).encode("utf-8", "replace")
    try:
        result = codec.decode_payload(body)
    except PacketDecodeError:
        return
    assert all(isinstance(p, Packet) for p in result)


@given(st.one_of(st.binary(max_size=100), st.text(max_size=100)))
def test_arbitrary_frames_decode_or_refuse_cleanly(frame: str | bytes) -> None:
    """Random frames decode to a packet or raise PacketDecodeError, nothing else."""
    try:
        packet = codec.decode_frame(frame)
    except PacketDecodeError:
        return
    assert isinstance(packet, Packet)


# -- session -----------------------------------------------------------------------------------


def test_v3_handshake_has_no_max_payload() -> None:
    """The protocol 3 open packet describes the session without maxPayload."""
    session, transport, *_ = make(protocol=3)
    opened = transport.sent()[0]
    assert opened.type is T.OPEN
    assert json.loads(str(opened.data)) == {
        "sid": "sid1",
        "upgrades": ["websocket"],
        "pingInterval": 25000,
        "pingTimeout": 20000,
    }
    assert session.protocol == 3


def test_v3_client_ping_gets_pong_with_same_data_and_server_never_pings() -> None:
    """The server answers each client ping with a pong carrying its data and sends no pings."""
    session, transport, _, clock, _ = make(protocol=3)
    for _ in range(4):
        clock.advance(20)
        transport.writable = True
        session.packet_received(transport, Packet(T.PING, "x"))
    assert not session.closed
    sent = transport.sent()[1:]
    assert sent == [Packet(T.PONG, "x")] * 4


def test_v3_pings_without_a_poll_leave_one_pong_waiting() -> None:
    """Pings while no poll waits (the client POSTs and never GETs) queue one pong, not one each."""
    session, transport, _, _, _ = make(protocol=3)
    for n in range(1000):
        session.packet_received(transport, Packet(T.PING, f"{n}" * 100))
    assert session.buffered_bytes == 100
    transport.writable = True
    session.transport_ready(transport)
    assert transport.sent()[1:] == [Packet(T.PONG, "0" * 100)]
    transport.writable = True
    session.packet_received(transport, Packet(T.PING, "next"))
    assert transport.sent()[2:] == [Packet(T.PONG, "next")], (
        "a pong goes out again once one was sent"
    )


def test_v3_silent_client_is_closed_after_interval_plus_timeout() -> None:
    """With no packet for pingInterval + pingTimeout the session ends with "ping timeout"."""
    session, transport, handler, clock, _gone = make(protocol=3)
    clock.advance(44)
    session.packet_received(transport, Packet(M, "alive"))
    clock.advance(44)
    assert not session.closed
    clock.advance(1.5)
    assert session.closed and handler.reasons == [PING_TIMEOUT]
    assert session.close_reason == PING_TIMEOUT


def test_slow_client_is_closed_when_its_queue_exceeds_the_limit() -> None:
    """Messages piling up for a client that does not poll close it with "slow client"."""
    options = EngineIOOptions(max_buffered_bytes=1000)
    session, _transport, handler, _, _ = make(options=options)
    session.send("x" * 600)
    assert session.buffered_bytes == 600 and not session.closed
    session.send("y" * 600)
    assert session.closed and handler.reasons == [SLOW_CLIENT]
    assert session.buffered_bytes == 0


def test_slow_client_counts_the_transport_buffer() -> None:
    """Bytes the connection could not write yet count against the limit too."""
    options = EngineIOOptions(max_buffered_bytes=1000)
    session, transport, handler, _, _ = make(FakeTransport("websocket"), options=options)
    session.send("small")
    assert not session.closed
    transport.buffered_bytes = 2000
    assert session.buffered_bytes == 2000
    session.send("more")
    assert session.closed and handler.reasons == [SLOW_CLIENT]


def test_sessions_without_a_limit_keep_any_backlog() -> None:
    """Without max_buffered_bytes a session never closes for its backlog."""
    session, _transport, *_ = make(options=OPTIONS)
    for _ in range(100):
        session.send("z" * 10_000)
    assert not session.closed and session.buffered_bytes == 1_000_000


def test_limit_must_be_positive() -> None:
    """A zero or negative max_buffered_bytes is refused."""
    with pytest.raises(ValueError):
        EngineIOOptions(max_buffered_bytes=0)


# -- polling resource --------------------------------------------------------------------------


def v3(sid: str | None = None, **extra: str) -> dict[str, str]:
    query = {"EIO": "3", "transport": "polling", **extra}
    if sid is not None:
        query["sid"] = sid
    return query


def v3_handshake(harness: Harness, **extra: str) -> str:
    request = Request(query=v3(**extra))
    harness.render(request)
    body = request.body().decode()
    length, _, packet = body.partition(":")
    assert int(length) == len(packet) and packet.startswith("0")
    sid: str = json.loads(packet[1:])["sid"]
    return sid


def test_v3_polling_echo_with_binary_payloads() -> None:
    """A v3 client without b64 posts a binary payload and gets a binary payload back."""
    harness = Harness()
    sid = v3_handshake(harness)
    body = bytes([0, 6, 255]) + b"4hello" + bytes([1, 3, 255, 4, 1, 2])
    post = Request(b"POST", v3(sid), body, {"content-type": "application/octet-stream"})
    harness.render(post)
    assert post.body() == b"ok"
    poll = Request(query=v3(sid))
    harness.render(poll)
    assert poll.header("content-type") == "application/octet-stream"
    assert poll.body() == body
    assert harness.log == ["hello", b"\x01\x02"]


def test_v3_polling_b64_sessions_get_text() -> None:
    """A v3 client that sent b64=1 gets binary messages base64-encoded in a text payload."""
    harness = Harness()
    sid = v3_handshake(harness, b64="1")
    harness.render(Request(b"POST", v3(sid), b"10:b4AQIDBA=="))
    poll = Request(query=v3(sid))
    harness.render(poll)
    assert poll.header("content-type") == "text/plain; charset=UTF-8"
    assert poll.body() == b"10:b4AQIDBA=="


def test_v3_polling_ping_is_answered_over_the_next_poll() -> None:
    """A posted "1:2" is answered "1:3" on the next poll."""
    harness = Harness()
    sid = v3_handshake(harness)
    harness.render(Request(b"POST", v3(sid), b"1:2"))
    poll = Request(query=v3(sid))
    harness.render(poll)
    assert poll.body() == b"1:3"


def test_jsonp_polling_is_refused() -> None:
    """JSONP polling (j=) is not served: a bad request, no session opened."""
    harness = Harness()
    request = Request(query=v3(j="0"))
    harness.render(request)
    assert error_of(request) == (400, ErrorCode.BAD_REQUEST)
    assert not harness.server.sessions


def test_v3_can_be_switched_off() -> None:
    """With allow_eio3=False an EIO=3 handshake is an unsupported protocol version."""
    harness = Harness(allow_eio3=False)
    request = Request(query=v3())
    harness.render(request)
    assert error_of(request) == (400, ErrorCode.UNSUPPORTED_PROTOCOL_VERSION)


def test_v3_and_v4_sessions_side_by_side() -> None:
    """One server keeps a v3 and a v4 session, each with its own framing."""
    harness = Harness()
    old = v3_handshake(harness)
    new = harness.handshake()
    harness.render(Request(b"POST", v3(old), b"4:4old"))
    harness.post(new, b"4new")
    old_poll = Request(query=v3(old))
    harness.render(old_poll)
    assert old_poll.body() == b"4:4old"
    assert harness.get(new).body() == b"4new"
    mixed = Request(query={"EIO": "4", "transport": "polling", "sid": old})
    harness.render(mixed)
    assert error_of(mixed) == (400, ErrorCode.BAD_REQUEST)

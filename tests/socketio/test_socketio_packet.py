"""Unit tests of the socket.io v5 packet codec (kernel_relay.socketio.packet)."""

from __future__ import annotations

import array
import gc
import weakref
from typing import Any

import pytest

from kernel_relay.socketio.attachments import deconstruct, reconstruct
from kernel_relay.socketio.packet import (
    DEFAULT_MAX_ATTACHMENTS,
    MAX_ACK_ID,
    Packet,
    PacketDecoder,
    PacketError,
    PacketType,
    decode_text,
    encode_packet,
)

# --- encoding -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("packet", "expected"),
    [
        (Packet(PacketType.CONNECT), "0"),
        (Packet(PacketType.CONNECT, "/admin", {"sid": "oSO0"}), '0/admin,{"sid":"oSO0"}'),
        (
            Packet(PacketType.CONNECT_ERROR, "/", {"message": "Not authorized"}),
            '4{"message":"Not authorized"}',
        ),
        (Packet(PacketType.EVENT, "/", ["foo"]), '2["foo"]'),
        (Packet(PacketType.EVENT, "/admin", ["bar"]), '2/admin,["bar"]'),
        (Packet(PacketType.EVENT, "/", ["foo"], 12), '212["foo"]'),
        (Packet(PacketType.ACK, "/admin", ["bar"], 13), '3/admin,13["bar"]'),
        (Packet(PacketType.ACK, "/", [], 0), "30[]"),
        (Packet(PacketType.DISCONNECT), "1"),
        (Packet(PacketType.DISCONNECT, "/admin"), "1/admin,"),
    ],
)
def test_encode_matches_the_spec_examples(packet: Packet, expected: str) -> None:
    """Text packets encode exactly as the protocol's examples show."""
    assert encode_packet(packet) == [expected]


def test_encode_is_compact_and_keeps_non_ascii() -> None:
    """JSON goes out without spaces and with non-ASCII characters as they are."""
    assert encode_packet(Packet(PacketType.EVENT, "/", ["é", {"a": 1, "b": [1, 2]}])) == [
        '2["é",{"a":1,"b":[1,2]}]'
    ]


def test_encode_escapes_lone_surrogates() -> None:
    """A string holding a lone surrogate is escaped so the message is still valid UTF-8."""
    [text] = encode_packet(Packet(PacketType.EVENT, "/", ["x", "\ud800"]))
    assert isinstance(text, str)
    text.encode("utf-8")
    assert decode_text(text)[0].data == ["x", "\ud800"]


def test_encode_refuses_nan() -> None:
    """NaN is not JSON, so encoding it is a caller error rather than a broken packet on the wire."""
    with pytest.raises(ValueError):
        encode_packet(Packet(PacketType.EVENT, "/", ["x", float("nan")]))


def test_encode_binary_event_matches_the_spec() -> None:
    """Binary values become placeholders, the type BINARY_EVENT, and attachments follow in order."""
    messages = encode_packet(
        Packet(PacketType.EVENT, "/admin", ["baz", b"\x01\x02", bytearray(b"\x03\x04")])
    )
    assert messages == [
        '52-/admin,["baz",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]',
        b"\x01\x02",
        b"\x03\x04",
    ]


def test_encode_binary_ack_with_nested_memoryview() -> None:
    """
    A memoryview nested in a dict of an ACK is sent as an attachment of a BINARY_ACK, as it is (a
    kernel's large buffer is never copied); a bytearray, which may change, is copied.
    """
    view = memoryview(b"\xff")
    messages = encode_packet(Packet(PacketType.ACK, "/", [{"buf": view}], 15))
    assert messages == ['61-15[{"buf":{"_placeholder":true,"num":0}}]', b"\xff"]
    assert messages[1] is view
    mutable = bytearray(b"\x01")
    messages = encode_packet(Packet(PacketType.ACK, "/", [mutable], 16))
    assert messages[1] == b"\x01" and type(messages[1]) is bytes


def test_encode_binary_type_without_binary_is_downgraded() -> None:
    """A packet typed BINARY_EVENT without any bytes is sent as a plain EVENT."""
    assert encode_packet(Packet(PacketType.BINARY_EVENT, "/", ["a"])) == ['2["a"]']
    assert encode_packet(Packet(PacketType.BINARY_ACK, "/", [], 1)) == ["31[]"]


def test_deconstruct_does_not_copy_plain_payloads() -> None:
    """A payload without binary values is returned as the very same object."""
    payload = ["msg", {"content": {"a": [1, 2, {"b": "c"}]}}]
    data, attachments = deconstruct(payload)
    assert data is payload
    assert attachments == []


def test_deconstruct_leaves_the_callers_payload_untouched() -> None:
    """Replacing binary values copies the containers instead of mutating the caller's data."""
    inner = {"buffers": [b"a", b"b"]}
    payload = ["msg", inner]
    data, attachments = deconstruct(payload)
    assert inner == {"buffers": [b"a", b"b"]}
    assert data == [
        "msg",
        {"buffers": [{"_placeholder": True, "num": 0}, {"_placeholder": True, "num": 1}]},
    ]
    assert attachments == [b"a", b"b"]


def test_reconstruct_inverts_deconstruct() -> None:
    """Putting attachments back yields the original structure with bytes values."""
    original = ["x", {"a": [b"1", {"b": b"22"}], "c": None}, b"333"]
    data, attachments = deconstruct(original)
    assert reconstruct(data, attachments) == original


def relay_garbage() -> list[object]:
    """
    What a cyclic collection finds now that the socket.io codec made (its objects, functions, frames). Not
    ``gc.collect() == 0``, nor all of the relay's garbage: threads and connections that earlier tests left
    (socket.io clients winding down, HTTP channels of in-process sites) may make cyclic garbage of their own
    meanwhile.
    """
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        gc.collect()
        return [found for found in gc.garbage if _made_by_relay(found)]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()


def _made_by_relay(found: object) -> bool:
    if (getattr(type(found), "__module__", "") or "").startswith("kernel_relay.socketio"):
        return True
    code = getattr(found, "__code__", None) or getattr(found, "f_code", None)
    return code is not None and "kernel_relay/socketio/" in code.co_filename


def test_an_attachment_is_freed_as_soon_as_its_frames_are(no_cyclic_gc: None) -> None:
    """
    Encoding leaves no reference cycle behind: a kernel's buffer is released with the last frame
    that refers to it, not whenever the cyclic collector runs (before, every 10 MB buffer the relay
    sent stayed in memory until then).
    """
    buffer = array.array("B", bytes(1000))
    released = weakref.ref(buffer)
    messages = encode_packet(
        Packet(PacketType.EVENT, "/iopub/k", ["msg", {"buffers": [memoryview(buffer)]}])
    )
    assert bytes(messages[1]) == bytes(1000)
    del buffer, messages
    assert released() is None
    assert relay_garbage() == []


def test_reconstruct_leaves_no_reference_cycle(no_cyclic_gc: None) -> None:
    """Decoding a client's binary event frees its attachments with the result, not later."""
    decoder = PacketDecoder()
    assert decoder.feed('51-/shell/k,["msg",{"buffers":[{"_placeholder":true,"num":0}]}]') is None
    packet = decoder.feed(b"\x00" * 1000)
    assert packet is not None and packet.data[1]["buffers"] == [b"\x00" * 1000]
    del packet
    assert relay_garbage() == []


# --- decoding -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0", Packet(PacketType.CONNECT)),
        ('0{"token":"123"}', Packet(PacketType.CONNECT, "/", {"token": "123"})),
        ("0/custom,", Packet(PacketType.CONNECT, "/custom")),
        ("0/random", Packet(PacketType.CONNECT, "/random")),
        ('0/custom,{"token":"abc"}', Packet(PacketType.CONNECT, "/custom", {"token": "abc"})),
        ("1", Packet(PacketType.DISCONNECT)),
        ("1/custom", Packet(PacketType.DISCONNECT, "/custom")),
        (
            '2["message",1,"2",{"3":[true]}]',
            Packet(PacketType.EVENT, "/", ["message", 1, "2", {"3": [True]}]),
        ),
        ('2456["message-with-ack"]', Packet(PacketType.EVENT, "/", ["message-with-ack"], 456)),
        ('3/admin,13["bar"]', Packet(PacketType.ACK, "/admin", ["bar"], 13)),
        ("30[]", Packet(PacketType.ACK, "/", [], 0)),
        ('4{"message":"no"}', Packet(PacketType.CONNECT_ERROR, "/", {"message": "no"})),
        ('4"no"', Packet(PacketType.CONNECT_ERROR, "/", "no")),
        (f'2{MAX_ACK_ID}["a"]', Packet(PacketType.EVENT, "/", ["a"], MAX_ACK_ID)),
    ],
)
def test_decode_valid_text_packets(text: str, expected: Packet) -> None:
    """Valid text packets decode to the expected fields."""
    assert decode_text(text) == (expected, 0)


@pytest.mark.parametrize(
    "text",
    [
        "",  # empty
        "abc",  # unknown type (the suite's "4abc" minus the Engine.IO prefix)
        "7",  # type out of range
        "٣",  # a non-ASCII digit
        "{}",
        "2{}",  # event payload not an array
        "2[]",  # empty event payload
        "2[1]",  # event name not a string
        '2["connect"]',  # reserved event name
        '2["disconnect"]',
        "2",  # event without payload
        '2abc["message"]',  # invalid ack id (bad JSON after it)
        '2["message"',  # truncated JSON
        '2["message",NaN]',  # not JSON
        '2["message",Infinity]',
        '2["message"]x',  # trailing garbage
        f'2{MAX_ACK_ID + 1}["a"]',  # ack id not exact in JavaScript
        '299999999999999999999["a"]',  # absurdly long ack id
        "3[]",  # ack without id
        "31{}",  # ack payload not an array
        "31",  # ack without payload
        "0[]",  # connect payload must be an object
        '0"token"',
        "0null",
        "0/a,12{}",  # connect cannot carry an ack id
        "1{}",  # disconnect carries nothing
        "11",  # disconnect with an id
        "4",  # connect error without payload
        "4[]",
        "5[]",  # binary event without count
        "5-[]",
        '5x-["a"]',
        '5a1-["a"]',
        '51["a"]',  # count without dash
        f'5{DEFAULT_MAX_ATTACHMENTS + 1}-["a"]',  # too many attachments
        '599999999999-["a"]',
        "2" + "[" * 100_000 + "]" * 100_000,  # nested too deeply for the parser
    ],
)
def test_decode_rejects_malformed_text(text: str) -> None:
    """Every malformed text packet raises PacketError, never anything else."""
    with pytest.raises(PacketError):
        decode_text(text)


def test_decode_binary_event_of_the_suite() -> None:
    """The suite's binary event is reconstructed with its two attachments as bytes, as an EVENT."""
    decoder = PacketDecoder()
    assert (
        decoder.feed('52-["message",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]')
        is None
    )
    assert decoder.awaiting_attachments
    assert decoder.feed(b"\x01\x02\x03") is None
    packet = decoder.feed(b"\x04\x05\x06")
    assert packet == Packet(PacketType.EVENT, "/", ["message", b"\x01\x02\x03", b"\x04\x05\x06"])
    assert not decoder.awaiting_attachments


def test_decode_binary_ack_with_namespace_and_id() -> None:
    """A BINARY_ACK with a namespace and id is reconstructed as an ACK with its id."""
    decoder = PacketDecoder()
    assert decoder.feed('61-/admin,789[{"_placeholder":true,"num":0}]') is None
    assert decoder.feed(b"z") == Packet(PacketType.ACK, "/admin", [b"z"], 789)


def test_decode_binary_with_zero_attachments() -> None:
    """A binary packet announcing no attachments is complete at once."""
    assert PacketDecoder().feed('50-["a",1]') == Packet(PacketType.EVENT, "/", ["a", 1])


def test_decode_placeholder_in_plain_packet_stays_a_dict() -> None:
    """In a non-binary packet a placeholder-looking object is just data, as in the reference."""
    packet = PacketDecoder().feed('2["a",{"_placeholder":true,"num":0}]')
    assert packet is not None
    assert packet.data == ["a", {"_placeholder": True, "num": 0}]


def test_decoder_round_trips_encoder_output() -> None:
    """Whatever the encoder sends, the decoder gives back unchanged."""
    original = Packet(
        PacketType.EVENT, "/shell/1", ["msg", {"buffers": [b"", b"\x00" * 10]}, "é"], 3
    )
    decoder = PacketDecoder()
    results = [decoder.feed(message) for message in encode_packet(original)]
    assert results[:-1] == [None, None]
    assert results[-1] == original


@pytest.mark.parametrize(
    ("messages"),
    [
        # binary message outside a binary packet
        [b"\x01"],
        ['2["a"]', b"\x01"],
        # text while attachments are expected
        ['51-["a",{"_placeholder":true,"num":0}]', '2["a"]'],
        # placeholder index out of range
        ['51-["a",{"_placeholder":true,"num":1}]', b"x"],
        ['51-["a",{"_placeholder":true,"num":-1}]', b"x"],
        ['51-["a",{"_placeholder":true,"num":"0"}]', b"x"],
        ['51-["a",{"_placeholder":true,"num":true}]', b"x"],
        ['51-["a",{"_placeholder":true,"num":0.0}]', b"x"],
        ['51-["a",{"_placeholder":true}]', b"x"],
        # too few placeholders for the attachments (one attachment never used)
        ['52-["a",{"_placeholder":true,"num":0}]', b"x", b"y"],
        ['51-["a"]', b"x"],
        # placeholder without any attachment
        ['50-["a",{"_placeholder":true,"num":0}]'],
    ],
)
def test_decoder_rejects_bad_binary_sequences(messages: list[str | bytes]) -> None:
    """Each broken binary sequence raises PacketError on its last message and resets the decoder."""
    decoder = PacketDecoder()
    *head, last = messages
    for message in head:
        decoder.feed(message)
    with pytest.raises(PacketError):
        decoder.feed(last)
    assert not decoder.awaiting_attachments
    assert decoder.feed('2["ok"]') == Packet(PacketType.EVENT, "/", ["ok"])


def test_decoder_max_attachments_is_configurable() -> None:
    """A decoder built with a lower limit refuses a packet announcing more attachments."""
    decoder = PacketDecoder(max_attachments=2)
    with pytest.raises(PacketError):
        decoder.feed('53-["a"]')
    assert (
        decoder.feed('52-["a",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]') is None
    )


def test_duplicate_placeholder_uses_are_allowed() -> None:
    """Two placeholders may point at the same attachment (both get the same bytes)."""
    decoder = PacketDecoder()
    decoder.feed('51-["a",{"_placeholder":true,"num":0},[{"_placeholder":true,"num":0}]]')
    packet: Any = decoder.feed(b"q")
    assert packet.data == ["a", b"q", [b"q"]]


def test_a_payload_nested_too_deeply_is_a_packet_error() -> None:
    """JSON nested past the bound (even far past Python's recursion limit) is a clear PacketError."""
    from kernel_relay.socketio.packet import PacketError, decode_text

    for levels in (300, 100_000):
        with pytest.raises(PacketError, match="nested more than 256 levels deep"):
            decode_text('2["msg",' + "[" * levels + "]" * levels + "]")

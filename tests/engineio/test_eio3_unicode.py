"""Non-ASCII text with Engine.IO protocol 3 clients, whose two generations count payload lengths differently."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from kernel_relay.engineio.packets import PacketType, codec_for
from kernel_relay.jsontext import RawJSON
from kernel_relay.socketio.packet import Packet, ascii_packet, encode_packet
from kernel_relay.socketio.packet import PacketType as SocketIOType

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


@given(json_values, st.sampled_from(["/", "/shell/k-1"]), st.none() | st.integers(0, 99))
def test_ascii_packet_is_ascii_and_means_the_same(
    value: Any, namespace: str, ack_id: int | None
) -> None:
    """Escaping keeps the packet's header and its JSON value, and leaves nothing but ASCII."""
    (text,) = encode_packet(Packet(SocketIOType.EVENT, namespace, ["msg", value], ack_id))
    assert isinstance(text, str)
    escaped = ascii_packet(text)
    assert escaped.isascii()
    start = escaped.index("[")
    assert escaped[:start] == text[: text.index("[")]
    assert json.loads(escaped[start:]) == ["msg", value]


def test_raw_kernel_json_is_escaped_too() -> None:
    """A kernel's raw UTF-8 JSON (RawJSON) spliced into a packet comes out escaped, astral characters as pairs."""
    raw = RawJSON('{"text":"é 🎉 ü"}')
    (text,) = encode_packet(Packet(SocketIOType.EVENT, "/iopub/k", ["msg", {"content": raw}]))
    assert isinstance(text, str)
    assert ascii_packet(text) == (
        '2/iopub/k,["msg",{"content":{"text":"\\u00e9 \\ud83c\\udf89 \\u00fc"}}]'
    )


def one_x_payload(*texts: str) -> bytes:
    """A polling body as engine.io-client 1.x writes it: each packet as UTF-8 bytes, one char per byte."""
    records = []
    for text in texts:
        byte_string = text.encode("utf-8").decode("latin-1")
        records.append(f"{len(byte_string)}:{byte_string}")
    return "".join(records).encode("utf-8")


def two_x_payload(*texts: str) -> bytes:
    """A polling body as engine.io-client 3.x (socket.io-client 2.x) writes it: lengths in UTF-16 units."""
    return "".join(f"{len(t.encode('utf-16-le')) // 2}:{t}" for t in texts).encode("utf-8")


def test_both_generations_of_polling_bodies_decode_to_the_same_text() -> None:
    """For b64 sessions a 1.x body (UTF-8 encoded twice) and a 2.x body of the same packets decode alike."""
    texts = ['42/shell/k,["msg","ü é 🎉 €"]', "2probe", '42["x","plain"]', '4"ñ"']
    codec = codec_for(3)
    for body in (one_x_payload(*texts), two_x_payload(*texts)):
        packets = codec.decode_payload(body, byte_strings=True)
        assert [p.type for p in packets] == [PacketType.MESSAGE, PacketType.PING] + [
            PacketType.MESSAGE
        ] * 2
        assert [p.data for p in packets] == [t[1:] for t in texts]


def test_sessions_with_binary_support_read_text_as_sent() -> None:
    """Without b64 (XHR2 clients send 1.x text in binary payloads) text, mojibake included, is kept as is."""
    codec = codec_for(3)
    (packet,) = codec.decode_payload(two_x_payload("4Ã©"))
    assert packet.data == "Ã©"
    (packet,) = codec.decode_payload(two_x_payload("4Ã©"), byte_strings=True)
    assert packet.data == "é"

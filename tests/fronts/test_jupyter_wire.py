"""The Jupyter kernel WebSocket framings, against Jupyter Server's own serializers where it is installed."""

from __future__ import annotations

import json
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kernel_relay.fronts.jupyter_wire import (
    WireError,
    decode_legacy,
    decode_v1,
    legacy_frame,
    v1_frame,
)
from kernel_relay.relay.payload import Outgoing

HEADER = b'{"msg_id":"m","msg_type":"stream"}'
CONTENT = b'{"name":"stdout","text":"caf\xc3\xa9"}'

buffer_lists = st.lists(st.binary(max_size=300), max_size=4)


def outgoing(buffers: list[bytes]) -> Outgoing:
    return Outgoing((HEADER, b"{}", b'{"relay_seq":3}', CONTENT), buffers, "iopub", 3)


@given(buffer_lists)
def test_a_v1_frame_is_what_jupyter_server_reads(buffers: list[bytes]) -> None:
    reference = pytest.importorskip("jupyter_server.services.kernels.connection.base")
    frame = b"".join(v1_frame(outgoing(buffers)))
    channel, parts = reference.deserialize_msg_from_ws_v1(frame)
    assert channel == "iopub"
    assert [bytes(p) for p in parts] == [HEADER, b"{}", b'{"relay_seq":3}', CONTENT, *buffers]
    assert frame == reference.serialize_msg_to_ws_v1(
        [HEADER, b"{}", b'{"relay_seq":3}', CONTENT, *buffers], "iopub"
    )


@given(buffer_lists)
def test_a_legacy_frame_is_what_jupyter_server_reads(buffers: list[bytes]) -> None:
    reference = pytest.importorskip("jupyter_server.services.kernels.connection.base")
    parts, binary = legacy_frame(outgoing(buffers))
    frame = b"".join(parts)
    assert binary == bool(buffers)
    message = reference.deserialize_binary_message(frame) if binary else json.loads(frame)
    assert message["channel"] == "iopub" and message["content"]["text"] == "café"
    assert [bytes(b) for b in message.get("buffers", [])] == buffers


@given(buffer_lists)
def test_what_jupyter_server_writes_decodes(buffers: list[bytes]) -> None:
    reference = pytest.importorskip("jupyter_server.services.kernels.connection.base")
    message = {"header": {"msg_id": "a"}, "parent_header": {}, "metadata": {}, "content": {"x": 1}}
    packed = [
        json.dumps(message[k]).encode() for k in ("header", "parent_header", "metadata", "content")
    ]
    channel, decoded = decode_v1(reference.serialize_msg_to_ws_v1([*packed, *buffers], "shell"))
    assert channel == "shell" and decoded["content"] == {"x": 1} and decoded["buffers"] == buffers
    legacy = {**message, "channel": "control", "buffers": buffers}
    if buffers:
        channel, decoded = decode_legacy(reference.serialize_binary_message(legacy))
    else:
        channel, decoded = decode_legacy(json.dumps(legacy))
    assert channel == "control" and decoded["header"] == {"msg_id": "a"}
    assert decoded["buffers"] == buffers


@pytest.mark.parametrize(
    "frame",
    [
        b"",
        b"\x01" * 7,
        struct.pack("<Q", 2) + b"\x00" * 16,
        struct.pack("<Q", 10**9),
        struct.pack("<7Q", 6, 56, 61, 60, 70, 80, 90),  # offsets out of order
        struct.pack("<7Q", 6, 56, 61, 63, 65, 67, 10**6),  # beyond the frame
        b"".join(v1_frame(Outgoing((b"[]", b"{}", b"{}", b"{}"), [], "shell"))),
        b"".join(v1_frame(Outgoing((b"{", b"{}", b"{}", b"{}"), [], "shell"))),
    ],
)
def test_malformed_v1_frames_are_wire_errors(frame: bytes) -> None:
    with pytest.raises(WireError):
        decode_v1(frame)


@pytest.mark.parametrize(
    "frame",
    [
        "{",
        "[]",
        '{"header": {}}',
        '{"channel": 3}',
        b"",
        b"\x00\x00\x00\x05",
        b"\x00\x00\x00\x01\x00\x00\x00\x09{}",
    ],
)
def test_malformed_legacy_frames_are_wire_errors(frame: str | bytes) -> None:
    with pytest.raises(WireError):
        decode_legacy(frame)


def test_deep_json_in_a_frame_is_a_wire_error() -> None:
    """A part nested past the bound is a WireError naming the part, in either framing."""
    parts = [b"shell", HEADER, b"{}", b"{}", b'{"a":' + b"[" * 5000 + b"]" * 5000 + b"}"]
    offsets = [8 * 7]
    for part in parts:
        offsets.append(offsets[-1] + len(part))
    frame = struct.pack("<7Q", 6, *offsets) + b"".join(parts)
    with pytest.raises(WireError, match="content is not JSON: arrays and objects nested"):
        decode_v1(frame)
    with pytest.raises(WireError, match="message is not JSON: arrays and objects nested"):
        decode_legacy('{"channel": "shell", "content": ' + "[" * 300 + "]" * 300 + "}")

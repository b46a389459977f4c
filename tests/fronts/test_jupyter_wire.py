"""The Jupyter kernel WebSocket framings, against Jupyter Server's own serializers where it is installed."""

from __future__ import annotations

import json
import logging
import struct
from types import SimpleNamespace
from typing import Any

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
from kernel_relay.kernels._messages import build_client_message
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
        '{"header": {}, "channel": ["shell"]}',
        '{"header": {"msg_type": "x", "date": 1e300}}',
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


def _jupyter_server_legacy(
    parts: list[bytes], buffers: list[bytes], channel: str
) -> dict[str, Any]:
    """What Jupyter Server's legacy connection writes for a kernel's message (its own reserializer)."""
    channels = pytest.importorskip("jupyter_server.services.kernels.connection.channels")
    base = pytest.importorskip("jupyter_server.services.kernels.connection.base")
    from jupyter_client.session import Session

    session = Session(key=b"k")
    signed = [b"<IDS|MSG>", session.sign(parts), *parts, *buffers]
    connection = SimpleNamespace(session=session)
    frame = channels.ZMQChannelsWebsocketConnection._reserialize_reply(connection, signed, channel)
    if isinstance(frame, bytes):
        message: dict[str, Any] = base.deserialize_binary_message(frame)
        return message
    return dict(json.loads(frame))


def _relay_legacy(parts: list[bytes], buffers: list[bytes], channel: str) -> dict[str, Any]:
    frame, binary = legacy_frame(
        Outgoing((parts[0], parts[1], parts[2], parts[3]), buffers, channel)
    )
    if not binary:
        return dict(json.loads(b"".join(frame)))
    base = pytest.importorskip("jupyter_server.services.kernels.connection.base")
    message: dict[str, Any] = base.deserialize_binary_message(b"".join(frame))
    return message


@pytest.mark.parametrize("buffers", [[], [b"\x00\x01", b""]])
def test_a_legacy_frame_carries_every_top_level_key_jupyter_servers_does(
    buffers: list[bytes],
) -> None:
    """The relay's legacy frame has Jupyter Server's top-level keys (msg_id, msg_type, buffers) and values."""
    header = {
        "msg_id": "m1",
        "msg_type": "display_data",
        "session": "s",
        "username": "u",
        "date": "2026-12-07T09:00:00.000001Z",
        "version": "5.3",
    }
    parts = [
        json.dumps(header).encode(),
        json.dumps({"msg_id": "p", "msg_type": "execute_request"}).encode(),
        b"{}",
        json.dumps({"data": {"text/plain": "caf\u00e9"}, "metadata": {}}).encode(),
    ]
    reference = _jupyter_server_legacy(parts, buffers, "iopub")
    ours = _relay_legacy(parts, buffers, "iopub")
    assert set(ours) == set(reference)
    for key in ("msg_id", "msg_type", "channel", "content", "metadata"):
        assert ours[key] == reference[key], key
    assert [bytes(b) for b in ours.get("buffers", [])] == [
        bytes(b) for b in reference.get("buffers", [])
    ]


def _gateway_client_frame(msg_type: str, channel: str | None) -> str:
    """What jupyter_server's gateway client (``ChannelQueue.send``) writes for a request on ``channel``."""
    gateway = pytest.importorskip("jupyter_server.gateway.managers")
    from jupyter_client.session import Session

    sent: list[str] = []
    socket = SimpleNamespace(send=sent.append)
    queue = gateway.ChannelQueue(channel or "shell", socket, logging.getLogger("test"))
    message = Session().msg(msg_type, {"code": "1"})
    if channel is not None:
        message["channel"] = channel
    queue.send(message)
    return sent[0]


def test_what_jupyter_servers_gateway_client_writes_reaches_the_kernel() -> None:
    """A gateway client's message (no channel, a numeric date, top-level extras) is a shell request."""
    frame = _gateway_client_frame("execute_request", None)
    assert isinstance(json.loads(frame)["header"]["date"], float)
    channel, decoded = decode_legacy(frame)
    assert channel == "shell"
    message = build_client_message(
        channel, decoded, [], session_id="s", now_iso=lambda: "x", new_msg_id=lambda: "y"
    )
    assert message.header["date"].endswith("Z") and message.header["date"].startswith("20")
    assert message.msg_type == "execute_request" and message.content == {"code": "1"}


def test_a_named_channel_is_kept() -> None:
    """A legacy message that names its channel goes to that channel, its other top-level keys ignored."""
    channel, decoded = decode_legacy(_gateway_client_frame("interrupt_request", "control"))
    assert channel == "control" and decoded["buffers"] == []

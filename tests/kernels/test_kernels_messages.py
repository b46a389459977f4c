"""Unit tests of the Jupyter wire codec (kernel_relay.kernels._messages): no sockets, no kernels."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from jupyter_client.session import Session

from kernel_relay.kernels import InvalidMessage, KernelMessage
from kernel_relay.kernels._messages import (
    DELIMITER,
    MessageRejected,
    build_client_message,
    decode_frames,
    encode_frames,
    session_signer,
)

KEY = b"test-key"


def sign(parts: Sequence[bytes]) -> bytes:
    mac = hmac.new(KEY, digestmod=hashlib.sha256)
    for part in parts:
        mac.update(part)
    return mac.hexdigest().encode()


def build(message: Any, buffers: Sequence[Any] = (), channel: str = "shell") -> KernelMessage:
    return build_client_message(
        channel,
        message,
        buffers,
        session_id="client-session",
        now_iso=lambda: "2024-05-06T07:08:09.000000Z",
        new_msg_id=lambda: "generated-id",
    )


def test_defaults_are_filled_in() -> None:
    """A message with only header.msg_type gets every default header field and {} parts."""
    message = build({"header": {"msg_type": "kernel_info_request"}})
    assert message.header == {
        "msg_type": "kernel_info_request",
        "msg_id": "generated-id",
        "session": "client-session",
        "username": "kernel-relay",
        "date": "2024-05-06T07:08:09.000000Z",
        "version": "5.3",
    }
    assert (message.parent_header, message.metadata, message.content) == ({}, {}, {})
    assert message.channel == "shell"
    assert message.buffers == []


def test_client_values_are_kept_and_input_not_mutated() -> None:
    """Header fields a client provides win over defaults; the caller's dicts are not changed."""
    header = {"msg_type": "execute_request", "msg_id": "mine", "username": "ada", "date": "d"}
    original = dict(header)
    message = build({"header": header, "content": {"code": "1"}, "parent_header": None})
    assert message.header["msg_id"] == "mine"
    assert message.header["username"] == "ada"
    assert message.header["date"] == "d"
    assert message.parent_header == {}
    assert header == original


def test_raw_parts_are_the_compact_json_of_the_parts() -> None:
    """raw_parts holds exactly the JSON bytes that will be signed and sent."""
    message = build({"header": {"msg_type": "x"}, "content": {"text": "é"}})
    assert json.loads(message.raw_parts[0]) == message.header
    assert message.raw_parts[3] == '{"text":"é"}'.encode()


def test_buffers_argument_and_in_message_buffers() -> None:
    """Buffers come from the argument, else from the message's own "buffers" list."""
    assert build({"header": {"msg_type": "x"}}, [b"a", bytearray(b"b")]).buffers == [b"a", b"b"]
    in_message = {"header": {"msg_type": "x"}, "buffers": [memoryview(b"zz")]}
    assert build(in_message).buffers == [b"zz"]


@pytest.mark.parametrize(
    ("message", "buffers", "channel", "fragment"),
    [
        ([1, 2], (), "shell", "must be an object"),
        ("text", (), "shell", "must be an object"),
        ({}, (), "shell", "no header"),
        ({"header": None}, (), "shell", "no header"),
        ({"header": []}, (), "shell", "header must be an object"),
        ({"header": {}}, (), "shell", "msg_type"),
        ({"header": {"msg_type": 3}}, (), "shell", "msg_type"),
        ({"header": {"msg_type": ""}}, (), "shell", "msg_type"),
        ({"header": {"msg_type": "x", "msg_id": 5}}, (), "shell", "header.msg_id"),
        ({"header": {"msg_type": "x", "msg_id": ""}}, (), "shell", "msg_id"),
        ({"header": {"msg_type": "x", "session": {}}}, (), "shell", "header.session"),
        ({"header": {"msg_type": "x"}, "parent_header": []}, (), "shell", "parent_header"),
        ({"header": {"msg_type": "x"}, "content": "code"}, (), "shell", "content"),
        ({"header": {"msg_type": "x"}, "metadata": 1}, (), "shell", "metadata"),
        ({"header": {"msg_type": "x"}}, (), "iopub", "channel"),
        ({"header": {"msg_type": "x"}}, (), "hb", "channel"),
        ({"header": {"msg_type": "x"}}, ["text"], "shell", "buffers[0]"),
        ({"header": {"msg_type": "x"}}, [b"ok", 3], "shell", "buffers[1]"),
        ({"header": {"msg_type": "x"}, "buffers": "abc"}, (), "shell", "buffers"),
        ({"header": {"msg_type": "x"}, "content": {"v": float("nan")}}, (), "shell", "JSON"),
        ({"header": {"msg_type": "x"}, "content": {"v": {1, 2}}}, (), "shell", "JSON"),
        ({"header": {"msg_type": "x"}, "content": {"v": b"raw"}}, (), "shell", "JSON"),
        ({"header": {"msg_type": "x"}, "content": {"v": "\ud800"}}, (), "shell", "JSON"),
    ],
)
def test_unusable_messages_are_refused(
    message: Any, buffers: Sequence[Any], channel: str, fragment: str
) -> None:
    """Each kind of unusable client message raises InvalidMessage naming the problem."""
    with pytest.raises(InvalidMessage, match=re.escape(fragment)):
        build(message, buffers, channel)


def test_encode_then_decode_round_trips() -> None:
    """Encoded frames decode to the same message, identities and raw bytes, with the channel set."""
    message = build({"header": {"msg_type": "x"}, "content": {"a": [1, None]}}, [b"\x00\xff"])
    frames = encode_frames(message, sign, identities=[b"id1", b"id2"])
    assert frames[2] == DELIMITER
    identities, decoded = decode_frames(frames, "stdin", sign)
    assert identities == [b"id1", b"id2"]
    assert decoded.header == message.header
    assert decoded.content == {"a": [1, None]}
    assert decoded.buffers == [b"\x00\xff"]
    assert decoded.raw_parts == message.raw_parts
    assert decoded.channel == "stdin"


def good_frames() -> list[bytes]:
    parts = [b'{"msg_type":"status","date":"2024-01-01T00:00:00.123456Z"}', b"{}", b"{}", b"{}"]
    return [DELIMITER, sign(parts), *parts]


def test_dates_stay_strings() -> None:
    """ISO 8601 dates come out exactly as the kernel wrote them, not as datetime objects."""
    _, message = decode_frames(good_frames(), "iopub", sign)
    assert message.header["date"] == "2024-01-01T00:00:00.123456Z"


@pytest.mark.parametrize(
    ("mutate", "fragment"),
    [
        (lambda f: f.__setitem__(1, b"0" * 64), "bad signature"),
        (lambda f: f.__setitem__(4, b'{"x":1}'), "bad signature"),
        (lambda f: f.__setitem__(1, b""), "bad signature"),
        (lambda f: f.pop(0), "delimiter"),
        (lambda f: f.pop(), "frames after the delimiter"),
    ],
)
def test_tampered_or_malformed_frames_are_rejected(mutate: Any, fragment: str) -> None:
    """A wrong signature, a changed part, or broken framing is rejected with a reason."""
    frames = good_frames()
    mutate(frames)
    with pytest.raises(MessageRejected, match=fragment):
        decode_frames(frames, "iopub", sign)


@pytest.mark.parametrize(
    ("parts", "fragment"),
    [
        ([b"not json", b"{}", b"{}", b"{}"], "header is not JSON"),
        ([b'{"msg_type":"x"}', b"[]", b"{}", b"{}"], "parent_header is not a JSON object"),
        ([b'{"msg_type":"x"}', b"{}", b"{}", b"\xff\xfe"], "content is not JSON"),
        ([b"{}", b"{}", b"{}", b"{}"], "msg_type"),
        ([b'{"msg_type":"x"} {}', b"{}", b"{}", b"{}"], "header is not JSON"),
        ([b'{"msg_type":"x"}', b"{}", b'{"a":NaN}', b"{}"], "metadata is not JSON"),
        ([b'{"msg_type":"x"}', b"{}", b"{}", b'{"a":-Infinity}'], "content is not JSON"),
        ([b'{"msg_type":"x"}', b"", b"{}", b"{}"], "parent_header is not JSON"),
    ],
)
def test_correctly_signed_garbage_is_rejected(parts: list[bytes], fragment: str) -> None:
    """Validly signed parts that are not JSON objects (or lack msg_type) are still rejected."""
    with pytest.raises(MessageRejected, match=fragment):
        decode_frames([DELIMITER, sign(parts), *parts], "shell", sign)


def test_json_parts_may_be_surrounded_by_whitespace() -> None:
    """Parts with whitespace around the object (not what json.dumps writes) still decode."""
    parts = [b' {"msg_type": "x"}\n', b"\t{}", b"{} ", b'\r\n{"a": [1, 2]} ']
    _, message = decode_frames([DELIMITER, sign(parts), *parts], "shell", sign)
    assert message.msg_type == "x" and message.content == {"a": [1, 2]}


def test_unsigned_mode_skips_verification() -> None:
    """With signing disabled (no key), any signature frame is accepted."""
    frames = good_frames()
    frames[1] = b"whatever"
    _, message = decode_frames(frames, "iopub", None)
    assert message.msg_type == "status"


def test_to_dict_includes_buffers_only_when_present() -> None:
    """to_dict has the four parts and channel, and buffers only when the message has some."""
    plain = build({"header": {"msg_type": "x"}})
    assert set(plain.to_dict()) == {"header", "parent_header", "metadata", "content", "channel"}
    with_buffers = build({"header": {"msg_type": "x"}}, [b"1"])
    assert with_buffers.to_dict()["buffers"] == [b"1"]


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4)
    ),
    max_leaves=12,
)


@given(content=st.dictionaries(st.text(), json_values, max_size=5), buffers=st.lists(st.binary()))
def test_any_json_content_round_trips(content: dict[str, Any], buffers: list[bytes]) -> None:
    """Any JSON-compatible content and any buffers survive encode + verify + decode unchanged."""
    message = build({"header": {"msg_type": "comm_msg"}, "content": content}, buffers)
    _, decoded = decode_frames(encode_frames(message, sign), "shell", sign)
    assert decoded.content == content
    assert decoded.buffers == buffers


def test_the_signer_matches_session_sign_with_or_without_the_c_hmac() -> None:
    """session_signer gives Session.sign's digest from the C HMAC object, and from the pure-Python one."""
    session = Session(key=KEY)
    parts = [b'{"msg_type":"status"}', b"{}", b"{}", b'{"execution_state":"idle"}']
    signer = session_signer(session)
    assert signer is not None and signer(parts) == session.sign(parts)
    # A digestmod that is a plain function makes hmac.HMAC compute in Python, without a C object.
    pure = SimpleNamespace(auth=hmac.HMAC(KEY, digestmod=lambda: hashlib.sha256()))
    assert getattr(pure.auth, "_hmac", None) is None
    pure_signer = session_signer(pure)
    assert pure_signer is not None and pure_signer(parts) == session.sign(parts)
    assert session_signer(SimpleNamespace(auth=None)) is None


def test_size_counts_the_json_parts_and_the_buffers() -> None:
    """A message's size as relayed: the bytes of its four JSON parts, plus its buffers if any."""
    message = build({"header": {"msg_type": "comm_msg"}, "content": {"a": 1}}, [b"xyz", b"12"])
    json_bytes = sum(len(part) for part in message.raw_parts)
    assert json_bytes > 0
    assert message.size == json_bytes + 5
    plain = build({"header": {"msg_type": "kernel_info_request"}})
    assert plain.size == sum(len(part) for part in plain.raw_parts)

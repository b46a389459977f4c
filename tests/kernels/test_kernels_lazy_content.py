"""Large kernel contents are forwarded as the kernel wrote them and parsed only when read."""

from __future__ import annotations

import json
import uuid

import pytest
from jupyter_client.session import Session

from kernel_relay.fronts.socketio_forms import client_payload
from kernel_relay.kernels._messages import (
    LAZY_CONTENT_BYTES,
    KernelMessage,
    MessageRejected,
    decode_frames,
)
from kernel_relay.relay.payload import Outgoing

SESSION = Session(key=uuid.uuid4().hex.encode())


def signed(content_json: bytes) -> list[bytes]:
    message = SESSION.msg("display_data", {})
    parts = [SESSION.pack(message[name]) for name in ("header", "parent_header", "metadata")]
    parts.append(content_json)
    return [b"topic", b"<IDS|MSG>", SESSION.sign(parts), *parts]


def big_output() -> dict[str, object]:
    return {"data": {"text/plain": "é" * LAZY_CONTENT_BYTES}, "metadata": {"n": [1, 2]}}


def test_large_content_is_forwarded_raw_and_parsed_on_first_read() -> None:
    """The raw text reaches the client's payload untouched, and reading content gives the parsed object once."""
    payload = json.dumps(big_output(), ensure_ascii=False).encode()
    _, message = decode_frames(signed(payload), "iopub", SESSION.sign)
    assert message._content is None  # not parsed on arrival
    sent = client_payload(Outgoing.of_kernel(message))
    assert isinstance(sent, dict) and sent["content"] == payload.decode()
    assert message._content is None  # sending did not parse it
    assert message.content == big_output()
    assert message.content is message.content


def test_large_content_must_still_look_like_an_object() -> None:
    """A large content that is not a JSON object (or not UTF-8) is refused on arrival."""
    with pytest.raises(MessageRejected):
        decode_frames(signed(b"[" + b"1," * LAZY_CONTENT_BYTES + b"1]"), "iopub", SESSION.sign)
    with pytest.raises(MessageRejected):
        decode_frames(
            signed(b'{"a":"' + b"\xff" * LAZY_CONTENT_BYTES + b'"}'), "iopub", SESSION.sign
        )


def test_large_invalid_json_is_refused_on_arrival() -> None:
    """Malformed JSON inside the braces is refused on arrival too: the fronts would splice it as it is."""
    with pytest.raises(MessageRejected, match="content is not JSON"):
        decode_frames(signed(b'{"a": ' + b"x" * LAZY_CONTENT_BYTES + b"}"), "iopub", SESSION.sign)


def test_a_large_content_cannot_set_the_other_keys_of_a_client_s_message() -> None:
    """
    '{...}, "metadata": {...}, "x": {}' starts with { and ends with }: it was forwarded, and spliced into the
    socket.io payload it gave the message a second "metadata" (and any other key), which clients took.
    """
    injected = (
        b'{"data": {"text/plain": "' + b"i" * LAZY_CONTENT_BYTES + b'"}, "metadata": {}}, '
        b'"metadata": {"relay_seq": 999999}, "channel": "shell", "x": {"y": 1}'
    )
    with pytest.raises(MessageRejected, match="content is not JSON"):
        decode_frames(signed(injected), "iopub", SESSION.sign)


def test_small_content_is_parsed_on_arrival() -> None:
    """Contents under the threshold are parsed and checked at once, as before."""
    with pytest.raises(MessageRejected):
        decode_frames(signed(b'{"a": nope}'), "iopub", SESSION.sign)
    _, message = decode_frames(signed(b'{"a": 1}'), "iopub", SESSION.sign)
    assert message._content == {"a": 1}


def test_messages_compare_by_value() -> None:
    """Two messages with the same parts are equal whether their content was parsed lazily or not."""
    payload = json.dumps(big_output()).encode()
    _, lazy = decode_frames(signed(payload), "iopub", SESSION.sign)
    eager = KernelMessage(lazy.header, lazy.parent_header, lazy.metadata, big_output(), [], "iopub")
    assert lazy == eager
    assert "display_data" in repr(lazy)

"""The socket.io front's "msg" packets: a message that is one JSON text is joined straight into its packet."""

from __future__ import annotations

import pytest
from jupyter_client.session import Session

from kernel_relay.fronts.socketio import MESSAGE_EVENT, _LastEncoded
from kernel_relay.fronts.socketio_forms import JOIN_LIMIT, client_payload
from kernel_relay.kernels._messages import decode_frames
from kernel_relay.relay.payload import Outgoing
from kernel_relay.socketio import encode_event

SESSION = Session(key=b"key")


def outgoing(content: bytes, *buffers: bytes, channel: str = "iopub") -> Outgoing:
    parts = [b'{"msg_type": "stream", "msg_id": "a"}', b'{"msg_id": "p"}', b"{}", content]
    frames = [b"<IDS|MSG>", SESSION.sign(parts), *parts, *buffers]
    return Outgoing.of_kernel(decode_frames(frames, channel, SESSION.sign)[1])


@pytest.mark.parametrize("namespace", ["/iopub/k-1", "/shell/ké", "/"])
@pytest.mark.parametrize(
    "message",
    [
        outgoing(b'{"name": "stdout", "text": "caf\xc3\xa9 \\u00e9\\n"}'),
        outgoing(b'{"text": "numbered"}').with_seq(7),
        outgoing(b'{"status": "ok"}', channel="shell"),
        outgoing(b'{"data": "with a buffer"}', b"\x00\x01"),
        outgoing(b'{"text": "' + b"x" * JOIN_LIMIT + b'"}'),
    ],
)
def test_a_msg_packet_is_what_encode_event_makes_of_the_payload(
    namespace: str, message: Outgoing
) -> None:
    """Every message's packet (joined straight, or encoded from its payload) is encode_event's, byte for byte."""
    expected = encode_event(namespace, MESSAGE_EVENT, client_payload(message))
    last = _LastEncoded()
    assert last.of(namespace, message) == expected
    assert last.of(namespace, message) is last.of(namespace, message), "one encoding per message"

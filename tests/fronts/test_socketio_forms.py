"""A kernel message on its way to clients (Outgoing), and as the "msg" event's argument: one RawJSON text, or a dict."""

from __future__ import annotations

import json

import pytest
from jupyter_client.session import Session
from twisted.internet.task import Clock

from kernel_relay.fronts.socketio_forms import JOIN_LIMIT, Payload, client_payload
from kernel_relay.kernels import KernelMessage
from kernel_relay.kernels._messages import decode_frames
from kernel_relay.relay.journal import IopubJournal
from kernel_relay.relay.payload import Outgoing
from kernel_relay.socketio import RawJSON
from kernel_relay.socketio.packet import Packet, PacketType, encode_packet

SESSION = Session(key=b"key")


def signed(content: bytes, *buffers: bytes, metadata: bytes = b'{"m": [1, 2]}') -> KernelMessage:
    parts = [b'{"msg_type": "stream", "msg_id": "a"}', b'{"msg_id": "p"}', metadata, content]
    frames = [b"topic", b"<IDS|MSG>", SESSION.sign(parts), *parts, *buffers]
    return decode_frames(frames, "iopub", SESSION.sign)[1]


def payload_of(message: KernelMessage, metadata: str | None = None, seq: int = 0) -> Payload:
    outgoing = Outgoing.of_kernel(message)
    if metadata is not None:
        outgoing = outgoing.numbered(metadata.encode(), seq)
    return client_payload(outgoing)


def test_a_message_without_buffers_is_its_dict_form_as_one_json_text() -> None:
    """The joined text parses to exactly what to_dict gives, and holds the kernel's own bytes."""
    message = signed(b'{"name": "stdout", "text": "caf\xc3\xa9 \\u00e9\\n"}')
    payload = payload_of(message)
    assert type(payload) is RawJSON
    assert json.loads(payload) == message.to_dict()
    assert '"text": "café \\u00e9\\n"' in payload


def test_metadata_text_replaces_the_kernels_and_the_packet_carries_the_text_verbatim() -> None:
    """The relay's metadata (with relay_seq) goes in; the encoder writes the text as it is."""
    message = signed(b'{"text": "x"}')
    payload = payload_of(message, '{"relay_seq":3}', 3)
    assert json.loads(payload)["metadata"] == {"relay_seq": 3}
    (text,) = encode_packet(Packet(PacketType.EVENT, "/iopub/k", ["msg", payload]))
    assert text == f'2/iopub/k,["msg",{payload}]'


def test_a_message_with_buffers_stays_a_dict_whose_buffers_become_attachments() -> None:
    """Buffers must travel as binary attachments, so such a message has no single text form."""
    message = signed(b'{"text": "x"}', b"\x00\x01", b"\xff")
    payload = payload_of(message, '{"relay_seq":4}', 4)
    assert isinstance(payload, dict)
    assert payload["buffers"] == [b"\x00\x01", b"\xff"]
    assert payload["metadata"] == RawJSON('{"relay_seq":4}')
    encoded = encode_packet(Packet(PacketType.EVENT, "/iopub/k", ["msg", payload]))
    assert encoded[0].startswith("52-/iopub/k,")
    assert encoded[1:] == [b"\x00\x01", b"\xff"]
    with pytest.raises(TypeError):
        json.dumps(payload)  # no single text form: the buffers are bytes


def test_a_large_content_is_not_joined_into_one_more_copy() -> None:
    """Over JOIN_LIMIT the content stays its own RawJSON part: joining would copy it once more."""
    big = b'{"text": "' + b"x" * JOIN_LIMIT + b'"}'
    payload = payload_of(signed(big))
    assert isinstance(payload, dict)
    assert payload["content"] == RawJSON(big.decode())


def test_a_message_built_from_dicts_is_encoded_once() -> None:
    """A message without the kernel's JSON (made in process) is encoded from its dicts."""
    message = KernelMessage(
        {"msg_type": "status"}, {}, {}, {"execution_state": "idle"}, channel="iopub"
    )
    assert json.loads(payload_of(message)) == message.to_dict()


def test_the_journal_numbers_a_kernel_message_in_its_metadata_and_keeps_the_text() -> None:
    """relay_seq is spliced into each message's own metadata; a message with buffers too."""
    journal = IopubJournal(Clock(), max_bytes=1 << 20, max_age=60)
    first = journal.record(Outgoing.of_kernel(signed(b'{"text": "1"}')), 100, "stream")
    second = journal.record(
        Outgoing.of_kernel(signed(b'{"text": "2"}', metadata=b"{}")), 100, "stream"
    )
    assert [json.loads(client_payload(p))["metadata"] for p in (first, second)] == [
        {"relay_seq": 1, "m": [1, 2]},
        {"relay_seq": 2},
    ]
    assert journal.since(1).messages == [second]
    numbered = client_payload(Outgoing.of_kernel(signed(b'{"text": "3"}', b"buffer")).with_seq(9))
    assert isinstance(numbered, dict)
    assert json.loads(numbered["metadata"]) == {"relay_seq": 9, "m": [1, 2]}


def test_the_parts_are_the_kernels_own_bytes_and_a_relay_message_is_encoded_once() -> None:
    """Outgoing keeps the signed JSON as it came (for the Jupyter v1 front); a dict is packed."""
    message = signed(b'{"text":  "spaced"}', b"\x00buffer")
    outgoing = Outgoing.of_kernel(message)
    assert [bytes(part) for part in outgoing.parts] == [bytes(p) for p in message.raw_parts]
    assert [bytes(b) for b in outgoing.buffers] == [b"\x00buffer"]
    made = Outgoing.of_dict(
        {"header": {"msg_type": "status"}, "content": {"execution_state": "dead"}}
    )
    assert made.parts == (b'{"msg_type":"status"}', b"{}", b"{}", b'{"execution_state":"dead"}')

"""A kernel message as the "msg" event's argument: one RawJSON text, or a dict when it has buffers."""

from __future__ import annotations

import json

import pytest
from jupyter_client.session import Session
from twisted.internet.task import Clock

from kernel_relay.kernels import KernelMessage
from kernel_relay.kernels._messages import decode_frames
from kernel_relay.relay.journal import IopubJournal, with_sequence
from kernel_relay.relay.payload import JOIN_LIMIT, client_payload
from kernel_relay.socketio import RawJSON
from kernel_relay.socketio.packet import Packet, PacketType, encode_packet

SESSION = Session(key=b"key")


def signed(content: bytes, *buffers: bytes, metadata: bytes = b'{"m": [1, 2]}') -> KernelMessage:
    parts = [b'{"msg_type": "stream", "msg_id": "a"}', b'{"msg_id": "p"}', metadata, content]
    frames = [b"topic", b"<IDS|MSG>", SESSION.sign(parts), *parts, *buffers]
    return decode_frames(frames, "iopub", SESSION.sign)[1]


def test_a_message_without_buffers_is_its_dict_form_as_one_json_text() -> None:
    """The joined text parses to exactly what to_dict gives, and holds the kernel's own bytes."""
    message = signed(b'{"name": "stdout", "text": "caf\xc3\xa9 \\u00e9\\n"}')
    payload = client_payload(message)
    assert type(payload) is RawJSON
    assert json.loads(payload) == message.to_dict()
    assert '"text": "café \\u00e9\\n"' in payload


def test_metadata_text_replaces_the_kernels_and_the_packet_carries_the_text_verbatim() -> None:
    """The relay's metadata (with relay_seq) goes in; the encoder writes the text as it is."""
    message = signed(b'{"text": "x"}')
    payload = client_payload(message, '{"relay_seq":3}')
    assert json.loads(payload)["metadata"] == {"relay_seq": 3}
    (text,) = encode_packet(Packet(PacketType.EVENT, "/iopub/k", ["msg", payload]))
    assert text == f'2/iopub/k,["msg",{payload}]'


def test_a_message_with_buffers_stays_a_dict_whose_buffers_become_attachments() -> None:
    """Buffers must travel as binary attachments, so such a message has no single text form."""
    message = signed(b'{"text": "x"}', b"\x00\x01", b"\xff")
    payload = client_payload(message, '{"relay_seq":4}')
    assert isinstance(payload, dict)
    assert payload["buffers"] == [b"\x00\x01", b"\xff"]
    assert payload["metadata"] == RawJSON('{"relay_seq":4}')
    encoded = encode_packet(Packet(PacketType.EVENT, "/iopub/k", ["msg", payload]))
    assert encoded[0].startswith("52-/iopub/k,")
    assert encoded[1:] == [b"\x00\x01", b"\xff"]
    with pytest.raises(ValueError, match="buffers"):
        message.to_json()


def test_a_large_content_is_not_joined_into_one_more_copy() -> None:
    """Over JOIN_LIMIT the content stays its own RawJSON part: joining would copy it once more."""
    big = b'{"text": "' + b"x" * JOIN_LIMIT + b'"}'
    payload = client_payload(signed(big))
    assert isinstance(payload, dict)
    assert payload["content"] == RawJSON(big.decode())


def test_a_message_built_from_dicts_is_encoded_once() -> None:
    """A message without the kernel's JSON (made in process) is encoded from its dicts."""
    message = KernelMessage(
        {"msg_type": "status"}, {}, {}, {"execution_state": "idle"}, channel="iopub"
    )
    assert json.loads(client_payload(message)) == message.to_dict()


def test_the_journal_numbers_a_kernel_message_in_its_metadata_and_keeps_the_text() -> None:
    """relay_seq is spliced into each message's own metadata; a message with buffers too."""
    journal = IopubJournal(Clock(), max_bytes=1 << 20, max_age=60)
    first = journal.record(signed(b'{"text": "1"}'), 100, "stream")
    second = journal.record(signed(b'{"text": "2"}', metadata=b"{}"), 100, "stream")
    assert [json.loads(p)["metadata"] for p in (first, second)] == [
        {"relay_seq": 1, "m": [1, 2]},
        {"relay_seq": 2},
    ]
    assert journal.since(1).messages == [second]
    numbered = with_sequence(signed(b'{"text": "3"}', b"buffer"), 9)
    assert isinstance(numbered, dict)
    assert json.loads(numbered["metadata"]) == {"relay_seq": 9, "m": [1, 2]}


def test_a_message_nobody_received_is_replayed_as_it_would_have_been_sent() -> None:
    """keep() joins nothing; a replay gives the same numbered text (or dict) that record() gives."""
    messages = [
        signed(b'{"text": "1"}'),
        signed(b'{"text": "2"}', metadata=b"{}"),
        signed(b'{"text": "3"}', b"\x00buffer"),
        signed(b'{"text": "' + b"x" * JOIN_LIMIT + b'"}'),
    ]
    sent, kept = (IopubJournal(Clock(), max_bytes=1 << 22, max_age=60) for _ in range(2))
    recorded = [sent.record(message, message.size, "stream") for message in messages]
    for message in messages:
        kept.keep(message, message.size, "stream")
    assert kept.last_seq == sent.last_seq == 4
    replayed = kept.since(0).messages
    assert replayed == recorded == sent.since(0).messages
    assert [type(payload) for payload in replayed] == [RawJSON, RawJSON, dict, dict]
    assert json.loads(replayed[1])["metadata"] == {"relay_seq": 2}
    assert kept.since(2).messages == recorded[2:]

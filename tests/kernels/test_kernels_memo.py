"""PartMemo: a repeated JSON part (a request's parent header) is parsed once, and a bad one is never kept."""

from __future__ import annotations

import json
from typing import Any

import pytest
from jupyter_client.session import Session

from kernel_relay.kernels._memo import MAX_ENTRIES, MAX_PART_BYTES, PartMemo
from kernel_relay.kernels._messages import MessageRejected, decode_frames


class _Counting:
    """A parse that counts its calls, and refuses what is not a JSON object."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, text: str) -> dict[str, Any]:
        self.calls += 1
        value = json.loads(text)
        if not isinstance(value, dict):
            raise ValueError("not an object")
        return value


def test_the_same_bytes_are_parsed_once_and_other_bytes_each_time() -> None:
    """A part seen before is the dict it parsed to; a different part is parsed."""
    parse = _Counting()
    memo = PartMemo(parse)
    first = memo.parse(b'{"msg_id":"a"}', '{"msg_id":"a"}')
    assert memo.parse(b'{"msg_id":"a"}', '{"msg_id":"a"}') is first
    assert memo.parse(b'{"msg_id":"b"}', '{"msg_id":"b"}') == {"msg_id": "b"}
    assert parse.calls == 2


def test_a_part_that_is_no_object_raises_every_time_and_is_not_kept() -> None:
    """An array is refused at each arrival: a refusal is never remembered as a result."""
    parse = _Counting()
    memo = PartMemo(parse)
    for _ in range(2):
        with pytest.raises(ValueError, match="not an object"):
            memo.parse(b"[1]", "[1]")
    assert parse.calls == 2


def test_large_parts_and_views_are_parsed_each_time() -> None:
    """A part over MAX_PART_BYTES, or one received as a view, is never kept."""
    parse = _Counting()
    memo = PartMemo(parse)
    large = json.dumps({"x": "y" * MAX_PART_BYTES})
    for raw in (large.encode(), memoryview(b'{"a":1}'), large.encode(), memoryview(b'{"a":1}')):
        memo.parse(raw, str(raw, "utf-8"))
    assert parse.calls == 4


def test_the_memo_holds_at_most_max_entries_parts() -> None:
    """Past MAX_ENTRIES distinct parts it starts again: the first one is parsed anew."""
    parse = _Counting()
    memo = PartMemo(parse)
    parts = [json.dumps({"n": n}) for n in range(MAX_ENTRIES + 1)]
    for text in parts:
        memo.parse(text.encode(), text)
    memo.parse(parts[0].encode(), parts[0])
    assert parse.calls == MAX_ENTRIES + 2


def _frames(session: Session, parent: bytes, msg_type: str) -> list[bytes]:
    parts = [json.dumps({"msg_type": msg_type, "msg_id": msg_type}).encode(), parent, b"{}", b"{}"]
    return [b"<IDS|MSG>", session.sign(parts), *parts]


def test_a_reply_and_its_statuses_share_their_parent_and_a_bad_one_is_always_refused() -> None:
    """Messages with one parent header get one dict equal to it; a signed non-object parent is refused each time."""
    session = Session(key=b"k")
    parent = b'{"msg_id": "request-1", "msg_type": "kernel_info_request"}'
    decoded = [
        decode_frames(_frames(session, parent, kind), "iopub", session.sign)[1]
        for kind in ("status", "kernel_info_reply", "status")
    ]
    assert decoded[0].parent_header == json.loads(parent)
    assert all(message.parent_header is decoded[0].parent_header for message in decoded)
    for _ in range(2):
        with pytest.raises(MessageRejected, match="parent_header is not a JSON object"):
            decode_frames(_frames(session, b'["request-1"]', "status"), "iopub", session.sign)

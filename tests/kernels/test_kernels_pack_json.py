"""Unit tests of ``pack_json``, the strict JSON encoder of every message the relay makes or completes."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kernel_relay.kernels import InvalidMessage
from kernel_relay.kernels._messages import build_client_message, pack_json

_json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@given(_json_values)
def test_pack_json_is_compact_utf8_json(value: Any) -> None:
    """Any JSON value comes out as the standard library's compact, non-ASCII-escaping encoding."""
    expected = json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    assert pack_json(value) == expected.encode("utf-8")


@pytest.mark.parametrize(
    ("value", "error"),
    [
        (float("nan"), ValueError),
        ({"a": float("inf")}, ValueError),
        ({"a": object()}, TypeError),
        ({(1, 2): 3}, TypeError),
    ],
)
def test_pack_json_refuses_what_is_not_json(value: Any, error: type[Exception]) -> None:
    """NaN, infinities and non-JSON types are refused, not encoded as something a kernel chokes on."""
    with pytest.raises(error):
        pack_json(value)


def test_pack_json_refuses_a_value_that_contains_itself_every_time() -> None:
    """A cycle is a ValueError, and refusing one leaves the encoder usable for the next value."""
    looped: list[Any] = [1]
    looped.append({"again": looped})
    for _ in range(3):
        with pytest.raises(ValueError):
            pack_json(looped)
    assert pack_json([[1], {"a": [2]}]) == b'[[1],{"a":[2]}]'


def test_client_content_nested_too_deeply_to_encode_is_an_invalid_message() -> None:
    """A client's content too deep to encode is refused with InvalidMessage, not a RecursionError."""
    content: dict[str, Any] = {}
    for _ in range(100_000):
        content = {"a": content}
    with pytest.raises(InvalidMessage, match="content cannot be encoded as JSON"):
        build_client_message(
            "shell",
            {"header": {"msg_type": "execute_request", "msg_id": "m"}, "content": content},
            [],
            session_id="s",
            now_iso=lambda: "2026-01-01T00:00:00.000000Z",
            new_msg_id=lambda: "id",
        )

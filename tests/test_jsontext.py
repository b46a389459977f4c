"""The one bounded JSON decoder of what clients send: strict, UTF-8, nested at most MAX_DEPTH levels."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kernel_relay.jsontext import MAX_DEPTH, JSONError, depth, loads


def nested(levels: int) -> str:
    return "[" * levels + "]" * levels


@pytest.mark.parametrize("levels", [MAX_DEPTH + 1, 5_000, 1_000_000])
def test_json_nested_past_the_bound_is_one_clear_error(levels: int) -> None:
    """Deeper than the bound, as far as Python's recursion limit and beyond, is a JSONError, never a RecursionError."""
    with pytest.raises(JSONError, match=f"nested more than {MAX_DEPTH} levels deep"):
        loads(nested(levels))


def test_json_at_the_bound_and_brackets_in_strings_are_taken() -> None:
    """The bound counts nesting, not brackets: a wide value, or brackets inside strings, pass."""
    assert loads(nested(MAX_DEPTH)) is not None
    wide = json.dumps([[i] for i in range(10_000)])
    assert loads(wide)[-1] == [9_999]
    text = json.dumps({"text": "[" * 10_000, "escaped": '"[{\\'})
    assert loads(text.encode())["text"] == "[" * 10_000


@pytest.mark.parametrize(
    ("data", "reason"),
    [(b"\xff{}", "not UTF-8"), ('{"a": NaN}', "NaN is not JSON"), ("[1,", "Expecting value")],
)
def test_what_is_not_json_says_why(data: str | bytes, reason: str) -> None:
    """Bad bytes, NaN and broken text are each a JSONError saying why."""
    with pytest.raises(JSONError, match=reason):
        loads(data)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=30,
)


def python_depth(value: object) -> int:
    if isinstance(value, list):
        return 1 + max(map(python_depth, value), default=0)
    if isinstance(value, dict):
        return 1 + max(map(python_depth, value.values()), default=0)
    return 0


@given(json_values)
def test_depth_counts_what_json_nests(value: object) -> None:
    """depth() on JSON text is the nesting of the value it encodes."""
    assert depth(json.dumps(value)) == python_depth(value)

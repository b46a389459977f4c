"""
JSON text both ways, as the relay core, its fronts and the socket.io codec share it. A leaf: it imports
nothing of the relay.

- :class:`RawJSON`, JSON text that is already encoded, so a kernel's JSON can be forwarded without a
  decode/encode round trip.
- :func:`loads`, the one decoder of what clients send: strict JSON (no ``NaN``), valid UTF-8, and nested at
  most :data:`MAX_DEPTH` levels. Python's decoder recurses, and so does much of what reads its result: text
  nested deeper than the recursion limit would raise a ``RecursionError`` somewhere far from the client
  that sent it. Here it is one :class:`JSONError`, whose message says what is wrong in a line.
"""

from __future__ import annotations

import json
import re
from itertools import accumulate
from typing import Any, Final

#: How deeply arrays and objects may nest in what a client sends (Jupyter messages nest a few levels).
MAX_DEPTH: Final = 256


class RawJSON(str):
    """
    Already-encoded JSON text, spliced verbatim into an encoded packet wherever it appears in the
    payload (as an argument, a list item or a dict value).

    ``RawJSON('{"a":1}')`` is sent as ``{"a":1}``, not as the string ``"{\\"a\\":1}"``. The text
    must be a single valid JSON value; it is not checked, so a wrong one breaks the peer's decoder.
    """

    __slots__ = ()


class JSONError(ValueError):
    """Text that is not JSON the relay takes; the message says why in one line."""


def _reject_constant(name: str) -> Any:
    raise JSONError(f"{name} is not JSON")


# Built once: json.loads with a keyword argument builds a new decoder (and scanner) on every call.
_decode = json.JSONDecoder(parse_constant=_reject_constant).decode
# A JSON string (the text is valid JSON by then, so this is linear); what is left is ASCII, of which only the
# brackets are kept, all as [ and ].
_STRING: Final = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"')
_BRACKETS_ONLY: Final = {c: None for c in range(128) if chr(c) not in "[]{}"} | {
    ord("{"): "[",
    ord("}"): "]",
}
_STEP: Final = {"[": 1, "]": -1}
#: Passes that each take away the innermost level, before the rest is counted bracket by bracket.
_PASSES: Final = 8


def depth(text: str) -> int:
    """How deeply arrays and objects nest in ``text``, valid JSON (in C loops, not per character)."""
    brackets = _STRING.sub("", text).translate(_BRACKETS_ONLY)
    # Usual JSON is wide and shallow: a few passes over a shrinking string take it all.
    for level in range(_PASSES):
        if not brackets:
            return level
        brackets = brackets.replace("[]", "")
    return _PASSES + max(accumulate(map(_STEP.__getitem__, brackets)), default=0)


def loads(data: str | bytes | bytearray | memoryview, max_depth: int = MAX_DEPTH) -> Any:
    """The value of JSON ``data`` (UTF-8 if bytes); :class:`JSONError` if it is not JSON or nests too deeply."""
    if isinstance(data, str):
        text = data
    else:
        try:
            text = str(data, "utf-8")
        except UnicodeDecodeError as error:
            raise JSONError(f"not UTF-8 ({error.reason} at byte {error.start})") from None
    try:
        value = _decode(text)
    except RecursionError:
        raise JSONError(_too_deep(max_depth)) from None
    except JSONError:
        raise
    except ValueError as error:
        raise JSONError(str(error)) from None
    # Fewer brackets than the bound cannot nest deeper than it: the usual case costs two counts.
    if text.count("[") + text.count("{") > max_depth and depth(text) > max_depth:
        raise JSONError(_too_deep(max_depth))
    return value


def _too_deep(max_depth: int) -> str:
    return f"arrays and objects nested more than {max_depth} levels deep"

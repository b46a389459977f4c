"""
The JSON text of socket.io payloads, written as the reference writes it: compact, kept valid UTF-8
even with lone surrogates, and with :class:`~kernel_relay.jsontext.RawJSON` parts (already-encoded
JSON, such as a kernel message part as the kernel sent it) copied in verbatim instead of encoded as
strings.

Apart from :mod:`.packet` because it is a JSON writer, not packet grammar; it runs for every message
to every namespace, so its loops handle the common values themselves.
"""

from __future__ import annotations

import json
import re
from typing import Any

from ..jsontext import RawJSON

# Built once: json.dumps with options builds a new encoder on every call (a few us per packet).
_encode_compact = json.JSONEncoder(
    separators=(",", ":"), ensure_ascii=False, allow_nan=False
).encode
_encode_ascii = json.JSONEncoder(separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode


def dumps(value: Any) -> str:
    """Compact JSON as the reference sends it, kept valid UTF-8 even with lone surrogates."""
    text = _encode_compact(value)
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            # A lone surrogate (from a "\ud800" escape a client sent) cannot go out as UTF-8 text;
            # escaping everything keeps the value identical for the JSON reader on the other side.
            text = _encode_ascii(value)
    return text


_KEYS: dict[str, str] = {}


def _dumps_key(key: str) -> str:
    """
    A short string (a dict key, an event name) as JSON; the few of a relay's messages are encoded
    once, not per message.
    """
    encoded = _KEYS.get(key)
    if encoded is None:
        encoded = dumps(key)
        if len(_KEYS) < 256 and len(key) <= 64:
            _KEYS[key] = encoded
    return encoded


def write_with_raw(value: Any, chunks: list[str]) -> None:
    # Values that need no recursion (the RawJSON parts of a kernel message, strings, numbers) are
    # handled in the loops themselves: this runs for every message to every namespace.
    kind = type(value)
    if kind is RawJSON or isinstance(value, RawJSON):
        chunks.append(value)
    elif kind is list or kind is tuple or isinstance(value, (list, tuple)):
        chunks.append("[")
        for index, item in enumerate(value):
            if index:
                chunks.append(",")
            if type(item) is RawJSON:
                chunks.append(item)
            elif type(item) is str:
                chunks.append(_dumps_key(item))
            else:
                write_with_raw(item, chunks)
        chunks.append("]")
    elif kind is dict or isinstance(value, dict):
        chunks.append("{")
        for index, (key, item) in enumerate(value.items()):
            if index:
                chunks.append(",")
            # json's own rules for keys (str, or int/float/bool/None written as strings).
            chunks.append(_dumps_key(key) if isinstance(key, str) else dumps({key: 0})[1:-3])
            chunks.append(":")
            if type(item) is RawJSON:
                chunks.append(item)
            else:
                write_with_raw(item, chunks)
        chunks.append("}")
    else:
        chunks.append(dumps(value))


_NON_ASCII = re.compile(r"[^\x00-\x7f]")


def _escape_char(match: re.Match[str]) -> str:
    code = ord(match.group())
    if code > 0xFFFF:
        code -= 0x10000
        return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"
    return f"\\u{code:04x}"


def escape_non_ascii(json_text: str) -> str:
    """``json_text`` with every non-ASCII character written as a ``\\u`` escape: the same JSON value."""
    return _NON_ASCII.sub(_escape_char, json_text)

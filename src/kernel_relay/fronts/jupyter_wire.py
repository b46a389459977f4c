"""
The Jupyter kernel WebSocket's two wire formats, as pure functions (Jupyter Server's
``/api/kernels/<id>/channels``; see its "kernel WebSocket protocols" documentation):

- ``v1.kernel.websocket.jupyter.org`` (:data:`V1`): every message is one binary frame. It starts with
  ``n``, then ``n`` offsets (each an unsigned 64-bit little-endian integer, from the start of the frame):
  the channel name runs from offset 0 to 1, then header, parent_header, metadata, content and each buffer,
  the last ending at offset ``n - 1``, the end of the frame. Nothing is JSON but the four parts, so the relay
  sends a kernel's parts as they came and reads only what it must.
- legacy (no subprotocol): a message without buffers is a text frame, the JSON of the message with its
  ``channel``; one with buffers is a binary frame: ``nbufs`` and ``nbufs`` offsets (unsigned 32-bit
  big-endian), the message's JSON, then each buffer. The relay writes what Jupyter Server writes: the
  header's ``msg_id`` and ``msg_type`` also at the top (jupyter_server's gateway client and
  jupyter-kernel-client read them there), and ``"buffers": []`` in a text frame. It reads what Jupyter
  Server reads: a message without ``channel`` is for shell, a ``date`` given as a number (POSIX seconds, as
  jupyter_server's gateway client writes it) is made an ISO 8601 string, other top-level keys are ignored.
"""

from __future__ import annotations

import json
import struct
from itertools import pairwise
from typing import Any, Final

from ..jsontext import JSONError, loads
from ..kernels import CHANNELS, SHELL, Frame, iso_date
from ..relay.payload import Outgoing

V1: Final = "v1.kernel.websocket.jupyter.org"
_PART_NAMES: Final = ("header", "parent_header", "metadata", "content")
#: More buffers than this in one message is no Jupyter message (and would make the offset table huge).
MAX_BUFFERS: Final = 1024
_dumps: Final = json.JSONEncoder(ensure_ascii=False).encode


class WireError(ValueError):
    """A client's frame is not a Jupyter message in the connection's format."""


#: The channels' names as a v1 frame carries them, and the offset tables of the usual sizes, made once.
_CHANNEL_BYTES: Final = {channel: channel.encode() for channel in CHANNELS}
_TABLES: Final = {count: struct.Struct(f"<{count + 1}Q") for count in range(6, 16)}


def v1_frame(message: Outgoing) -> list[Frame]:
    """The parts of ``message``'s v1 frame, in order: offset table, channel, the four JSON parts, buffers."""
    channel = _CHANNEL_BYTES.get(message.channel) or message.channel.encode("utf-8")
    pieces: list[Frame] = [channel, *message.parts, *message.buffers]
    count = len(pieces) + 1
    offset = 8 * (count + 1)
    offsets = [offset]
    for piece in pieces:
        offset += len(piece)
        offsets.append(offset)
    table = _TABLES.get(count) or struct.Struct(f"<{count + 1}Q")
    return [table.pack(count, *offsets), *pieces]


def _legacy_json(message: Outgoing) -> str:
    """
    The message's JSON as Jupyter Server's legacy frames carry it: the four parts as they came, the header's
    ``msg_id`` and ``msg_type`` beside them, ``channel``, and ``"buffers": []`` when the frame is text.
    """
    header, parent, metadata, content = message.texts()
    try:
        fields = loads(header)
    except JSONError:
        fields = {}
    if not isinstance(fields, dict):
        fields = {}
    return "".join(
        (
            '{"header":',
            header,
            ',"msg_id":',
            _dumps(str(fields.get("msg_id") or "")),
            ',"msg_type":',
            _dumps(str(fields.get("msg_type") or "")),
            ',"parent_header":',
            parent,
            ',"metadata":',
            metadata,
            ',"content":',
            content,
            "" if message.buffers else ',"buffers":[]',
            ',"channel":',
            _dumps(message.channel),
            "}",
        )
    )


def legacy_frame(message: Outgoing) -> tuple[list[Frame], bool]:
    """``message`` in the legacy format: the frame's parts, and whether the frame is binary."""
    text = _legacy_json(message).encode("utf-8")
    if not message.buffers:
        return [text], False
    pieces: list[Frame] = [text, *message.buffers]
    count = len(pieces)
    offsets = [4 * (count + 1)]
    for piece in pieces[:-1]:
        offsets.append(offsets[-1] + len(piece))
    return [struct.pack(f"!{count + 1}I", count, *offsets), *pieces], True


def _json_object(data: bytes | str, name: str) -> dict[str, Any]:
    # Most parent headers, metadata and contents a client sends: no decoder to run.
    if data == b"{}":
        return {}
    try:
        value = loads(data)
    except JSONError as error:
        raise WireError(f"the {name} is not JSON: {error}") from None
    if not isinstance(value, dict):
        raise WireError(f"the {name} must be a JSON object")
    return value


def _slices(data: bytes, offsets: list[int], start: int) -> list[bytes]:
    """The pieces of ``data`` between consecutive ``offsets``, each checked to lie in order in the frame."""
    previous = start
    for offset in offsets:
        if offset < previous or offset > len(data):
            raise WireError("the offset table does not describe the frame")
        previous = offset
    return [data[a:b] for a, b in pairwise(offsets)]


def decode_v1(data: bytes) -> tuple[str, dict[str, Any]]:
    """A client's v1 frame as (channel, message with ``buffers``)."""
    if len(data) < 8:
        raise WireError("a v1 frame starts with an 8-byte offset count")
    (count,) = struct.unpack_from("<Q", data)
    if not 6 <= count <= MAX_BUFFERS + 6 or len(data) < 8 * (count + 1):
        raise WireError(f"a v1 frame cannot have {count} offsets")
    offsets = list(struct.unpack_from(f"<{count}Q", data, 8))
    pieces = _slices(data, offsets, 8 * (count + 1))
    try:
        channel = pieces[0].decode("utf-8")
    except UnicodeDecodeError:
        raise WireError("the channel name is not UTF-8") from None
    message: dict[str, Any] = {
        name: _json_object(piece, name)
        for name, piece in zip(_PART_NAMES, pieces[1:5], strict=True)
    }
    message["buffers"] = pieces[5:]
    return channel, message


def decode_legacy(data: str | bytes) -> tuple[str, dict[str, Any]]:
    """A client's legacy text or binary frame as (channel, message with ``buffers``)."""
    if isinstance(data, str):
        message = _json_object(data, "message")
        buffers: list[bytes] = []
    else:
        if len(data) < 4:
            raise WireError("a binary legacy frame starts with a 4-byte buffer count")
        (count,) = struct.unpack_from("!I", data)
        if not 1 <= count <= MAX_BUFFERS + 1 or len(data) < 4 * (count + 1):
            raise WireError(f"a binary legacy frame cannot have {count} parts")
        offsets = [*struct.unpack_from(f"!{count}I", data, 4), len(data)]
        pieces = _slices(data, offsets, 4 * (count + 1))
        message = _json_object(pieces[0], "message")
        buffers = pieces[1:]
    channel = message.pop("channel", None)
    if channel is None:
        channel = SHELL  # as Jupyter Server assumes
    elif not isinstance(channel, str):
        raise WireError('a legacy message names its channel in "channel", a string')
    for part in ("header", "parent_header"):
        _iso_date(message.get(part))
    message["buffers"] = buffers
    return channel, message


def _iso_date(header: object) -> None:
    """A header's numeric ``date`` (POSIX seconds) made the ISO 8601 string the protocol asks for."""
    if not isinstance(header, dict):
        return
    date = header.get("date")
    if isinstance(date, int | float) and not isinstance(date, bool):
        try:
            header["date"] = iso_date(date)
        except (OverflowError, OSError, ValueError):
            raise WireError(f"header.date {date!r} is no time") from None

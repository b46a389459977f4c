"""
The Jupyter wire format, as pure functions: no sockets, no clock, no jupyter_client.

A kernel message on ZMQ is ``[identities..., b"<IDS|MSG>", signature, header, parent_header,
metadata, content, buffers...]`` where the signature is an HMAC over the four JSON parts. Decoding
keeps the JSON bytes of those parts (``raw_parts``) so a later layer can splice them into outgoing
packets without re-encoding, and never turns ISO 8601 dates into ``datetime`` objects: clients get
the strings the kernel wrote.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ._errors import InvalidMessage

DELIMITER = b"<IDS|MSG>"
PROTOCOL_VERSION = "5.3"
DEFAULT_USERNAME = "kernel-relay"
CLIENT_CHANNELS = ("shell", "control", "stdin")

#: A ZMQ frame as received: ``bytes``, or for a large one a read-only view of ZMQ's own message
#: (see ``ZERO_COPY_BYTES`` in ``_zmq``), which is passed on to clients without being copied.
Frame = bytes | memoryview

Signer = Callable[[Sequence[Frame]], bytes]
"""Computes the signature of the four JSON parts (``jupyter_client.session.Session.sign``)."""


def _frame(data: Any) -> Frame:
    return data if type(data) is bytes or type(data) is memoryview else bytes(data)


_EMPTY_PARTS = (b"{}", b"{}", b"{}", b"{}")


class MessageRejected(ValueError):
    """An incoming frame list is not a usable, correctly signed Jupyter message."""


#: Contents longer than this are not parsed on arrival: the relay forwards the kernel's JSON as it is.
LAZY_CONTENT_BYTES = 64 * 1024


class KernelMessage:
    """
    One Jupyter message, with the channel it travelled on.

    ``content`` of a large message from a kernel is parsed only when read: the relay's hot path never
    reads it (it forwards ``raw_parts``), and parsing 10 MB of output would cost more than relaying it.
    """

    __slots__ = (
        "_content",
        "_texts",
        "buffers",
        "channel",
        "header",
        "metadata",
        "parent_header",
        "raw_parts",
    )

    def __init__(
        self,
        header: dict[str, Any],
        parent_header: dict[str, Any],
        metadata: dict[str, Any],
        content: dict[str, Any] | None = None,
        buffers: list[Frame] | None = None,
        channel: str = "",
        raw_parts: tuple[Frame, Frame, Frame, Frame] = _EMPTY_PARTS,
        texts: tuple[str, str, str, str] | None = None,
    ) -> None:
        self.header = header
        self.parent_header = parent_header
        self.metadata = metadata
        self._content = content
        self.buffers: list[Frame] = buffers if buffers is not None else []
        self.channel = channel
        #: The JSON bytes of header, parent_header, metadata and content, exactly as signed.
        self.raw_parts = raw_parts
        self._texts = texts

    @property
    def content(self) -> dict[str, Any]:
        if self._content is None:
            text = self._texts[3] if self._texts is not None else str(self.raw_parts[3], "utf-8")
            try:
                value = _decode_json(text)
            except (ValueError, RecursionError) as exc:
                raise MessageRejected(f"content is not JSON: {exc}") from None
            if type(value) is not dict:
                raise MessageRejected("content is not a JSON object")
            self._content = value
        return self._content

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, KernelMessage):
            return NotImplemented
        return self._fields() == other._fields()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"<KernelMessage {self.msg_type} {self.msg_id} on {self.channel or '?'}>"

    def _fields(self) -> tuple[Any, ...]:
        return (
            self.header,
            self.parent_header,
            self.metadata,
            self.content,
            self.buffers,
            self.channel,
        )

    @property
    def msg_id(self) -> str:
        return str(self.header.get("msg_id", ""))

    @property
    def msg_type(self) -> str:
        return str(self.header.get("msg_type", ""))

    @property
    def parent_msg_id(self) -> str:
        return str(self.parent_header.get("msg_id", ""))

    def to_dict(self, raw: Callable[[str], Any] | None = None) -> dict[str, Any]:
        """
        The message as clients see it; ``buffers`` only when there are some.

        With ``raw``, the four parts are ``raw(json_text)`` of the kernel's own JSON (``raw_parts``)
        instead of dicts, for an encoder that splices already-encoded JSON (``socketio.RawJSON``):
        the relay then passes the kernel's bytes on without encoding them again. The parts were
        verified when the message was decoded (and parsed, but for a large content); a message built
        without ``raw_parts`` gives its dicts either way.
        """
        if raw is not None and self.raw_parts is not _EMPTY_PARTS:
            texts = self._texts or tuple(str(part, "utf-8") for part in self.raw_parts)
            header, parent, metadata, content = (raw(text) for text in texts)
        else:
            header, parent, metadata, content = (
                self.header,
                self.parent_header,
                self.metadata,
                self.content,
            )
        result: dict[str, Any] = {
            "header": header,
            "parent_header": parent,
            "metadata": metadata,
            "content": content,
        }
        if self.buffers:
            result["buffers"] = list(self.buffers)
        result["channel"] = self.channel
        return result


# One encoder for every message: json.dumps with options builds a new encoder on each call.
_encode_json = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode


def pack_json(value: Any) -> bytes:
    """Strict JSON (no NaN, no non-JSON types, valid UTF-8) so a kernel never sees something odd."""
    return _encode_json(value).encode("utf-8")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


# The C scanner on text: skips json.loads' encoding detection, refuses NaN and Infinity (not JSON,
# and a browser's JSON.parse would choke on them) so the parts can be passed on byte for byte.
_decoder = json.JSONDecoder(parse_constant=_reject_constant)
# The decoder's C scanner (not in the typeshed stubs): one value at an index, no whitespace skipping.
_scan_json: Callable[[str, int], tuple[Any, int]] = _decoder.scan_once  # type: ignore[attr-defined]


def _decode_json(text: str) -> Any:
    """``json.loads`` for a kernel's compact JSON: the C scanner alone when the value fills ``text``."""
    try:
        value, end = _scan_json(text, 0)
    except StopIteration:
        end = -1
    if end != len(text):
        # Leading or trailing whitespace, trailing garbage or no value: the full decoder decides.
        value = _decoder.decode(text)
    return value


_PART_NAMES = ("header", "parent_header", "metadata", "content")


def decode_frames(
    frames: Sequence[Frame], channel: str, sign: Signer | None
) -> tuple[list[bytes], KernelMessage]:
    """
    Verify and parse one multipart message; returns (routing identities, message).

    Raises MessageRejected with the reason when the message is malformed or its signature is wrong.
    ``sign`` is None only for kernels that run without a key (signing disabled).
    """
    if not isinstance(frames, list | tuple):
        frames = list(frames)
    try:
        split = frames.index(DELIMITER)
    except ValueError:
        raise MessageRejected("no <IDS|MSG> delimiter") from None
    if len(frames) < split + 6:
        raise MessageRejected(f"only {len(frames) - split - 1} frames after the delimiter, need 5")
    raw = tuple(_frame(f) for f in frames[split + 2 : split + 6])
    if sign is not None:
        signature = frames[split + 1]
        if not hmac.compare_digest(
            signature if type(signature) is bytes else bytes(signature), sign(raw)
        ):
            raise MessageRejected("bad signature")
    parts: list[dict[str, Any] | None] = []
    texts: list[str] = []
    for name, data in zip(_PART_NAMES, raw, strict=True):
        try:
            text = str(data, "utf-8")
        except UnicodeDecodeError as exc:
            raise MessageRejected(f"{name} is not JSON: {exc}") from None
        texts.append(text)
        if name == "content" and len(data) > LAZY_CONTENT_BYTES:
            # Signed by the kernel, the only party holding the key: checked for UTF-8 and for being
            # an object here, parsed only if someone reads it (see KernelMessage.content).
            if not (text.lstrip()[:1] == "{" and text.rstrip()[-1:] == "}"):
                raise MessageRejected("content is not a JSON object")
            parts.append(None)
            continue
        try:
            value = _decode_json(text)
        except (ValueError, RecursionError) as exc:
            raise MessageRejected(f"{name} is not JSON: {exc}") from None
        if type(value) is not dict:
            raise MessageRejected(f"{name} is not a JSON object")
        parts.append(value)
    header, parent_header, metadata = parts[0], parts[1], parts[2]
    assert header is not None and parent_header is not None and metadata is not None
    if not isinstance(header.get("msg_type"), str):
        raise MessageRejected("header.msg_type is missing")
    message = KernelMessage(
        header=header,
        parent_header=parent_header,
        metadata=metadata,
        content=parts[3],
        buffers=[_frame(f) for f in frames[split + 6 :]],
        channel=channel,
        raw_parts=(raw[0], raw[1], raw[2], raw[3]),
        texts=(texts[0], texts[1], texts[2], texts[3]),
    )
    identities = [f if type(f) is bytes else bytes(f) for f in frames[:split]]
    return identities, message


def encode_frames(
    message: KernelMessage, sign: Signer | None, identities: Sequence[bytes] = ()
) -> list[Frame]:
    """The multipart frames for ``message`` (its ``raw_parts`` are what gets signed and sent)."""
    raw = list(message.raw_parts)
    signature = sign(raw) if sign is not None else b""
    return [*identities, DELIMITER, signature, *raw, *message.buffers]


def _optional_dict(message: Mapping[str, Any], key: str) -> dict[str, Any]:
    value = message.get(key)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InvalidMessage(f"{key} must be an object, not {type(value).__name__}")
    return dict(value)


def _buffer_list(buffers: Sequence[Any]) -> list[Frame]:
    if isinstance(buffers, str | bytes | bytearray | memoryview) or not isinstance(
        buffers, Sequence
    ):
        raise InvalidMessage("buffers must be a list of binary values")
    result: list[Frame] = []
    for index, buffer in enumerate(buffers):
        if not isinstance(buffer, bytes | bytearray | memoryview):
            raise InvalidMessage(f"buffers[{index}] must be binary, not {type(buffer).__name__}")
        result.append(bytes(buffer))
    return result


def build_client_message(
    channel: str,
    message: Any,
    buffers: Sequence[Any],
    *,
    session_id: str,
    now_iso: str,
    new_msg_id: Callable[[], str],
) -> KernelMessage:
    """
    Check a client's message and fill in what a kernel needs; raises InvalidMessage.

    Only ``header.msg_type`` is required. Missing header fields get defaults (fresh ``msg_id``, the
    client's ``session``, ``username``, ``date`` and protocol ``version``); a missing or null
    ``parent_header``, ``metadata`` or ``content`` becomes ``{}``. When ``buffers`` is empty, a
    ``"buffers"`` list inside the message (binary attachments put back in place) is used instead.
    """
    if channel not in CLIENT_CHANNELS:
        raise InvalidMessage(
            f"cannot send on channel {channel!r}; use one of {', '.join(CLIENT_CHANNELS)}"
        )
    if not isinstance(message, Mapping):
        raise InvalidMessage(f"a message must be an object, not {type(message).__name__}")
    if "header" not in message or message["header"] is None:
        raise InvalidMessage("the message has no header (header.msg_type is required)")
    header = _optional_dict(message, "header")
    msg_type = header.get("msg_type")
    if not isinstance(msg_type, str) or not msg_type:
        raise InvalidMessage("header.msg_type must be a non-empty string")
    defaults: dict[str, Callable[[], str]] = {
        "msg_id": new_msg_id,
        "session": lambda: session_id,
        "username": lambda: DEFAULT_USERNAME,
        "date": lambda: now_iso,
        "version": lambda: PROTOCOL_VERSION,
    }
    for key, default in defaults.items():
        value = header.get(key)
        if value is None:
            header[key] = default()
        elif not isinstance(value, str):
            raise InvalidMessage(f"header.{key} must be a string, not {type(value).__name__}")
    if not header["msg_id"]:
        raise InvalidMessage("header.msg_id must not be empty")
    parent_header = _optional_dict(message, "parent_header")
    metadata = _optional_dict(message, "metadata")
    content = _optional_dict(message, "content")
    if not buffers and message.get("buffers") is not None:
        buffers = message["buffers"]
    binary = _buffer_list(buffers)
    raw: list[bytes] = []
    for name, part in (
        ("header", header),
        ("parent_header", parent_header),
        ("metadata", metadata),
        ("content", content),
    ):
        try:
            raw.append(pack_json(part))
        except (TypeError, ValueError) as exc:
            raise InvalidMessage(f"{name} cannot be encoded as JSON: {exc}") from None
    return KernelMessage(
        header=header,
        parent_header=parent_header,
        metadata=metadata,
        content=content,
        buffers=binary,
        channel=channel,
        raw_parts=(raw[0], raw[1], raw[2], raw[3]),
    )

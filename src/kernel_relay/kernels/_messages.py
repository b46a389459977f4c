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
from datetime import UTC, datetime
from hmac import HMAC
from json.encoder import c_make_encoder, encode_basestring  # type: ignore[attr-defined]
from typing import Any, Final

from ._errors import InvalidMessage
from ._memo import PartMemo

DELIMITER = b"<IDS|MSG>"
PROTOCOL_VERSION = "5.3"
DEFAULT_USERNAME = "kernel-relay"
#: A kernel's channels, named once for every layer.
SHELL: Final = "shell"
CONTROL: Final = "control"
STDIN: Final = "stdin"
IOPUB: Final = "iopub"
#: The channels a client sends on, and every channel (in the order metrics list them).
CLIENT_CHANNELS: Final = (SHELL, CONTROL, STDIN)
CHANNELS: Final = (SHELL, STDIN, IOPUB, CONTROL)


def iso_date(seconds: float) -> str:
    """POSIX ``seconds`` as the ISO 8601 date the Jupyter protocol writes: UTC, microseconds, ``Z``."""
    stamp = datetime.fromtimestamp(seconds, UTC)
    return stamp.isoformat(timespec="microseconds").replace("+00:00", "Z")


#: A ZMQ frame as received: ``bytes``, or for a large one a read-only view of ZMQ's own message
#: (see ``ZERO_COPY_BYTES`` in ``_zmq``), which is passed on to clients without being copied.
Frame = bytes | memoryview

Signer = Callable[[Sequence[Frame]], bytes]
"""Computes the signature of the four JSON parts (``jupyter_client.session.Session.sign``)."""


def session_signer(session: Any) -> Signer | None:
    """
    The signer of a jupyter_client ``Session`` (None when it signs nothing): what ``Session.sign``
    computes, without its trait lookup and list copy on every message. It copies the C HMAC object
    inside ``hmac.HMAC`` when there is one (CPython's OpenSSL build): each copy and update through the
    Python wrapper costs a call more, four times per message.
    """
    auth: HMAC | None = session.auth
    if auth is None:
        return None
    keyed: Any = getattr(auth, "_hmac", None) or auth

    def sign(parts: Sequence[Frame]) -> bytes:
        digest = keyed.copy()
        for part in parts:
            digest.update(part)
        return bytes(digest.hexdigest(), "ascii")

    return sign


def _frame(data: Any) -> Frame:
    return data if type(data) is bytes or type(data) is memoryview else bytes(data)


_EMPTY_PARTS = (b"{}", b"{}", b"{}", b"{}")


class MessageRejected(ValueError):
    """An incoming frame list is not a usable, correctly signed Jupyter message."""


#: Contents longer than this are checked on arrival but not kept parsed: the relay forwards the kernel's JSON
#: as it is.
LAZY_CONTENT_BYTES = 64 * 1024


class KernelMessage:
    """
    One Jupyter message, with the channel it travelled on.

    ``content`` of a large message from a kernel is kept parsed only once read: the relay's hot path never
    reads it (it forwards ``raw_parts``), and a parsed copy of 10 MB of output would double its memory.
    """

    __slots__ = (
        "_content",
        "buffers",
        "channel",
        "header",
        "metadata",
        "parent_header",
        "raw_parts",
        "texts",
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
        self.texts = texts  # raw_parts as text, when decode_frames decoded them (None otherwise)

    @property
    def content(self) -> dict[str, Any]:
        if self._content is None:
            text = self.texts[3] if self.texts is not None else str(self.raw_parts[3], "utf-8")
            self._content = _json_object(text, "content")
        return self._content

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, KernelMessage):
            return NotImplemented
        return self._fields() == other._fields()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"<KernelMessage {self.msg_type} {self.msg_id} on {self.channel or '?'}>"

    def _fields(self) -> tuple[Any, ...]:
        parts = self.header, self.parent_header, self.metadata, self.content
        return (*parts, self.buffers, self.channel)

    @property
    def msg_id(self) -> str:
        return str(self.header.get("msg_id", ""))

    @property
    def size(self) -> int:
        """Bytes of the message as relayed: its four JSON parts (``raw_parts``) and its buffers."""
        header, parent, metadata, content = self.raw_parts
        size = len(header) + len(parent) + len(metadata) + len(content)
        return size + sum(map(len, self.buffers)) if self.buffers else size

    @property
    def msg_type(self) -> str:
        return str(self.header.get("msg_type", ""))

    @property
    def parent_msg_id(self) -> str:
        return str(self.parent_header.get("msg_id", ""))

    def json_parts(self) -> tuple[Frame, Frame, Frame, Frame]:
        """The JSON bytes of the four parts: the kernel's own (``raw_parts``), else encoded from the dicts."""
        if self.raw_parts is _EMPTY_PARTS:
            header, parent, metadata, content = (
                pack_json(part)
                for part in (self.header, self.parent_header, self.metadata, self.content)
            )
            return header, parent, metadata, content
        return self.raw_parts

    def to_dict(self) -> dict[str, Any]:
        """
        The message as clients see it, parsed; ``buffers`` only when there are some. (The relay sends
        the kernel's JSON as it came instead: see ``kernel_relay.relay.payload``.)
        """
        result: dict[str, Any] = {
            "header": self.header,
            "parent_header": self.parent_header,
            "metadata": self.metadata,
            "content": self.content,
        }
        if self.buffers:
            result["buffers"] = list(self.buffers)
        result["channel"] = self.channel
        return result


_encoder = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))
# Its C encoder made once (``encode`` makes one per call); with no table of the containers being encoded
# (an error midway would leave it stale), a cycle ends in RecursionError.
_encode_chunks: Callable[[Any, int], Sequence[str]] = (
    c_make_encoder(None, _encoder.default, encode_basestring, None, ":", ",", False, False, False)
    if c_make_encoder is not None
    else lambda value, _level: (_encoder.encode(value),)
)


def pack_json(value: Any) -> bytes:
    """Strict JSON (no NaN, no non-JSON types, valid UTF-8) so a kernel never sees something odd."""
    try:
        return "".join(_encode_chunks(value, 0)).encode("utf-8")
    except RecursionError:
        raise ValueError("the value nests too deeply or contains itself") from None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


# The C scanner on text: skips json.loads' encoding detection, refuses NaN and Infinity (not JSON,
# and a browser's JSON.parse would choke on them) so the parts can be passed on byte for byte.
_decoder = json.JSONDecoder(parse_constant=_reject_constant)
# The decoder's C scanner (not in the typeshed stubs): one value at an index, no whitespace skipping.
_scan_json: Callable[[str, int], tuple[Any, int]] = _decoder.scan_once  # type: ignore[attr-defined]


def _json_object(text: str, name: str) -> dict[str, Any]:
    """
    One JSON part as a dict; MessageRejected saying which part is wrong. A kernel's usual part, a
    compact object and nothing else, takes the C scanner alone (four times per message); anything else
    (whitespace around it, trailing garbage, no value, an error) goes to the full decoder, which decides.
    """
    try:
        value, end = _scan_json(text, 0)
        if end == len(text) and type(value) is dict:
            return value
    except (StopIteration, ValueError, RecursionError):
        pass
    try:
        value = _decoder.decode(text)
    except (ValueError, RecursionError) as exc:
        raise MessageRejected(f"{name} is not JSON: {exc}") from None
    if type(value) is not dict:
        raise MessageRejected(f"{name} is not a JSON object")
    return value


_PART_NAMES = ("header", "parent_header", "metadata", "content")
_parents = PartMemo(lambda text: _json_object(text, "parent_header"))


def _text(data: Frame, name: str) -> str:
    try:
        return str(data, "utf-8")
    except UnicodeDecodeError as exc:
        raise MessageRejected(f"{name} is not JSON: {exc}") from None


def _signed_parts(
    frames: Sequence[Frame], sign: Signer | None
) -> tuple[int, tuple[Frame, Frame, Frame, Frame]]:
    """Where the delimiter is, and the four JSON parts after it, their signature checked."""
    try:
        split = frames.index(DELIMITER)
    except ValueError:
        raise MessageRejected("no <IDS|MSG> delimiter") from None
    if len(frames) < split + 6:
        raise MessageRejected(f"only {len(frames) - split - 1} frames after the delimiter, need 5")
    raw = tuple(frames[split + 2 : split + 6])
    if not (type(raw[0]) is type(raw[1]) is type(raw[2]) is type(raw[3]) is bytes):
        raw = tuple(map(_frame, raw))
    if sign is not None:
        signature = frames[split + 1]
        if not hmac.compare_digest(
            signature if type(signature) is bytes else bytes(signature), sign(raw)
        ):
            raise MessageRejected("bad signature")
    return split, raw  # type: ignore[return-value]


def _part_texts(raw: tuple[Frame, Frame, Frame, Frame]) -> tuple[str, str, str, str]:
    """The four parts as text; MessageRejected naming the first that is not UTF-8."""
    try:
        return (
            str(raw[0], "utf-8"),
            str(raw[1], "utf-8"),
            str(raw[2], "utf-8"),
            str(raw[3], "utf-8"),
        )
    except UnicodeDecodeError:
        for part, name in zip(raw, _PART_NAMES, strict=True):
            _text(part, name)  # raises MessageRejected naming the part
        raise


def _lazy_content(texts: tuple[str, str, str, str], size: int) -> dict[str, Any] | None:
    """The content parsed, or None when it is large enough to be kept only as the kernel's text."""
    content = _json_object(texts[3], "content")
    # Fronts splice the kernel's text into their own JSON, so even a large one is checked to be one object
    # and nothing else: a content of '{...}, "metadata": {...}, "x": {}' would set the message's other keys
    # for its clients. (C's parser does it at 1-2 ms a MB, faster than any scan of ours.) A large content
    # is then not kept parsed, a second copy of its text: it is parsed again if someone reads it.
    return content if size <= LAZY_CONTENT_BYTES else None


def decode_frames(
    frames: Sequence[Frame], channel: str, sign: Signer | None
) -> tuple[list[bytes], KernelMessage]:
    """
    Verify and parse one multipart message; returns (routing identities, message).

    Raises MessageRejected with the reason when the message is malformed or its signature is wrong.
    ``sign`` is None only for kernels that run without a key (signing disabled).
    """
    if type(frames) is not list and type(frames) is not tuple:
        frames = list(frames)
    split, raw = _signed_parts(frames, sign)
    texts = _part_texts(raw)
    header = _json_object(texts[0], "header")
    if type(header.get("msg_type")) is not str:
        raise MessageRejected("header.msg_type is missing")
    parent_header = {} if raw[1] == b"{}" else _parents.parse(raw[1], texts[1])
    metadata = {} if raw[2] == b"{}" else _json_object(texts[2], "metadata")
    content = _lazy_content(texts, len(raw[3]))
    buffers = [_frame(f) for f in frames[split + 6 :]] if len(frames) > split + 6 else []
    message = KernelMessage(header, parent_header, metadata, content, buffers, channel, raw, texts)
    if split == 0:
        return [], message
    return [f if type(f) is bytes else bytes(f) for f in frames[:split]], message


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
    if type(value) is not dict and not isinstance(value, Mapping):
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


def _pack_part(name: str, part: dict[str, Any]) -> bytes:
    """One part's JSON bytes (an empty part, most parent headers and metadata, without the encoder)."""
    if not part:
        return b"{}"
    try:
        return pack_json(part)
    except (TypeError, ValueError) as exc:
        raise InvalidMessage(f"{name} cannot be encoded as JSON: {exc}") from None


def _client_header(
    message: Mapping[str, Any],
    session_id: str,
    now_iso: Callable[[], str],
    new_msg_id: Callable[[], str],
) -> dict[str, Any]:
    """A client's header with every field a kernel needs; InvalidMessage for one that is wrong."""
    if message.get("header") is None:
        raise InvalidMessage("the message has no header (header.msg_type is required)")
    header = _optional_dict(message, "header")
    msg_type = header.get("msg_type")
    if not isinstance(msg_type, str) or not msg_type:
        raise InvalidMessage("header.msg_type must be a non-empty string")
    # A client that sends whole headers (most do) costs no default: each is made only when missing.
    for key, default in (
        ("msg_id", new_msg_id),
        ("session", session_id),
        ("username", DEFAULT_USERNAME),
        ("date", now_iso),
        ("version", PROTOCOL_VERSION),
    ):
        value = header.get(key)
        if value is None:
            header[key] = default if isinstance(default, str) else default()
        elif not isinstance(value, str):
            raise InvalidMessage(f"header.{key} must be a string, not {type(value).__name__}")
    if not header["msg_id"]:
        raise InvalidMessage("header.msg_id must not be empty")
    return header


def build_client_message(
    channel: str,
    message: Any,
    buffers: Sequence[Any],
    *,
    session_id: str,
    now_iso: Callable[[], str],
    new_msg_id: Callable[[], str],
) -> KernelMessage:
    """
    Check a client's message and fill in what a kernel needs; raises InvalidMessage.

    Only ``header.msg_type`` is required. Missing header fields get defaults (fresh ``msg_id``, the
    client's ``session``, ``username``, ``date`` from ``now_iso()`` and protocol ``version``); a
    missing or null ``parent_header``, ``metadata`` or ``content`` becomes ``{}``. When ``buffers`` is
    empty, a ``"buffers"`` list inside the message (binary attachments put back in place) is used
    instead.
    """
    if channel not in CLIENT_CHANNELS:
        raise InvalidMessage(
            f"cannot send on channel {channel!r}; use one of {', '.join(CLIENT_CHANNELS)}"
        )
    if type(message) is not dict and not isinstance(message, Mapping):
        raise InvalidMessage(f"a message must be an object, not {type(message).__name__}")
    header = _client_header(message, session_id, now_iso, new_msg_id)
    parent_header = _optional_dict(message, "parent_header")
    metadata = _optional_dict(message, "metadata")
    content = _optional_dict(message, "content")
    if not buffers and message.get("buffers") is not None:
        buffers = message["buffers"]
    binary = _buffer_list(buffers) if buffers or type(buffers) not in (list, tuple) else []
    return KernelMessage(
        header=header,
        parent_header=parent_header,
        metadata=metadata,
        content=content,
        buffers=binary,
        channel=channel,
        raw_parts=(
            _pack_part("header", header),
            _pack_part("parent_header", parent_header),
            _pack_part("metadata", metadata),
            _pack_part("content", content),
        ),
    )

"""
:class:`Outgoing`, a message on its way from a kernel (or the relay) to clients, in the one form every front
can send without parsing: the JSON of its four parts as the kernel signed them, its buffers, its channel.

- The Jupyter kernel WebSocket (v1) sends the parts as they are: offsets and bytes, nothing decoded.
- socket.io and the Jupyter legacy protocol send JSON text: :func:`client_payload` joins the parts into one
  :class:`~kernel_relay.jsontext.RawJSON` text (a message without buffers, with a content within
  :data:`JOIN_LIMIT`), or leaves a dict of ``RawJSON`` parts (buffers must travel as binary attachments, and
  joining a large content into one more text would cost a copy of it). Neither re-encodes the kernel's JSON.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

from ..jsontext import RawJSON
from ..kernels import Frame, KernelMessage, message_json, pack_json

#: A content longer than this is not joined into the message's text (that would copy it once more).
JOIN_LIMIT: Final = 64 * 1024

Payload = RawJSON | dict[str, Any]
"""What a socket.io ``"msg"`` event carries: a message's whole JSON text, or a dict (see the module doc)."""

Parts = tuple[Frame, Frame, Frame, Frame]


class Outgoing:
    """
    One message for clients: ``parts`` are the JSON of header, parent_header, metadata and content; ``seq``
    is its ``relay_seq`` once the journal has numbered it (0 before, and on channels other than iopub).
    """

    __slots__ = ("buffers", "channel", "parts", "seq")

    def __init__(self, parts: Parts, buffers: Sequence[Frame], channel: str, seq: int = 0) -> None:
        self.parts = parts
        self.buffers = buffers
        self.channel = channel
        self.seq = seq

    @classmethod
    def of_kernel(cls, message: KernelMessage) -> Outgoing:
        """A kernel's message, its own bytes."""
        return cls(message.json_parts(), message.buffers, message.channel)

    @classmethod
    def of_dict(cls, message: Mapping[str, Any]) -> Outgoing:
        """A message the relay made (a status), encoded once."""
        parts = tuple(
            pack_json(message.get(name) or {})
            for name in ("header", "parent_header", "metadata", "content")
        )
        return cls(parts, list(message.get("buffers") or ()), str(message.get("channel", "")))  # type: ignore[arg-type]

    def __repr__(self) -> str:
        return f"<Outgoing on {self.channel or '?'}: {bytes(self.parts[0])[:60]!r}>"

    def texts(self) -> tuple[str, str, str, str]:
        header, parent, metadata, content = (str(part, "utf-8") for part in self.parts)
        return header, parent, metadata, content

    def numbered(self, metadata: bytes, seq: int) -> Outgoing:
        """This message with ``metadata`` (JSON that carries ``seq``) for its own."""
        parts = self.parts
        return Outgoing((parts[0], parts[1], metadata, parts[3]), self.buffers, self.channel, seq)


def is_one_text(message: Outgoing) -> bool:
    """Whether :func:`client_payload` makes ``message`` one text: no buffers, a content within the limit."""
    return not message.buffers and len(message.parts[3]) <= JOIN_LIMIT


def json_text(message: Outgoing) -> str:
    """The message without its buffers as one JSON object text, ``channel`` included, joined from its parts."""
    return message_json(message.texts(), message.channel)


def client_payload(message: Outgoing) -> Payload:
    """``message`` as a socket.io ``"msg"`` argument (see the module doc)."""
    if is_one_text(message):
        return RawJSON(json_text(message))
    header, parent, metadata, content = (RawJSON(text) for text in message.texts())
    payload: dict[str, Any] = {
        "header": header,
        "parent_header": parent,
        "metadata": metadata,
        "content": content,
    }
    if message.buffers:
        payload["buffers"] = list(message.buffers)
    payload["channel"] = message.channel
    return payload

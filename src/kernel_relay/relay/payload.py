"""
A kernel message as the argument of the socket.io ``"msg"`` event, made of the kernel's own JSON.

A message without buffers becomes one :class:`~kernel_relay.socketio.RawJSON` text joined from the
kernel's signed parts, which the socket.io encoder splices in one piece: no dict to build and walk for
each of a flood's messages. A message with buffers, and a large one, stays a dict of ``RawJSON`` parts:
its buffers must become binary attachments, and joining a large content into one more text would cost
a copy of it.
"""

from __future__ import annotations

from typing import Any

from ..jsontext import RawJSON
from ..kernels import KernelMessage

#: A content longer than this is not joined into the message's text (that would copy it once more).
JOIN_LIMIT = 64 * 1024

Payload = RawJSON | dict[str, Any]
"""What a ``"msg"`` event carries: a message's whole JSON text, or a dict (see the module doc)."""


def is_one_text(message: KernelMessage) -> bool:
    """Whether :func:`client_payload` makes ``message`` one text: no buffers, a content within the limit."""
    return not message.buffers and len(message.raw_parts[3]) <= JOIN_LIMIT


def client_payload(message: KernelMessage, metadata: str | None = None) -> Payload:
    """``message`` as clients see it; ``metadata`` (JSON text) replaces its metadata when given."""
    if not is_one_text(message):
        payload = message.to_dict(raw=RawJSON)
        if metadata is not None:
            payload["metadata"] = RawJSON(metadata)
        return payload
    return RawJSON(message.to_json(metadata))

"""
:class:`Outgoing`, a message on its way from a kernel (or the relay) to clients, in the one form every front
can send without parsing: the JSON of its four parts as the kernel signed them, its buffers, its channel.
Messages become ``Outgoing`` where they enter the core (:meth:`Outgoing.of_kernel`, :meth:`Outgoing.of_dict`);
each front makes its own wire form from the parts only when it sends (``kernel_relay.fronts``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..kernels import Frame, KernelMessage, pack_json

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

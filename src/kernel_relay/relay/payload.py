"""
:class:`Outgoing`, a message on its way from a kernel (or the relay) to clients, in the one form every front
can send without parsing: the JSON of its four parts as the kernel signed them, its buffers, its channel.
Messages become ``Outgoing`` where they enter the core (:meth:`Outgoing.of_kernel`, :meth:`Outgoing.of_dict`);
each front makes its own wire form from the parts only when it sends (``kernel_relay.fronts``).

An iopub message's number (``relay_seq``) goes into its metadata only when a front first reads its parts
(:meth:`Outgoing.with_seq`): most of a kernel's messages are kept in its journal for clients that may come
back, and one no client receives now is then never spliced at all.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from ..kernels import Frame, KernelMessage, pack_json

Parts = tuple[Frame, Frame, Frame, Frame]
Texts = tuple[str, str, str, str]

SEQ_KEY = "relay_seq"
_SEQ_FIELD = f'"{SEQ_KEY}"'.encode()
_SEQ_ONLY = b"{" + _SEQ_FIELD + b":%d}"


class Outgoing:
    """
    One message for clients: ``parts`` are the JSON of header, parent_header, metadata and content; ``seq``
    is its ``relay_seq`` once the journal has numbered it (0 before, and on channels other than iopub).
    """

    __slots__ = ("_parts", "_texts", "_unspliced", "buffers", "channel", "seq")

    def __init__(
        self,
        parts: Parts,
        buffers: Sequence[Frame],
        channel: str,
        seq: int = 0,
        texts: Texts | None = None,
    ) -> None:
        self._parts = parts
        self._texts = texts
        """The parts as text when they came decoded (a kernel's message): no front decodes them again."""
        self._unspliced = False
        self.buffers = buffers
        self.channel = channel
        self.seq = seq

    @classmethod
    def of_kernel(cls, message: KernelMessage) -> Outgoing:
        """A kernel's message, its own bytes."""
        return cls(message.json_parts(), message.buffers, message.channel, 0, message.texts)

    @classmethod
    def of_dict(cls, message: Mapping[str, Any]) -> Outgoing:
        """A message the relay made (a status), encoded once."""
        parts = tuple(
            pack_json(message.get(name) or {})
            for name in ("header", "parent_header", "metadata", "content")
        )
        return cls(parts, list(message.get("buffers") or ()), str(message.get("channel", "")))  # type: ignore[arg-type]

    def __repr__(self) -> str:
        return f"<Outgoing on {self.channel or '?'}: {bytes(self._parts[0])[:60]!r}>"

    @property
    def parts(self) -> Parts:
        if self._unspliced:
            parts = self._parts
            self._parts = (parts[0], parts[1], splice_seq(parts[2], self.seq), parts[3])
            self._unspliced = False
            self._texts = None
        return self._parts

    def texts(self) -> Texts:
        """
        The four parts as text: those it came with, else decoded now and not kept (a journal keeps its
        messages, whose bytes its bound counts: a kept copy as text would double what they hold).
        """
        texts = self._texts
        if texts is None or self._unspliced:
            parts = self.parts
            texts = (
                str(parts[0], "utf-8"),
                str(parts[1], "utf-8"),
                str(parts[2], "utf-8"),
                str(parts[3], "utf-8"),
            )
        return texts

    def numbered(self, metadata: bytes, seq: int) -> Outgoing:
        """This message with ``metadata`` (JSON that carries ``seq``) for its own."""
        parts = self.parts
        return Outgoing((parts[0], parts[1], metadata, parts[3]), self.buffers, self.channel, seq)

    def with_seq(self, seq: int) -> Outgoing:
        """This message numbered ``seq``: its metadata carries ``relay_seq`` once its parts are read."""
        numbered = Outgoing(self._parts, self.buffers, self.channel, seq)
        numbered._unspliced = True
        return numbered


def splice_seq(metadata_json: bytes | memoryview | str, seq: int) -> bytes:
    """
    ``metadata_json`` (a JSON object, as UTF-8 bytes or text) with ``relay_seq`` set, as UTF-8 bytes: spliced
    when that is safe, which for a kernel's metadata is always (nothing is decoded then).
    """
    if type(metadata_json) is bytes:
        data = metadata_json
        if data == b"{}":  # most of a kernel's messages
            return _SEQ_ONLY % seq
    else:
        data = metadata_json.encode() if isinstance(metadata_json, str) else bytes(metadata_json)
    text = data.strip()
    if _SEQ_FIELD not in text and text[:1] == b"{" and text[-1:] == b"}":
        inner = text[1:-1].strip()
        return b"{%s:%d%s}" % (_SEQ_FIELD, seq, b"," + inner if inner else b"")
    value = json.loads(data)
    if not isinstance(value, dict):
        value = {}
    value[SEQ_KEY] = seq
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()

"""
A request's outputs in nbformat's form (what a notebook stores and jupyter-server-nbmodel answers), folded
from the kernel's iopub messages: ``stream`` (consecutive texts of one stream joined), ``display_data``,
``execute_result``, ``error``; ``clear_output`` (with ``wait``: at the next output) and
``update_display_data`` (by ``transient.display_id``) change what is kept.
"""

from __future__ import annotations

from typing import Any, Final

#: The iopub messages that make or change a cell's outputs.
OUTPUT_TYPES: Final = frozenset(
    {"stream", "display_data", "execute_result", "error", "clear_output", "update_display_data"}
)


def nbformat_output(msg_type: str, content: dict[str, Any]) -> dict[str, Any]:
    """One output as nbformat writes it (``nbformat.v4.output_from_msg``'s fields)."""
    if msg_type == "stream":
        return {
            "output_type": "stream",
            "name": str(content.get("name", "stdout")),
            "text": str(content.get("text", "")),
        }
    if msg_type == "error":
        return {
            "output_type": "error",
            "ename": str(content.get("ename", "")),
            "evalue": str(content.get("evalue", "")),
            "traceback": list(content.get("traceback") or []),
        }
    output: dict[str, Any] = {
        "output_type": msg_type,
        "data": dict(content.get("data") or {}),
        "metadata": dict(content.get("metadata") or {}),
    }
    if msg_type == "execute_result":
        output["execution_count"] = content.get("execution_count")
    return output


def _display_id(content: dict[str, Any]) -> str | None:
    transient = content.get("transient")
    display_id = transient.get("display_id") if isinstance(transient, dict) else None
    return display_id if isinstance(display_id, str) else None


class Outputs:
    """The outputs kept of one request, their bytes (as the kernel sent them), and how many were dropped."""

    __slots__ = (
        "_clear_pending",
        "_display_ids",
        "_outputs",
        "_sizes",
        "_texts",
        "dropped",
        "size",
    )

    def __init__(self) -> None:
        self._outputs: list[dict[str, Any]] = []
        self._texts: list[list[str]] = []
        """Each stream output's pieces, joined only when read (a flood of lines is not copied again each time)."""
        self._sizes: list[int] = []
        self._display_ids: list[str | None] = []
        self._clear_pending = False
        self.size = 0
        self.dropped = 0
        """How many outputs are no longer kept (the ledger's byte bound, or over the message size limit)."""

    def add(self, msg_type: str, content: dict[str, Any], size: int) -> None:
        """Fold one iopub message of the request into its outputs."""
        if msg_type == "clear_output":
            if content.get("wait"):
                self._clear_pending = True
            else:
                self._clear()
            return
        if msg_type == "update_display_data":
            self._update(content, size)
            return
        if self._clear_pending:
            self._clear()
        last = self._outputs[-1] if self._outputs else None
        if (
            msg_type == "stream"
            and last is not None
            and last["output_type"] == "stream"
            and last["name"] == content.get("name", "stdout")
        ):
            self._texts[-1].append(str(content.get("text", "")))  # the hot path of a printing loop
            self._sizes[-1] += size
        else:
            output = nbformat_output(msg_type, content)
            self._outputs.append(output)
            self._texts.append([output.pop("text")] if msg_type == "stream" else [])
            self._sizes.append(size)
            self._display_ids.append(_display_id(content))
        self.size += size

    @property
    def items(self) -> list[dict[str, Any]]:
        """The outputs kept, in nbformat's form (a new list: a reader may keep it)."""
        return [
            {**output, "text": "".join(texts)} if output["output_type"] == "stream" else output
            for output, texts in zip(self._outputs, self._texts, strict=True)
        ]

    def drop_until(self, target: int) -> int:
        """Drop the oldest outputs until at most ``target`` bytes are kept; the bytes freed."""
        freed = 0
        while self._outputs and self.size - freed > max(target, 0):
            freed += self._sizes.pop(0)
            self._outputs.pop(0)
            self._texts.pop(0)
            self._display_ids.pop(0)
            self.dropped += 1
        self.size -= freed
        return freed

    @property
    def has_error(self) -> bool:
        """Whether an ``error`` output is kept (a request's status when its reply was not seen)."""
        return any(output["output_type"] == "error" for output in self._outputs)

    def __len__(self) -> int:
        return len(self._outputs)

    def _clear(self) -> None:
        self._outputs.clear()
        self._texts.clear()
        self._sizes.clear()
        self._display_ids.clear()
        self.size = 0
        self._clear_pending = False

    def _update(self, content: dict[str, Any], size: int) -> None:
        display_id = _display_id(content)
        for index, known in enumerate(self._display_ids):
            if display_id is not None and known == display_id:
                self._outputs[index]["data"] = dict(content.get("data") or {})
                self._outputs[index]["metadata"] = dict(content.get("metadata") or {})
                self.size += size - self._sizes[index]
                self._sizes[index] = size

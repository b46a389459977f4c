"""
Binary attachments of socket.io packets: binary values inside a payload are swapped for
``{"_placeholder":true,"num":i}`` objects on the way out (:func:`deconstruct`) and put back in place on
the way in (:func:`reconstruct`, strict: every message comes from an untrusted peer).

Apart from :mod:`.packet` because these walks are the payload's business, not the packet grammar's.
"""

from __future__ import annotations

from typing import Any

from ..engineio import Binary
from ..jsontext import RawJSON
from .errors import PacketError

#: Values that JSON writes without recursion and that are never binary.
_SCALARS = frozenset({str, int, float, bool, type(None)})


def deconstruct(data: Any) -> tuple[Any, list[Binary]]:
    """
    Replace each binary value in ``data`` by a placeholder; return the new payload and attachments.

    Containers without binary values inside are returned as they are (no copy), so the common case
    of a plain JSON payload costs one walk and no allocation.
    """
    result, attachments, _ = deconstruct_payload(data)
    return result, attachments


def deconstruct_payload(data: Any) -> tuple[Any, list[Binary], bool]:
    """:func:`deconstruct`, also telling whether a :class:`RawJSON` value is inside."""
    if type(data) is list:
        # An event's arguments are mostly plain values and RawJSON: one look at each, no walk.
        raw = False
        for item in data:
            kind = type(item)
            if kind is RawJSON:
                raw = True
            elif kind not in _SCALARS:
                break
        else:
            return data, [], raw
    walker = _Deconstruction()
    return walker.walk(data), walker.attachments, walker.raw


class _Deconstruction:
    """
    One walk of :func:`deconstruct_payload`. A class rather than a closure that calls itself: such a
    closure is a reference cycle, which keeps the attachments (a kernel's 10 MB buffer among them)
    alive until the cyclic garbage collector happens to run.
    """

    __slots__ = ("attachments", "raw")

    def __init__(self) -> None:
        self.attachments: list[Binary] = []
        self.raw = False

    def walk(self, value: Any) -> Any:
        kind = type(value)
        if kind is RawJSON:
            self.raw = True
            return value
        if kind in _SCALARS:
            return value
        if isinstance(value, str):
            if isinstance(value, RawJSON):
                self.raw = True
            return value
        if isinstance(value, (bytes, bytearray, memoryview)):
            # A memoryview (a kernel's large buffer) goes out as it is: no copy.
            attachments = self.attachments
            attachments.append(bytes(value) if isinstance(value, bytearray) else value)
            return {"_placeholder": True, "num": len(attachments) - 1}
        if isinstance(value, (list, tuple)):
            copy: list[Any] | None = None
            for index, item in enumerate(value):
                replaced = self.walk(item)
                if replaced is not item:
                    if copy is None:
                        copy = list(value)
                    copy[index] = replaced
            return value if copy is None else copy
        if isinstance(value, dict):
            changed: dict[Any, Any] | None = None
            for key, item in value.items():
                if type(item) is RawJSON:
                    self.raw = True
                    continue
                replaced = self.walk(item)
                if replaced is not item:
                    if changed is None:
                        changed = dict(value)
                    changed[key] = replaced
            return value if changed is None else changed
        return value


def reconstruct(data: Any, attachments: list[bytes]) -> Any:
    """
    Put ``attachments`` back where their placeholders are; every attachment must be referenced.

    Raises :class:`PacketError` for a placeholder whose ``num`` is not an index of ``attachments``
    and for attachments no placeholder refers to.
    """
    walker = _Reconstruction(attachments)
    result = walker.walk(data)
    if not all(walker.used):
        raise PacketError("an attachment is not referenced by any placeholder")
    return result


class _Reconstruction:
    """One walk of :func:`reconstruct` (a class for the reason given at :class:`_Deconstruction`)."""

    __slots__ = ("attachments", "used")

    def __init__(self, attachments: list[bytes]) -> None:
        self.attachments = attachments
        self.used = [False] * len(attachments)

    def walk(self, value: Any) -> Any:
        if isinstance(value, list):
            for index, item in enumerate(value):
                if isinstance(item, (list, dict)):
                    value[index] = self.walk(item)
            return value
        if isinstance(value, dict):
            if value.get("_placeholder") is True:
                num = value.get("num")
                if type(num) is not int or not 0 <= num < len(self.attachments):
                    raise PacketError(f"placeholder refers to no attachment: {num!r}")
                self.used[num] = True
                return self.attachments[num]
            for key, item in value.items():
                if isinstance(item, (list, dict)):
                    value[key] = self.walk(item)
            return value
        return value

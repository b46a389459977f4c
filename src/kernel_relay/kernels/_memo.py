"""
:class:`PartMemo`: JSON parts the relay has already checked and parsed, by their bytes, for parts that come
again and again. A request's reply and its ``busy`` and ``idle`` statuses carry the same parent header
(the request's own header, as the kernel wrote it): parsed once, not three times.

Pure and bounded: the result depends only on the bytes (a part is the same object whichever kernel sent it,
and the kernel's signature was checked before), small parts only, a few dozen of them. Every layer reads a
message's parsed parts and never changes them, so one dict serves every message that carries those bytes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

#: Parts longer than this are parsed each time (a parent header is a few hundred bytes).
MAX_PART_BYTES: Final = 2048
MAX_ENTRIES: Final = 64


class PartMemo:
    """Parses a part with ``parse`` (which raises for one that is not a JSON object) once per distinct bytes."""

    def __init__(self, parse: Callable[[str], dict[str, Any]]) -> None:
        self._parse = parse
        self._parsed: dict[bytes, dict[str, Any]] = {}

    def parse(self, raw: bytes | memoryview, text: str) -> dict[str, Any]:
        """``text`` (the part ``raw`` decoded) parsed, or what the same bytes parsed to before."""
        if type(raw) is not bytes or len(raw) > MAX_PART_BYTES:
            return self._parse(text)
        parsed = self._parsed.get(raw)
        if parsed is None:
            parsed = self._parse(text)  # a part that is no object raises, and is not kept
            if len(self._parsed) >= MAX_ENTRIES:
                self._parsed.clear()
            self._parsed[raw] = parsed
        return parsed

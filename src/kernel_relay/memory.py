"""
Giving freed memory back to the system once clients' buffers are let go.

A client's backlog is made of many blocks of a few hundred KiB (a turn's frames, joined for one write). Once
freed, glibc's allocator keeps most of them for later (only the top of its heaps is returned, and the blocks
of its other threads' arenas not at all): a hundred closed replays left ~20 MiB resident for good. After a
large release the relay asks the allocator to return what it holds free (``malloc_trim``), at most once a
second; where there is no glibc this does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Callable
from typing import Final

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

log = Logger()

#: Released bytes that are worth asking the allocator to give back.
WORTH_TRIMMING: Final = 8 * 1024 * 1024
#: Seconds between two trims, at least (one walks every heap of the allocator).
TRIM_INTERVAL: Final = 1.0


def _malloc_trim() -> Callable[[], object] | None:
    """glibc's ``malloc_trim(0)``, or None where there is no such function."""
    name = ctypes.util.find_library("c")
    try:
        trim = ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):
        return None
    if trim is None:
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return lambda: trim(0)


class MemoryGiveBack:
    """Told how many bytes of client buffers were let go; trims the allocator once enough were."""

    def __init__(self, clock: IReactorTime, trim: Callable[[], object] | None = None) -> None:
        self._clock = clock
        self._trim = trim if trim is not None else _malloc_trim()
        self._released = 0
        self._call: IDelayedCall | None = None

    def released(self, size: int) -> None:
        """``size`` bytes held for clients were let go (a connection closed, or was shed)."""
        if self._trim is None:
            return
        self._released += size
        if self._released >= WORTH_TRIMMING and self._call is None:
            self._call = self._clock.callLater(TRIM_INTERVAL, self._give_back)

    def _give_back(self) -> None:
        self._call = None
        self._released = 0
        assert self._trim is not None
        try:
            self._trim()
        except Exception:
            log.failure("giving freed memory back to the system failed")
            self._trim = None

    def stop(self) -> None:
        """Cancel a pending trim (the relay stops)."""
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None

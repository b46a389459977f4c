# -*- test-case-name: tests.fleet.test_numbering -*-
"""
One ``relay_seq`` for the whole fleet: every relay subscribes to every fleet kernel's iopub and submits each
message to Redis, which numbers it once (by its ``msg_id``, however many relays submit it) and keeps it in the
kernel's stream. So a message has the same number on every relay, and a client may resume anywhere.

Numbers reach the core in the order messages came from the kernel, per kernel, whatever the order of Redis's
answers. While Redis cannot be reached, a relay numbers on by itself from the last number it gave (its own
clients see no gap and no repeat); once Redis is back it first moves the fleet's numbering past its own, so no
number is ever given twice by this relay. Messages numbered that way are not in the fleet's stream: a client
that resumes on another relay across them is told of a gap.
"""

from __future__ import annotations

import struct
from collections import deque
from collections.abc import Callable
from typing import Final

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from ..relay.payload import Outgoing
from .store import FleetStore

log = Logger()

#: How long Redis remembers a msg_id it numbered: relays receive one message within milliseconds of each
#: other, so this only needs to outlast the slowest relay's lag.
REMEMBER_SECONDS: Final = 30
_MAGIC: Final = b"KR1"
#: The most numbering calls a relay has unanswered at once (see ``SharedNumbering._send``).
MAX_IN_FLIGHT: Final = 64


def stream_length(replay_bytes: int) -> int:
    """About how many messages each kernel's stream keeps: ``--iopub-replay-bytes`` worth of small ones."""
    return max(100, min(100_000, replay_bytes // 512))


def pack(message: Outgoing) -> bytes:
    """The message's four JSON parts and buffers, for the fleet's stream (length-prefixed, nothing decoded)."""
    pieces = [bytes(part) for part in message.parts] + [bytes(buffer) for buffer in message.buffers]
    head = struct.pack(f"!{len(_MAGIC)}sH{len(pieces)}I", _MAGIC, len(pieces), *map(len, pieces))
    return head + b"".join(pieces)


def unpack(data: bytes, channel: str = "iopub") -> Outgoing:
    """The message ``pack`` made; ValueError if ``data`` is not one."""
    magic, count = struct.unpack_from(f"!{len(_MAGIC)}sH", data)
    if magic != _MAGIC or count < 4:
        raise ValueError("not a packed message")
    offset = len(_MAGIC) + 2
    lengths = struct.unpack_from(f"!{count}I", data, offset)
    offset += 4 * count
    pieces = []
    for length in lengths:
        pieces.append(data[offset : offset + length])
        offset += length
    if offset != len(data):
        raise ValueError("a packed message of the wrong length")
    parts = (pieces[0], pieces[1], pieces[2], pieces[3])
    return Outgoing(parts, pieces[4:], channel)


Ready = Callable[[int], None]


class _Pending:
    __slots__ = ("failed", "ready", "seq")

    def __init__(self, ready: Ready) -> None:
        self.ready = ready
        self.seq: int | None = None
        self.failed = False


class SharedNumbering:
    """Numbers iopub messages through Redis, handing each number to its ``ready`` in the kernel's order."""

    def __init__(self, store: FleetStore, clock: IReactorTime, *, keep: int) -> None:
        self._store = store
        self._clock = clock
        self.keep = keep
        """How many messages each kernel's stream keeps (about)."""
        self._queues: dict[str, deque[_Pending]] = {}
        self._last: dict[str, int] = {}
        self._diverged: set[str] = set()
        self._unsent: deque[tuple[str, str, bytes, float, _Pending]] = deque()
        self._sending = False
        self.in_flight = 0
        """Numbering calls sent and not answered yet."""
        self.local_numbers = 0
        """Numbers given out by this relay alone, while Redis was away (a metric)."""

    def number(self, kernel_id: str, msg_id: str, message: Outgoing, ready: Ready) -> None:
        """Number a kernel's message; ``ready`` gets its ``relay_seq``, after every earlier one's."""
        pending = _Pending(ready)
        self._queues.setdefault(kernel_id, deque()).append(pending)
        if kernel_id in self._diverged and self._store.up:
            self._diverged.discard(kernel_id)
            last = self._last.get(kernel_id, 0)
            self._store.bump(kernel_id, last).addErrback(lambda f: self._diverged.add(kernel_id))
            log.info(
                "Redis is back: the fleet's numbering of kernel {kernel} goes on after {last}",
                kernel=kernel_id,
                last=last,
            )
        self._unsent.append((kernel_id, msg_id, pack(message), self._clock.seconds(), pending))
        self._send()

    def _send(self) -> None:
        """
        Send what waits, keeping at most :data:`MAX_IN_FLIGHT` calls unanswered: under a flood the relay's
        delivery of each answer (to every client) paces the calls, so that none waits behind thousands of
        others long enough to time out while Redis is well.
        """
        if self._sending:
            return
        self._sending = True
        try:
            while self._unsent and self.in_flight < MAX_IN_FLIGHT:
                kernel_id, msg_id, payload, when, pending = self._unsent.popleft()
                self.in_flight += 1
                d = self._store.number(
                    kernel_id, msg_id, payload, when, self.keep, REMEMBER_SECONDS
                )
                d.addCallbacks(
                    self._answered,
                    lambda failure, k=kernel_id, p=pending: self._answered(None, k, p),
                    callbackArgs=(kernel_id, pending),
                )
        finally:
            self._sending = False

    def _answered(self, seq: int | None, kernel_id: str, pending: _Pending) -> None:
        self.in_flight -= 1
        self._settle(kernel_id, pending, seq)
        self._send()

    def after(self, kernel_id: str, ready: Ready) -> None:
        """
        ``ready`` gets the kernel's latest number once every message before is numbered: for what the relay
        says itself (a status), which takes no number of its own, so that no relay's stream has a hole.
        """
        queue = self._queues.get(kernel_id)
        if not queue:
            ready(self._last.get(kernel_id, 0))
            return
        pending = _Pending(ready)
        pending.seq = 0
        queue.append(pending)

    def fetch(self, kernel_id: str, since: int) -> Deferred[list[tuple[int, float, Outgoing]]]:
        """The messages the fleet's stream keeps after ``since``, oldest first (for a client that resumes)."""

        def unpacked(entries: list[tuple[int, float, bytes]]) -> list[tuple[int, float, Outgoing]]:
            found = []
            for seq, when, data in entries:
                try:
                    found.append((seq, when, unpack(data)))
                except (ValueError, struct.error):
                    log.warn(
                        "kernel {kernel}'s stream holds a message that is not one", kernel=kernel_id
                    )
            return found

        return self._store.stream_since(kernel_id, since).addCallback(unpacked)

    def forget(self, kernel_id: str) -> None:
        self._queues.pop(kernel_id, None)
        self._last.pop(kernel_id, None)
        self._diverged.discard(kernel_id)

    def _settle(self, kernel_id: str, pending: _Pending, seq: int | None) -> None:
        if seq is None:
            pending.failed = True
        else:
            pending.seq = seq
        queue = self._queues.get(kernel_id)
        while queue and (queue[0].seq is not None or queue[0].failed):
            head = queue.popleft()
            last = self._last.get(kernel_id, 0)
            if head.failed or (head.seq is not None and 0 < head.seq <= last):
                # Redis is away (or numbered behind what this relay gave alone): number on locally.
                number = last + 1
                if kernel_id not in self._diverged:
                    log.warn(
                        "Numbering kernel {kernel}'s output on this relay alone from {number}: Redis cannot "
                        "be reached",
                        kernel=kernel_id,
                        number=number,
                    )
                self._diverged.add(kernel_id)
                self.local_numbers += 1
            elif head.seq == 0:
                number = last  # a relay-made message: the latest number, none of its own
            else:
                assert head.seq is not None
                number = head.seq
            self._last[kernel_id] = max(last, number)
            try:
                head.ready(number)
            except Exception:
                log.failure(
                    "delivering a numbered message of kernel {kernel} failed", kernel=kernel_id
                )
        if queue is not None and not queue:
            self._queues.pop(kernel_id, None)


__all__ = ["SharedNumbering", "pack", "stream_length", "unpack"]

# -*- test-case-name: tests.fleet.test_numbering -*-
"""
One ``relay_seq`` for the whole fleet: every relay subscribes to every fleet kernel's iopub and submits each
message to Redis, which numbers it once (by its ``msg_id``, however many relays submit it) and keeps it in the
kernel's stream. So a message has the same number on every relay, and a client may resume anywhere.

Numbers reach the core in the order messages came from the kernel, per kernel, whatever the order of Redis's
answers; each kernel has its own queue and its own few calls in flight, so one kernel's flood never holds
another kernel's messages back.

**One number per message, one message per number.** Redis numbers densely, one past its count, in the
kernel's order (a submission names the message before it that the relay has not seen numbered, and waits
for it), and remembers the ``msg_id`` of every message its stream keeps. So a message's number is one past
its predecessor's, whoever gives it. Each submission carries the relay's last number when the message came,
and Redis keeps a *floor*, at or above which it knows every message numbered (it moves up as the stream
trims, and past numbers Redis never saw: lost in a restart, or given alone and not registered): a submitter
whose last number is below it may be late for one of those, and is refused (``TOO_LATE``, a gap for its
clients) rather than given a second number. When Redis lost a kernel's numbering, only the kernel's owner
starts it again (from past its own last number); other relays wait for it (a few seconds at most). A relay
with no number yet for a running kernel (it just started) has no predecessor to name: its first message
waits (:data:`HISTORY_WAIT` at most) for a relay with history (the owner, or one with a number) to number
it after the messages they saw before it; only then does Redis number it past its count.

While Redis cannot be reached (or is out of memory, or will not number a message in time) a relay numbers on
by itself from its last number, as the fleet would (its clients see no gap and no repeat). As soon as Redis
can be written it *registers* those numbers (each ``msg_id`` with its number, before any later submission):
other relays that submit those messages get the same numbers, and the fleet's count moves past them. A
failure while Redis is connected is asked again, not numbered alone. Numbers given alone agree with the
fleet's as long as the relay had every message of the kernel (numbers are dense and in its order, whoever
gives them); a relay that missed one may have given a number the fleet gives another message: the fleet's
answer at or below a number this relay gave is then a gap for its clients (said once), not a second number.
Whether Redis's numbering is away or behind is said once per kernel, until the fleet numbers its output again.
"""

from __future__ import annotations

import struct
from collections import deque
from collections.abc import Callable
from itertools import count
from typing import Final, cast

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from ..relay.numbering import Fetched
from ..relay.payload import Outgoing
from .alone import AloneNumbers
from .store import FleetStore

log = Logger()

_MAGIC: Final = b"KR1"
#: The most numbering calls a relay has unanswered at once for one kernel (see ``SharedNumbering._send``).
MAX_IN_FLIGHT: Final = 64
#: What Redis answers for a message it will not number: the relay knew too little (its stream has moved past
#: what the relay had seen), or only the kernel's owner may start its numbering again.
TOO_LATE: Final = -1
OWNER_FIRST: Final = -2
#: What Redis answers for a message whose predecessor (from this relay) it has not numbered yet.
PREVIOUS_FIRST: Final = -3
#: What Redis answers for a relay's first message of a running kernel (it has no number yet, and does not
#: own the kernel): a relay with history numbers it first, or the relay asks again with ``waited``.
HISTORY_FIRST: Final = -4
#: How long a relay waits for a kernel's owner to start its numbering again (or for Redis to number a message
#: it failed to while connected), and how often it asks.
OWNER_WAIT: Final = 10.0
OWNER_RETRY: Final = 0.2
#: How long a relay's first message of a running kernel waits for a relay with history to number it: less
#: than its followers wait for it (``PREVIOUS_FIRST``), so that they follow it rather than go alone.
HISTORY_WAIT: Final = OWNER_WAIT / 2


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


Ready = Callable[[int | None], None]
"""Gets a message's number, or None: the fleet numbered it, too long ago for this relay to know how."""


class _Pending:
    __slots__ = (
        "after",
        "before",
        "done",
        "failed",
        "index",
        "late",
        "msg_id",
        "payload",
        "ready",
        "seq",
        "waited",
        "when",
    )

    def __init__(
        self, ready: Ready, msg_id: str = "", payload: bytes = b"", when: float = 0, index: int = 0
    ) -> None:
        self.ready = ready
        self.msg_id = msg_id
        self.payload = payload
        self.when = when
        self.index = index
        self.before: _Pending | None = None
        """The kernel's message before it in this relay's queue (until this one is delivered)."""
        self.done = False
        """Delivered: numbered (or told as a gap) and handed on."""
        self.after = -1
        """The relay's last number for the kernel when the message came (-1: none yet)."""
        self.seq: int | None = None
        self.failed = ""
        """Why the fleet did not number it (Redis away, out of memory, no owner to start it again): numbered
        by this relay alone."""
        self.late = False
        self.waited = False
        """Its first submission waited :data:`HISTORY_WAIT` for a relay with history: Redis may number it."""


class SharedNumbering:
    """Numbers iopub messages through Redis, handing each number to its ``ready`` in the kernel's order."""

    def __init__(
        self,
        store: FleetStore,
        clock: IReactorTime,
        *,
        keep: int,
        keep_bytes: int = 1 << 62,
        keep_seconds: float = 1e12,
        owns: Callable[[str], bool] = lambda kernel_id: True,
    ) -> None:
        self._store = store
        self._clock = clock
        self.keep = keep
        """How many messages each kernel's stream keeps (at most), as well as ``keep_bytes`` and
        ``keep_seconds`` worth (``--iopub-replay-bytes/-age``, as the relay's own journal)."""
        self.keep_bytes = keep_bytes
        self.keep_seconds = keep_seconds
        self._owns = owns
        self._queues: dict[str, deque[_Pending]] = {}
        self._last: dict[str, int] = {}
        self._alone = AloneNumbers(store, clock, self._last.get, owns, self._send)
        self._apart: set[str] = set()
        """Kernels whose numbers are this relay's own, or a gap, for now (said once, until the fleet's again)."""
        self._unsent: dict[str, deque[_Pending]] = {}
        self._held: dict[str, list[_Pending]] = {}
        """Messages asked again shortly (after their predecessor, or the owner): the kernel's sending waits."""
        self._order = count()
        self._flying: dict[str, int] = {}
        self._sending = False
        self.in_flight = 0
        """Numbering calls sent and not answered yet."""
        self.local_numbers = 0
        """Numbers given out by this relay alone, while Redis was away (a metric)."""
        self.too_late = 0
        """Messages the fleet numbered too long before this relay submitted them, or below the numbers this
        relay gave alone (a metric): their clients are told of a gap."""

    def number(self, kernel_id: str, msg_id: str, message: Outgoing, ready: Ready) -> None:
        """Number a kernel's message; ``ready`` gets its ``relay_seq``, after every earlier one's."""
        pending = _Pending(ready, msg_id, pack(message), self._clock.seconds(), next(self._order))
        queue = self._queues.setdefault(kernel_id, deque())
        pending.after = self._last.get(kernel_id, -1)
        if queue:
            # Numbers given before it that this relay has not had yet: the last one it will have had.
            pending.after = max(pending.after, self._expected(queue))
            newest = queue[-1]
            pending.before = newest if newest.msg_id else newest.before
        queue.append(pending)
        self._unsent.setdefault(kernel_id, deque()).append(pending)
        self._send()

    def _expected(self, queue: deque[_Pending]) -> int:
        """What ``after`` the newest message of ``queue`` gives the next one: its own, when it has none yet."""
        newest = queue[-1]
        return newest.seq if newest.seq else newest.after

    def _send(self) -> None:
        """
        Send what waits, keeping at most :data:`MAX_IN_FLIGHT` calls unanswered per kernel: under a flood
        the relay's delivery of each answer (to every client) paces the calls, so that none waits behind
        thousands of others long enough to time out while Redis is well, and each kernel's calls go out
        beside the flooding one's, never behind its backlog.
        """
        if self._sending:
            return
        self._sending = True
        try:
            for kernel_id in list(self._unsent):
                unsent = self._unsent[kernel_id]
                self._alone.catch_up(kernel_id)  # what it gave alone, before its next submission
                while unsent and self._may_send(kernel_id, unsent[0]):
                    self._submit(kernel_id, unsent.popleft())
                if not unsent:
                    del self._unsent[kernel_id]
        finally:
            self._sending = False

    def _may_send(self, kernel_id: str, pending: _Pending) -> bool:
        """
        Not while messages wait to be asked again, nor while its numbers given alone are registered; one
        at a time while Redis refuses writes (each would wait for its predecessor, numbered alone).
        """
        if kernel_id in self._held or self._alone.sending(kernel_id):
            return False
        if self._store.full and pending.before is not None and not pending.before.done:
            return False
        return self._flying.get(kernel_id, 0) < MAX_IN_FLIGHT

    def _submit(self, kernel_id: str, pending: _Pending) -> None:
        before, after = pending.before, pending.after
        if before is None or before.done:
            # Every message before it is delivered: the relay's last number is its predecessor's.
            after, before = max(after, self._last.get(kernel_id, -1)), None
        self.in_flight += 1
        self._flying[kernel_id] = self._flying.get(kernel_id, 0) + 1
        d = self._store.number(
            kernel_id,
            pending.msg_id,
            pending.payload,
            pending.when,
            self.keep,
            self.keep_bytes,
            self.keep_seconds,
            after,
            self._owns(kernel_id),
            "" if before is None else before.msg_id,
            pending.waited,
        )
        d.addCallbacks(
            self._answered,
            lambda failure, k=kernel_id, p=pending: self._answered(None, k, p, failure.value),
            callbackArgs=(kernel_id, pending),
        )

    def _answered(
        self, seq: int | None, kernel_id: str, pending: _Pending, error: object = None
    ) -> None:
        self.in_flight -= 1
        flying = self._flying.get(kernel_id, 1) - 1
        if flying:
            self._flying[kernel_id] = flying
        else:
            self._flying.pop(kernel_id, None)
        # Asked again, in order: Redis lost the kernel's numbering (its owner starts it again), or has not
        # numbered the message before it yet, or waits for a relay with history to number this relay's first
        # message (after the wait: past its count, never by this relay alone from 0), or failed while
        # connected (numbering alone could then give it a number the fleet gives another message).
        again = seq in (OWNER_FIRST, PREVIOUS_FIRST, HISTORY_FIRST) or (
            seq is None and self._store.up and not self._store.full
        )
        waited = self._clock.seconds() - pending.when
        pending.waited = pending.waited or (seq == HISTORY_FIRST and waited >= HISTORY_WAIT)
        if again and (waited < OWNER_WAIT or seq == HISTORY_FIRST):
            held = self._held.setdefault(kernel_id, [])
            if not held:
                self._clock.callLater(OWNER_RETRY, self._resume, kernel_id)
            held.append(pending)
        else:
            if seq == TOO_LATE:
                pending.late = True
            elif seq is None or seq < 0:
                pending.failed = self._why(seq, error)
            self._settle(kernel_id, pending, None if seq is None or seq < 0 else seq)
        self._send()

    def _why(self, seq: int | None, error: object) -> str:
        """Why Redis did not number a message, for the log."""
        if seq == OWNER_FIRST:
            return "lost the kernel's numbering, and its owner has not started it again"
        if seq == PREVIOUS_FIRST:
            return "did not number the message before it in time"
        if self._store.full:
            return "is out of memory"
        return "cannot be reached" if not self._store.up else f"failed ({error})"

    def _resume(self, kernel_id: str) -> None:
        """Send the messages held back again, before the kernel's others and in its order."""
        held = self._held.pop(kernel_id, [])
        if kernel_id in self._queues:
            held.sort(key=lambda pending: pending.index)
            self._unsent.setdefault(kernel_id, deque()).extendleft(reversed(held))
        self._send()

    def after(self, kernel_id: str, ready: Callable[[int], None]) -> None:
        """
        ``ready`` gets the kernel's latest number once every message before is numbered: for what the relay
        says itself (a status), which takes no number of its own, so that no relay's stream has a hole.
        """
        queue = self._queues.get(kernel_id)
        if not queue:
            ready(self._last.get(kernel_id, 0))
            return
        pending = _Pending(cast(Ready, ready))  # never None: it takes the latest number
        pending.seq = 0
        pending.after = self._expected(queue)
        queue.append(pending)

    def fetch(
        self, kernel_id: str, since: int, until: int | None = None, count: int | None = None
    ) -> Deferred[Fetched]:
        """
        The messages the fleet's stream keeps after ``since`` (up to ``until``, at most ``count``, if given),
        oldest first; None for one that cannot be read (forged, or not a message), which is told as missed.
        """

        def unpacked(entries: list[tuple[int, float, bytes | None]]) -> Fetched:
            found: Fetched = []
            for seq, when, data in entries:
                message = None
                try:
                    message = None if data is None else unpack(data)
                except (ValueError, struct.error):
                    log.warn(
                        "kernel {kernel}'s stream holds a message that is not one", kernel=kernel_id
                    )
                found.append((seq, when, message))
            return found

        return self._store.stream_since(kernel_id, since, until, count).addCallback(unpacked)

    def forget(self, kernel_id: str) -> None:
        self._queues.pop(kernel_id, None)
        self._unsent.pop(kernel_id, None)
        self._held.pop(kernel_id, None)
        self._alone.forget(kernel_id)
        self._last.pop(kernel_id, None)
        self._apart.discard(kernel_id)

    def _settle(self, kernel_id: str, pending: _Pending, seq: int | None) -> None:
        if seq is not None:
            pending.seq = seq
        queue = self._queues.get(kernel_id)
        while queue and (queue[0].seq is not None or queue[0].failed or queue[0].late):
            head = queue.popleft()
            head.before, head.done = None, True
            last = self._last.get(kernel_id, 0)
            if head.late or (head.seq is not None and 0 < head.seq <= last):
                self._gap(kernel_id, head, last)
                continue
            if head.failed:
                # Redis did not number it: number on locally, and move the fleet past it once Redis can.
                number = last + 1
                self._part(
                    kernel_id,
                    "Numbering kernel {kernel}'s output on this relay alone from "
                    "{number}: Redis {why}",
                    number=number,
                    why=head.failed,
                )
                self._alone.gave(kernel_id, head.msg_id, number)
                self.local_numbers += 1
            elif head.seq == 0:
                number = last  # a relay-made message: the latest number, none of its own
            else:
                assert head.seq is not None
                number = head.seq
                if kernel_id in self._apart:
                    self._apart.discard(kernel_id)
                    log.info(
                        "Kernel {kernel}'s output is numbered by the fleet again from {number}",
                        kernel=kernel_id,
                        number=number,
                    )
            self._last[kernel_id] = max(last, number)
            self._deliver(kernel_id, head, number)
        if queue is not None and not queue:
            self._queues.pop(kernel_id, None)
        self._alone.catch_up(kernel_id)

    def _gap(self, kernel_id: str, head: _Pending, last: int) -> None:
        """
        A message the fleet numbered where this relay cannot place it without a second number: too long ago
        (refused), or at or below a number this relay gave alone (Redis restarted, this relay was frozen, or
        numbered alone for a while). Its clients are told of a gap; the fleet is moved past this relay's own.
        """
        self.too_late += 1
        if head.late:
            self._part(
                kernel_id,
                "A message of kernel {kernel} came to this relay after the fleet's stream had moved past "
                "it: its clients are told of a gap (for each such message)",
            )
        elif self._part(
            kernel_id,
            "The fleet numbered a message of kernel {kernel} {seq}, not past the "
            "{last} this relay gave alone: its clients are told of a gap until the fleet's "
            "numbering has moved past",
            seq=head.seq,
            last=last,
        ):
            self._alone.ahead(kernel_id)
        self._deliver(kernel_id, head, None)

    def _part(self, kernel_id: str, text: str, **fields: object) -> bool:
        """Say once (until the fleet numbers this kernel's output again) that its numbers are not the fleet's."""
        if kernel_id in self._apart:
            return False
        self._apart.add(kernel_id)
        log.warn(text, kernel=kernel_id, **fields)
        return True

    def _deliver(self, kernel_id: str, head: _Pending, number: int | None) -> None:
        try:
            head.ready(number)
        except Exception:
            log.failure("delivering a numbered message of kernel {kernel} failed", kernel=kernel_id)


__all__ = [
    "HISTORY_FIRST",
    "HISTORY_WAIT",
    "OWNER_FIRST",
    "TOO_LATE",
    "SharedNumbering",
    "pack",
    "stream_length",
    "unpack",
]

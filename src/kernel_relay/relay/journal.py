"""
Resumable iopub: every iopub message a kernel's clients receive carries a sequence number, and recent ones
are kept so a client that reconnects gets exactly what it missed.

- Numbers are per kernel and per relay process (or per fleet, see :mod:`.numbering`), from 1, in
  ``metadata.relay_seq``: a plain client ignores an unknown metadata key, and the message keeps its form.
- :class:`IopubJournal` keeps the messages of one kernel, bounded by bytes and by age (a pure structure on
  an injected clock), as :class:`~.payload.Outgoing` parts: each front makes its own form only when it sends.
- :meth:`.payload.Outgoing.with_seq` writes the number into a message's metadata JSON
  (:func:`.payload.splice_seq`, once a front reads it): the metadata object is spliced, never re-encoded,
  and the content is never touched.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from itertools import islice
from typing import NamedTuple

from twisted.internet.interfaces import IReactorTime

from .events import ReplayAhead, ReplayExpired
from .payload import SEQ_KEY, Outgoing

__all__ = ["ENTRY_OVERHEAD", "SEQ_KEY", "Entry", "IopubJournal", "Replay", "Resume"]
#: What keeping one message costs beyond its JSON bytes (its part objects and entry), counted against
#: ``max_bytes`` so the bound is close to the memory really held. Measured with tracemalloc, a kernel's status
#: message of 236 bytes of JSON holds about 700 bytes kept: its four parts' bytes objects (368), and 335 for
#: the numbered metadata, the Outgoing and the entry.
ENTRY_OVERHEAD = 512


class Entry(NamedTuple):
    """One kept message (a tuple: one is made for every iopub message)."""

    seq: int
    time: float
    size: int
    msg_type: str
    message: Outgoing


@dataclass(frozen=True)
class Replay:
    """What a resuming client gets: the buffered messages after its sequence, and what could not be had."""

    messages: list[Outgoing]
    gap: ReplayAhead | ReplayExpired | None


class IopubJournal:
    """The recent iopub messages of one kernel, oldest first, within ``max_bytes`` and ``max_age`` seconds."""

    def __init__(self, clock: IReactorTime, *, max_bytes: int, max_age: float) -> None:
        self._clock = clock
        self.max_bytes = max_bytes
        self.max_age = max_age
        self._entries: deque[Entry] = deque()
        self._bytes = 0
        self.last_seq = 0
        self._complete_from = 1
        """Every number from this one to ``last_seq`` is kept or expired here (a fleet's relay may lack some)."""

    def __len__(self) -> int:
        self._expire()
        return len(self._entries)

    @property
    def first_seq(self) -> int:
        """The oldest sequence number still kept (``last_seq + 1`` when nothing is)."""
        self._expire()
        first = self._entries[0].seq if self._entries else self.last_seq + 1
        return max(first, self._complete_from)

    def record(
        self,
        message: Outgoing,
        size: int,
        msg_type: str,
        seq: int | None = None,
    ) -> Outgoing:
        """
        Number ``message`` (the next sequence, or ``seq`` as the fleet numbered it), keep it, and return the
        numbered message to send.
        """
        number = self.last_seq + 1 if seq is None else seq
        numbered = message.with_seq(number)
        if number != self.last_seq + 1:
            self._complete_from = number  # what came before it did not all come here
        self.last_seq = max(self.last_seq, number)
        size += ENTRY_OVERHEAD
        now = self._clock.seconds()
        self._entries.append(Entry(number, now, size, msg_type, numbered))
        self._bytes += size
        self._expire(now)
        return numbered

    def since(self, seq: int) -> Replay:
        """Every kept message after ``seq``; ``gap`` says what is missing, or why ``seq`` makes no sense."""
        self._expire()
        if seq > self.last_seq:
            return Replay([], ReplayAhead(seq, self.last_seq))
        gap = self.expired_after(seq)
        return Replay([entry.message for entry in self._entries if entry.seq > seq], gap)

    def expired_after(self, seq: int) -> ReplayExpired | None:
        """What is no longer kept of the messages after ``seq``, or None."""
        first = self.first_seq
        if seq + 1 >= first:
            return None
        return ReplayExpired(seq + 1, first - 1)

    def after(self, seq: int) -> Outgoing | None:
        """The oldest kept message numbered after ``seq`` (a replay's next), or None."""
        self._expire()
        entries = self._entries
        if not entries or entries[-1].seq <= seq:
            return None
        low, high = 0, len(entries) - 1
        guess = (
            seq + 1 - entries[0].seq
        )  # numbers are consecutive, except where a fleet's relay lacks some
        if 0 <= guess <= high and entries[guess].seq == seq + 1:
            return entries[guess].message
        while low < high:
            middle = (low + high) // 2
            if entries[middle].seq <= seq:
                low = middle + 1
            else:
                high = middle
        return entries[low].message

    def execution_start(self) -> int | None:
        """The number of the most recent kept ``execute_input`` (where the running cell began), or None."""
        self._expire()
        for entry in reversed(self._entries):
            if entry.msg_type == "execute_input":
                return entry.seq
        return None

    def current_execution(self) -> list[Outgoing]:
        """The kept messages from the most recent ``execute_input`` on: the running cell's output so far."""
        self._expire()
        start = None
        for index in range(len(self._entries) - 1, -1, -1):
            if self._entries[index].msg_type == "execute_input":
                start = index
                break
        if start is None:
            return []
        return [entry.message for entry in islice(self._entries, start, None)]

    def _expire(self, now: float | None = None) -> None:
        horizon = (self._clock.seconds() if now is None else now) - self.max_age
        entries = self._entries
        while entries and (self._bytes > self.max_bytes or entries[0].time < horizon):
            self._bytes -= entries.popleft().size


class Resume(NamedTuple):
    """
    What a joining iopub client asked for (each front reads it from its own protocol), and why any option it
    sent was not usable.
    """

    since: int | None
    execution: bool
    ignored: tuple[str, ...] = ()

"""
A replay streamed from a kernel's iopub journal: a cursor per replaying client, handed on as the client's
transport drains, so that a hundred clients resuming at once hold a window each, never a copy of the journal.

- :class:`ReplayStream` hands its client the journal's messages after its position while less than
  :data:`REPLAY_WINDOW` bytes wait to go out to it, then waits for the front to say the client drained
  (:meth:`RelayCore.drained <kernel_relay.relay.core.RelayCore.drained>`). Messages the kernel sends meanwhile
  are read from the journal in their turn, so the client gets everything once and in order, and goes live when
  it has caught up. What the journal dropped before the cursor reached it is told as a ``replay_gap``.
- Messages the journal does not keep (a fleet relay's own statuses) wait in the stream, after the number they
  carry; a fleet's older messages (read from its shared stream) are handed out before the journal's.

It speaks to the client only through the core's client interface (``deliver``, ``tell``, ``backlog``).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from typing import Final

from ..kernels import IOPUB
from .client import RelayClient
from .events import ReplayGap
from .journal import IopubJournal
from .payload import Outgoing

#: A replaying client is handed more of its replay while less than this waits to go out to it.
REPLAY_WINDOW: Final = 256 * 1024


class ReplayStream:
    """
    One client's replay of one kernel's iopub, from the message after ``position``: first ``older`` (numbered
    messages from elsewhere, oldest first), then the journal from where they end (from ``journal_from`` on, when
    what comes before that was accounted for already).
    """

    def __init__(
        self,
        client: RelayClient,
        kernel_id: str,
        journal: IopubJournal,
        position: int,
        *,
        tell: Callable[[RelayClient, str, ReplayGap], None],
        done: Callable[[ReplayStream], None],
        older: Iterable[Outgoing] = (),
        journal_from: int = 0,
    ) -> None:
        self.client = client
        self.kernel_id = kernel_id
        self.position = position
        """The number of the last message handed to the client."""
        self.count = 0
        """How many messages were handed out."""
        self.from_elsewhere = 0
        """How many of them were ``older``."""
        self.ended = False
        self.waiting = False
        """Set while ``older`` is still being fetched: nothing is handed out until :meth:`start`."""
        self._journal = journal
        self._older: deque[Outgoing] = deque(older)
        self._journal_from = journal_from
        self._held: deque[Outgoing] = deque()
        self._tell = tell
        self._done = done
        self._feeding = False

    def start(self, older: Iterable[Outgoing], journal_from: int) -> None:
        """The fetched ``older`` messages are here: begin."""
        self._older.extend(older)
        self._journal_from = journal_from
        self.waiting = False
        self.feed()

    def live(self, message: Outgoing, kept: bool) -> None:
        """
        A message the client's kernel sent while it replays: one the journal ``kept`` comes from the journal in
        its turn; another waits here, after the message whose number it carries.
        """
        if not kept:
            self._held.append(message)

    def stop(self) -> None:
        """The client left (or its kernel ended): hand out nothing more."""
        self.ended = True
        self._older.clear()
        self._held.clear()

    def feed(self) -> None:
        """Hand the client its next messages while less than :data:`REPLAY_WINDOW` waits for it."""
        if self._feeding or self.ended or self.waiting:
            return
        self._feeding = True
        client, kernel_id = self.client, self.kernel_id
        try:
            while not self.ended and client.backlog < REPLAY_WINDOW:
                message = self._next()
                if message is None:
                    self.ended = True
                    self._done(self)
                    return
                self.count += 1
                client.deliver(kernel_id, IOPUB, message)
        finally:
            self._feeding = False

    def _next(self) -> Outgoing | None:
        older = self._older
        if older:
            message = older.popleft()
            self.position = max(self.position, message.seq)
            self.from_elsewhere += 1
            return message
        held = self._held
        if held and held[0].seq <= self.position:
            return held.popleft()
        journal = self._journal
        position = max(self.position, self._journal_from - 1)
        gap = journal.expired_after(position)
        if gap is not None:
            self._tell(self.client, self.kernel_id, gap)
            position = gap.last
        self.position = position
        kept = journal.after(position)
        if kept is None:
            return held.popleft() if held else None
        self.position = kept.seq
        return kept

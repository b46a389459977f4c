"""
Who numbers a kernel's iopub messages (their ``relay_seq``): this process alone (:class:`LocalNumbering`), or
a fleet (:class:`FleetNumbering`, over the fleet's :class:`IopubNumbering`). The core always has one, and asks
it the same questions either way:

- :meth:`~Numbering.place`: number a message (the kernel's, or the relay's own status), keep it in the
  journal if it is kept, and hand it on. Alone, the relay's statuses are numbered and kept like the
  kernel's; in a fleet they take the latest number and are not kept (other relays say their own).
- :meth:`~Numbering.settled`: run something once every message given before is numbered.
- :meth:`~Numbering.elsewhere` and :meth:`~Numbering.fetch`: whether a resuming client saw messages this
  relay does not keep (on another relay of the fleet), and those messages.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from twisted.internet.defer import Deferred, succeed

from .journal import IopubJournal
from .payload import Outgoing
from .status import STATUS_SIZE

Fetched = list[tuple[int, float, Outgoing | None]]
"""Messages of the fleet's stream: (seq, time, message), None for one that could not be read (forged)."""

Placed = Callable[[str, IopubJournal, int, Outgoing | None, bool], None]
"""
Gets a placed message's kernel id, journal and size (as given to :meth:`Numbering.place`), the message numbered
(None: the fleet cannot place it on this relay), and whether it is kept.
"""


class IopubNumbering(Protocol):
    """
    Who numbers iopub messages when the numbers are not this process's alone (a fleet, see
    ``kernel_relay.fleet.numbering``): ``ready`` gets each number, in the order the messages were given.
    """

    def number(
        self, kernel_id: str, msg_id: str, message: Outgoing, ready: Callable[[int | None], None]
    ) -> None:
        """``ready`` gets the message's number, or None: the fleet cannot place it on this relay."""

    def after(self, kernel_id: str, ready: Callable[[int], None]) -> None:
        """``ready`` gets the latest number once every message given before is numbered."""

    def forget(self, kernel_id: str) -> None: ...

    def fetch(
        self, kernel_id: str, since: int, until: int | None = None, count: int | None = None
    ) -> Deferred[Fetched]:
        """
        The fleet's kept messages after ``since`` (up to ``until`` included, at most ``count``, if given):
        (seq, time, message), oldest first (see ``Fetched``).
        """


class Numbering(Protocol):
    """What the core asks of whoever numbers its kernels' iopub messages (see the module doc)."""

    def place(
        self,
        kernel_id: str,
        journal: IopubJournal,
        message: Outgoing,
        kind: tuple[str | None, int, str],
        ready: Placed,
    ) -> None:
        """Number ``message``; ``kind`` is its ``msg_id`` (None: the relay's own), size and ``msg_type``."""

    def place_now(self, journal: IopubJournal, message: Outgoing) -> tuple[Outgoing, bool]:
        """The relay's last status of a kernel that ended, numbered at once, and whether it is kept."""

    def settled(self, kernel_id: str, then: Callable[[], None]) -> None: ...

    def elsewhere(self, journal: IopubJournal, since: int) -> bool: ...

    def fetch(self, kernel_id: str, since: int) -> Deferred[Fetched]: ...

    def forget(self, kernel_id: str) -> None: ...


class LocalNumbering:
    """Numbers in this process: every message is numbered by its kernel's journal, and kept there."""

    def place(
        self,
        kernel_id: str,
        journal: IopubJournal,
        message: Outgoing,
        kind: tuple[str | None, int, str],
        ready: Placed,
    ) -> None:
        _, size, msg_type = kind
        ready(kernel_id, journal, size, journal.record(message, size, msg_type), True)

    def place_now(self, journal: IopubJournal, message: Outgoing) -> tuple[Outgoing, bool]:
        return journal.record(message, STATUS_SIZE, "status"), True

    def settled(self, kernel_id: str, then: Callable[[], None]) -> None:
        then()

    def elsewhere(self, journal: IopubJournal, since: int) -> bool:
        return False

    def fetch(self, kernel_id: str, since: int) -> Deferred[Fetched]:
        return succeed([])

    def forget(self, kernel_id: str) -> None:
        pass


class FleetNumbering:
    """Numbers with the fleet: a kernel's message takes the fleet's number; the relay's own take the latest."""

    def __init__(self, shared: IopubNumbering) -> None:
        self._shared = shared

    def place(
        self,
        kernel_id: str,
        journal: IopubJournal,
        message: Outgoing,
        kind: tuple[str | None, int, str],
        ready: Placed,
    ) -> None:
        msg_id, size, msg_type = kind
        if msg_id is None:
            self._shared.after(
                kernel_id,
                lambda seq: ready(kernel_id, journal, size, message.with_seq(seq), False),
            )
            return

        def numbered(seq: int | None) -> None:
            kept = None if seq is None else journal.record(message, size, msg_type, seq)
            ready(kernel_id, journal, size, kept, True)

        self._shared.number(kernel_id, msg_id, message, numbered)

    def place_now(self, journal: IopubJournal, message: Outgoing) -> tuple[Outgoing, bool]:
        # Now, not behind later messages: its clients are let go right after.
        return message.with_seq(journal.last_seq), False

    def settled(self, kernel_id: str, then: Callable[[], None]) -> None:
        self._shared.after(kernel_id, lambda _: then())

    def elsewhere(self, journal: IopubJournal, since: int) -> bool:
        # Older than what this relay keeps, or newer than what it has seen: the fleet's stream knows.
        return since + 1 < journal.first_seq or since > journal.last_seq

    def fetch(self, kernel_id: str, since: int) -> Deferred[Fetched]:
        return self._shared.fetch(kernel_id, since)

    def forget(self, kernel_id: str) -> None:
        self._shared.forget(kernel_id)

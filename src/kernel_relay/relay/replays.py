"""
The replays under way: what a joining iopub client asked for (a :class:`~.journal.Resume`) becomes a
:class:`~.replay.ReplayStream` from the kernel's journal (and, in a fleet, the older messages of the fleet's
stream first), handed on as the client drains; live messages reach a replaying client in their turn.

What a client will not get is told as a :data:`~.events.ReplayGap`: too much still waiting for it, a number
this relay never gave, messages no longer kept, a replay cut short by its kernel's end.
"""

from __future__ import annotations

import sys
from typing import Final

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from ..kernels import IOPUB
from ..metrics import RelayMetrics
from .client import RelayClient, short_id
from .events import MessageRefused, ReplayBacklogged, ReplayCut, ReplayExpired, ReplayGap
from .journal import IopubJournal, Resume
from .numbering import Fetched, Numbering
from .payload import Outgoing
from .replay import ReplayStream

log = Logger()

#: A joining iopub client gets a replay only while less than this is waiting to go out to it, so that
#: joining again and again without reading cannot pile up copies of the journal.
REPLAY_BACKLOG: Final = 1024 * 1024
#: Why a client misses messages of the fleet's stream that did not open.
UNREADABLE: Final = "the fleet's stream holds them unreadable (not written by a relay of the fleet)"


class Replays:
    """The replays under way, by kernel and by client (see the module doc)."""

    def __init__(
        self, numbering: Numbering, metrics: RelayMetrics, clock: IReactorTime, max_age: float
    ) -> None:
        self._numbering = numbering
        self._metrics = metrics
        self._clock = clock
        self._max_age = max_age
        # kernel id -> client id -> the client's replay under way, and the same by client id -> kernel id
        self._by_kernel: dict[str, dict[str, ReplayStream]] = {}
        self._by_client: dict[str, dict[str, ReplayStream]] = {}
        # kernel id -> client id -> where a catch-up from the fleet's stream left the client: this relay's
        # own numbering may come later than the stream's, so a live message at or below it was handed already.
        self._floors: dict[str, dict[str, int]] = {}

    def resume(
        self, client: RelayClient, kernel_id: str, journal: IopubJournal | None, resume: Resume
    ) -> None:
        """Give a joining iopub client what ``resume`` asks for, or tell it what it will not get."""
        for reason in resume.ignored:
            log.info(
                "Client {address} on iopub of kernel {kernel}: {reason}",
                address=client.address,
                kernel=short_id(kernel_id),
                reason=reason,
            )
            client.tell(kernel_id, IOPUB, MessageRefused(reason))
        if journal is None or (resume.since is None and not resume.execution):
            return
        backlog = client.backlog
        if backlog >= REPLAY_BACKLOG:
            log.warn(
                "No replay for {address} on iopub of kernel {kernel}: {backlog} bytes still wait to go out to it",
                address=client.address,
                kernel=short_id(kernel_id),
                backlog=backlog,
            )
            self.tell_gap(client, kernel_id, ReplayBacklogged(backlog, journal.last_seq))
            return
        if resume.since is not None and self._numbering.elsewhere(journal, resume.since):
            self._catch_up(client, kernel_id, journal, resume.since)
            return
        if resume.since is not None:
            if resume.since > journal.last_seq:
                gap = journal.since(resume.since).gap
                assert gap is not None
                self.tell_gap(client, kernel_id, gap)
                return
            position = resume.since
        else:
            start = journal.execution_start()
            if start is None:
                return
            position = start - 1
        self._start(client, kernel_id, journal, position).feed()

    def deliver(
        self, kernel_id: str, clients: dict[str, RelayClient], message: Outgoing, kept: bool
    ) -> None:
        """Deliver a live iopub message; a client whose replay is under way gets it in its turn."""
        replays = self._by_kernel.get(kernel_id)
        floors = self._floors.get(kernel_id)
        if floors is not None and kept:
            clients = self._past_floors(kernel_id, floors, clients, message.seq)
        if not replays:
            for client in list(clients.values()):
                client.deliver(kernel_id, IOPUB, message)
            return
        for client in list(clients.values()):
            replay = replays.get(client.client_id)
            if replay is not None and replay.client is client:
                replay.live(message, kept)
            else:
                client.deliver(kernel_id, IOPUB, message)

    def _past_floors(
        self, kernel_id: str, floors: dict[str, int], clients: dict[str, RelayClient], seq: int
    ) -> dict[str, RelayClient]:
        """``clients`` less those a fleet catch-up already handed ``seq``; a floor goes at the first past it."""
        past = dict(clients)
        for client_id, floor in list(floors.items()):
            if client_id not in clients:
                del floors[client_id]  # the client left
            elif seq <= floor:
                del past[client_id]
            else:
                del floors[client_id]
        if not floors:
            del self._floors[kernel_id]
        return past

    def drained(self, client: RelayClient) -> None:
        """What was sent to the client has gone out: hand on its replays."""
        replays = self._by_client.get(client.client_id)
        if replays is not None:
            for replay in list(replays.values()):
                if replay.client is client:
                    replay.feed()

    def end(
        self, kernel_id: str, client_id: str, replay: ReplayStream | None = None
    ) -> ReplayStream | None:
        """Forget the client's replay of the kernel (``replay`` only, if given); the one forgotten."""
        floors = self._floors.get(kernel_id)
        if floors is not None and replay is None:
            floors.pop(client_id, None)
            if not floors:
                del self._floors[kernel_id]
        replays = self._by_kernel.get(kernel_id)
        current = replays.get(client_id) if replays is not None else None
        if current is None or (replay is not None and current is not replay):
            return None
        current.stop()
        del replays[client_id]  # type: ignore[union-attr]
        if not replays:
            del self._by_kernel[kernel_id]
        of_client = self._by_client[client_id]
        del of_client[kernel_id]
        if not of_client:
            del self._by_client[client_id]
        return current

    def cut(self, kernel_id: str, journal: IopubJournal | None, why: str) -> None:
        """The kernel ended: its clients that were still replaying are told what they will not get."""
        for replay in list(self._by_kernel.get(kernel_id, {}).values()):
            self.end(kernel_id, replay.client.client_id, replay)
            last = journal.last_seq if journal is not None else replay.position
            if last > replay.position:
                self.tell_gap(replay.client, kernel_id, ReplayCut(replay.position + 1, last, why))

    def tell_gap(self, client: RelayClient, kernel_id: str, gap: ReplayGap) -> None:
        """Tell (and count) a gap in what the client gets of the kernel's iopub."""
        self._metrics.error("replay_gap")
        client.tell(kernel_id, IOPUB, gap)

    def _start(
        self, client: RelayClient, kernel_id: str, journal: IopubJournal, position: int
    ) -> ReplayStream:
        """A replay to the client from after ``position``, handed on as it drains (see :mod:`.replay`)."""
        self.end(kernel_id, client.client_id)
        replay = ReplayStream(
            client, kernel_id, journal, position, tell=self.tell_gap, done=self._done
        )
        self._by_kernel.setdefault(kernel_id, {})[client.client_id] = replay
        self._by_client.setdefault(client.client_id, {})[kernel_id] = replay
        return replay

    def _done(self, replay: ReplayStream) -> None:
        self.end(replay.kernel_id, replay.client.client_id, replay)
        if replay.from_elsewhere:
            self._floors.setdefault(replay.kernel_id, {})[replay.client.client_id] = replay.position
        self._metrics.replayed(replay.count)
        log.info(
            "Replayed {count} iopub message(s) of kernel {kernel} to {address}{fleet}",
            count=replay.count,
            kernel=short_id(replay.kernel_id),
            address=replay.client.address,
            fleet=f" ({replay.from_elsewhere} from the fleet)" if replay.from_elsewhere else "",
        )

    def _catch_up(
        self, client: RelayClient, kernel_id: str, journal: IopubJournal, since: int
    ) -> None:
        """
        Replay to a client that resumes from before what this relay keeps (it saw them on another relay of
        the fleet): the older messages come from the fleet's stream, then this relay's own, then what came
        meanwhile, each once and in order.
        """
        replay = self._start(client, kernel_id, journal, since)
        replay.waiting = True  # live messages wait in it meanwhile
        # Where this relay's own journal takes over (nothing of its own yet: the stream gives all).
        first_local = journal.first_seq if journal.last_seq else sys.maxsize

        def fetched(entries: Fetched) -> None:
            horizon = self._clock.seconds() - self._max_age
            unread = [seq for seq, _, m in entries if m is None and since < seq < first_local]
            older = [
                (seq, m)
                for seq, when, m in entries
                if m is not None and since < seq < first_local and when >= horizon
            ]
            finish(older, None, unread)

        def failed(failure: Failure) -> None:
            finish([], f"the fleet's stream could not be read: {failure.getErrorMessage()}", [])

        def finish(
            older: list[tuple[int, Outgoing]], problem: str | None, unread: list[int]
        ) -> None:
            if replay.ended:
                return  # the client left meanwhile
            if older:
                first = older[0][0]
            elif first_local != sys.maxsize:
                first = min(first_local, journal.last_seq + 1)
            else:  # what this relay recorded during the fetch, if anything
                first = journal.first_seq
            if first > since + 1:
                self.tell_gap(client, kernel_id, ReplayExpired(since + 1, first - 1, problem))
            # Entries of the stream that did not open (forged) past those: told, not silently missing.
            for gap in _runs([seq for seq in unread if seq >= first]):
                self.tell_gap(client, kernel_id, ReplayExpired(*gap, UNREADABLE))
            # The journal takes over where the stream's messages end (from first_local, or, with nothing of
            # its own before the fetch, from what it recorded since): none twice, and the gap told once.
            replay.start(
                [m.with_seq(seq) for seq, m in older],
                first_local if first_local != sys.maxsize else first,
            )

        self._numbering.fetch(kernel_id, since).addCallbacks(fetched, failed)


def _runs(numbers: list[int]) -> list[tuple[int, int]]:
    """Ascending ``numbers`` as runs of consecutive ones: (first, last) each."""
    runs: list[tuple[int, int]] = []
    for number in numbers:
        if runs and runs[-1][1] + 1 == number:
            runs[-1] = (runs[-1][0], number)
        else:
            runs.append((number, number))
    return runs

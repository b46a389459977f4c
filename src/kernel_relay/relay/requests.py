"""
Requests another relay of the fleet accepted, read here (:class:`RemoteRequests`): from the fleet's record of
the request (:class:`~.execution.RequestRecord`) and the kernel's stream in the fleet, by the ledger's own fold
(:meth:`~.execution.Execution.fold`) over the stream's messages after the record's ``first`` whose parent is
the request, read :data:`PAGE` messages at a time and no further than the request's end (at most
:data:`MAX_READS` reads at once: what they hold is outside the buffer budget). Nothing of them is kept here: each read rebuilds the request, so it is right whether the relay
that accepted it lives or died (its kernel adopted here or elsewhere).

The fleet's records also tell a relay that its own requests of a kernel another relay manages ended (its
restart or death there, which this relay's core does not hear of): :meth:`RemoteRequests.ended`, and the list.

A wait (``?wait=``) for such a request ends when it needs its client: it is woken by the kernel's ``status``
for the request as this relay sees it (every relay of a fleet hears every kernel's iopub), then reads once
every message this relay heard is in the stream; and every :data:`RECHECK` seconds by the record alone (what
only the accepting relay sees: ``input()``, its reply, a restart there).
"""

from __future__ import annotations

import json
from collections.abc import Container
from typing import Final

from twisted.internet.defer import (
    CancelledError,
    Deferred,
    DeferredSemaphore,
    ensureDeferred,
)
from twisted.internet.interfaces import IReactorTime

from ..kernels import IOPUB, KernelMessage
from .execution import QUEUED, RUNNING, Execution, RequestRecord, SharedRequests
from .ledger import RequestLedger
from .numbering import Fetched, IopubNumbering
from .payload import Outgoing

#: How often a wait for another relay's request reads the request's record again, in seconds.
RECHECK: Final = 1.0
#: How many reads of a kernel's stream run at once; others wait their turn.
MAX_READS: Final = 4
#: How many of the stream's messages a read holds at once: it goes on page by page, and stops once the
#: requests it rebuilds have finished (what comes after is not theirs) or at the stream's end.
PAGE: Final = 256
_WAITING: Final = frozenset({QUEUED, RUNNING})


def parented(outgoing: Outgoing, msg_id: str | None = None) -> KernelMessage | None:
    """
    The stream's message as a kernel message (its content read only when asked), if it has a parent: only if
    that parent is ``msg_id`` when one is given.
    """
    parent_part = bytes(outgoing.parts[1])
    if msg_id is not None and msg_id.encode("utf-8") not in parent_part:
        return None
    try:
        header, parent = json.loads(bytes(outgoing.parts[0])), json.loads(parent_part)
    except ValueError:
        return None
    if not isinstance(header, dict) or not isinstance(parent, dict):
        return None
    if not parent.get("msg_id") or (msg_id is not None and parent["msg_id"] != msg_id):
        return None
    return KernelMessage(
        header, parent, {}, None, list(outgoing.buffers), IOPUB, raw_parts=outgoing.parts
    )


class Rebuild:
    """
    Requests as the relays that accepted them know them: their records, and the kernel's stream (read after
    the smallest ``first`` of them) folded in page by page, each message into the request it answers.
    """

    def __init__(self, kernel_id: str, records: list[RequestRecord]) -> None:
        self._records = records
        self._requests = {r.msg_id: Execution.of_record(kernel_id, r) for r in records}
        self._only = records[0].msg_id if len(records) == 1 else None
        self._done: dict[str, float] = {}
        """When the message that finished each request was numbered."""
        self._head: int | None = None
        self._read = False
        self._seen: set[str] = set()
        """The msg_ids folded so far: an entry a Redis writer copied under a later number is folded once,
        whichever page it is on."""

    @property
    def over(self) -> bool:
        """Whether every request has finished in the stream (what comes after is no longer theirs)."""
        return len(self._done) == len(self._requests)

    def fold(self, page: Fetched) -> None:
        """The stream's next messages (the first page's first is where the stream starts now)."""
        if not self._read:
            self._read = True
            self._head = page[0][0] if page else None
        for _, when, outgoing in page:
            message = None if outgoing is None else parented(outgoing, self._only)
            request = None if message is None else self._requests.get(message.parent_msg_id)
            if message is None or request is None or message.msg_id in self._seen:
                continue
            self._seen.add(message.msg_id)
            try:
                if request.fold(message, when):
                    request.version += 1
            except ValueError:
                continue  # a content that is not JSON: the kernel's, relayed as it came; not an output
            if not request.live:
                self._done.setdefault(request.msg_id, when)

    def settle(self, now: float) -> list[Execution]:
        """The requests, each completed by its record (:meth:`~.execution.Execution.settle`), as listed."""
        for record in self._records:
            trimmed = self._head is None or self._head > record.first + 1
            self._requests[record.msg_id].settle(
                record, trimmed, self._done.get(record.msg_id), now
            )
        return [self._requests[record.msg_id] for record in self._records]


class RemoteRequests:
    """Reads the fleet's requests that this relay's ledger does not hold; see the module docstring."""

    def __init__(
        self,
        ledger: RequestLedger,
        shared: SharedRequests,
        numbering: IopubNumbering,
        clock: IReactorTime,
    ) -> None:
        self._ledger = ledger
        self._shared = shared
        self._numbering = numbering
        self._clock = clock
        self._gate = DeferredSemaphore(MAX_READS)

    def read(self, kernel_id: str, msg_id: str, wait: float = 0) -> Deferred[Execution | None]:
        """
        The request, None when the fleet keeps no record of it; with ``wait``, once it needs its client
        (finished, or waiting for input) or ``wait`` seconds passed. Cancelling it forgets the wait.
        """
        return ensureDeferred(self._read(kernel_id, msg_id, self._clock.seconds() + wait))

    async def _read(self, kernel_id: str, msg_id: str, deadline: float) -> Execution | None:
        loaded = await self._gated(kernel_id, msg_id)
        while loaded is not None:
            record, request = loaded
            left = deadline - self._clock.seconds()
            if left <= 0 or request.state not in _WAITING:
                return request
            if not await self._sign(kernel_id, msg_id, min(left, RECHECK)):
                # No sign here: only the record may have changed (what the accepting relay alone sees).
                if await self._shared.load(kernel_id, msg_id) == record:
                    continue
            loaded = await self._gated(kernel_id, msg_id)
        return None

    def written(self, kernel_id: str) -> Deferred[None]:
        """Once what this relay wrote of the kernel's requests so far is in the fleet (for every relay)."""
        return self._shared.written(kernel_id)

    def recent(self, kernel_id: str, skip: Container[str] = ()) -> Deferred[list[Execution]]:
        """The kernel's requests the fleet keeps (but those in ``skip``), oldest first."""
        return ensureDeferred(self._recent(kernel_id, skip))

    def ended(self, kernel_id: str, msg_id: str) -> Deferred[None]:
        """
        Read the fleet's record of a request this relay's ledger holds as live: if it says the request ended
        (its kernel restarted or died on the relay that manages it), it ends in the ledger too.
        """
        return self._shared.load(kernel_id, msg_id).addCallback(
            lambda record: self._ended_elsewhere(kernel_id, record)
        )

    def _ended_elsewhere(self, kernel_id: str, record: RequestRecord | None) -> None:
        if record is not None and record.ended is not None:
            when = record.finished or self._clock.seconds()
            self._ledger.ended_elsewhere(kernel_id, record.msg_id, record.ended, when)

    async def _recent(self, kernel_id: str, skip: Container[str]) -> list[Execution]:
        records = []
        for record in await self._shared.recent(kernel_id):
            if record.msg_id in skip:
                self._ended_elsewhere(
                    kernel_id, record
                )  # the ledger's own: the record may know more
            else:
                records.append(record)
        if not records:
            return []
        await self._gate.acquire()
        try:
            return await self._rebuilt(kernel_id, records)
        finally:
            self._gate.release()

    async def _gated(self, kernel_id: str, msg_id: str) -> tuple[RequestRecord, Execution] | None:
        """The request's record and the request, at most :data:`MAX_READS` reads at once."""
        await self._gate.acquire()
        try:
            record = await self._shared.load(kernel_id, msg_id)
            if record is None:
                return None
            return record, (await self._rebuilt(kernel_id, [record]))[0]
        finally:
            self._gate.release()

    async def _rebuilt(self, kernel_id: str, records: list[RequestRecord]) -> list[Execution]:
        """
        The requests, from the stream after the first's ``first`` (once every message this relay heard of the
        kernel is in it), :data:`PAGE` messages at a time, until each has finished or the stream ends.
        """
        settled: Deferred[int] = Deferred()
        self._numbering.after(kernel_id, settled.callback)
        await settled
        rebuilding = Rebuild(kernel_id, records)
        since = min(record.first for record in records)
        while True:
            page = await self._numbering.fetch(kernel_id, since, count=PAGE)
            rebuilding.fold(page)
            if len(page) < PAGE or rebuilding.over:
                return rebuilding.settle(self._clock.seconds())
            since = page[-1][0]

    def _sign(self, kernel_id: str, msg_id: str, step: float) -> Deferred[bool]:
        """True at the request's next sign of change on this relay, False after ``step`` seconds without."""
        woken = self._ledger.changed(kernel_id, msg_id)

        def stop(_: Deferred[bool]) -> None:
            if timer.active():
                timer.cancel()
            woken.cancel()

        sign: Deferred[bool] = Deferred(stop)

        def tick() -> None:
            woken.cancel()
            sign.callback(False)

        def woke(_: object) -> None:
            if timer.active():
                timer.cancel()
            if not sign.called:
                sign.callback(True)

        timer = self._clock.callLater(step, tick)
        woken.addCallbacks(woke, lambda failure: failure.trap(CancelledError))
        return sign


__all__ = [
    "MAX_READS",
    "PAGE",
    "RECHECK",
    "Rebuild",
    "RemoteRequests",
    "parented",
]

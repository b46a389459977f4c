# -*- test-case-name: tests.fleet.test_finder -*-
"""
Finding a kernel a client names that this relay does not know (:meth:`.Fleet.find`): it may have been started a
moment ago on another relay, or this relay may be joining its fleet. The look-up waits for the relay to have
joined, then reads the fleet's kernel ids and, if the kernel is one of them, serves it as a guest.

It runs before the client is admitted (a kernel token of a kernel started elsewhere is known here only once
the kernel is), so what it costs Redis is bounded whoever asks: an id that cannot be a kernel's is refused
without a read, and the fleet's ids are read once for every look-up waiting, at most once per
:data:`READ_INTERVAL` (a client naming a new id each time costs Redis nothing more); only a kernel that is
one of them has its record read. A kernel's first use waits for one read of the ids, and for the interval at
most while others look up too.
"""

from __future__ import annotations

import re
from typing import Any, Final

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime

from ..kernels import LOOKUP_WAIT
from .capacity import FleetSpawning
from .guests import FleetGuests
from .state import FleetState
from .store import FleetStore

#: The least time between two reads of the fleet's kernel ids for look-ups.
READ_INTERVAL: Final = 0.2
#: What a kernel id may be (the relay's are UUIDs); anything else is no kernel's, and costs no read.
KERNEL_ID: Final = re.compile(r"[0-9A-Za-z_-]{1,64}")


class KernelFinder:
    """Looks up kernel ids clients name, at a bounded cost to Redis; see the module docstring."""

    def __init__(
        self,
        store: FleetStore,
        state: FleetState,
        spawning: FleetSpawning,
        guests: FleetGuests,
        clock: IReactorTime,
    ) -> None:
        self._store = store
        self._state = state
        self._spawning = spawning
        self._guests = guests
        self._clock = clock
        self._waiting: list[Deferred[set[str]]] = []
        """Look-ups waiting for the next read of the fleet's ids."""
        self._reading = False
        self._next: IDelayedCall | None = None
        self._read_at = float("-inf")
        self.reads = 0
        """How many times the fleet's ids were read for look-ups."""

    def find(self, kernel_id: str) -> Deferred[None]:
        return Deferred.fromCoroutine(self._find(kernel_id))

    async def _find(self, kernel_id: str) -> None:
        if not KERNEL_ID.fullmatch(kernel_id):
            return
        # A relay that joins reads every kernel: it may have started just now.
        await self._spawning.when_joined(LOOKUP_WAIT)
        if not self._state.redis_up:  # away: refused at once, and no warning per client in the log
            return
        if kernel_id in await self._fleet_ids():
            await self._guests.learn(kernel_id)

    def _fleet_ids(self) -> Deferred[set[str]]:
        """The fleet's kernel ids, as read after this call (a read under way may have begun too early)."""
        waiter: Deferred[set[str]] = Deferred()
        self._waiting.append(waiter)
        self._schedule()
        return waiter

    def _schedule(self) -> None:
        if self._reading or self._next is not None or not self._waiting:
            return
        delay = max(0.0, self._read_at + READ_INTERVAL - self._clock.seconds())
        self._next = self._clock.callLater(delay, self._read)

    def _read(self) -> None:
        self._next = None
        self._reading = True
        self.reads += 1
        waiting, self._waiting = self._waiting, []

        def read(ids: Any) -> None:
            self._reading = False
            self._read_at = self._clock.seconds()
            for waiter in waiting:
                waiter.callback(ids if isinstance(ids, set) else set())
            self._schedule()

        self._store.kernel_ids().addBoth(read)


__all__ = ["KERNEL_ID", "READ_INTERVAL", "KernelFinder"]

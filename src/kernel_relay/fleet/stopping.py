# -*- test-case-name: tests.fleet.test_stopping -*-
"""
What a relay of a fleet does before its kernels stop (:meth:`.Fleet.prepare_stop`): with another live relay on
its machine, it leaves the fleet now (that relay adopts its kernels at once); as the last relay, it first adopts
the kernels of relays that are gone (a relay killed a moment ago still has a lease), so that they stop with its
own.

First its lease says it stops: no relay leaves its kernels to it, and every relay counts its kernels as
adoptable. It reads the other relays only after that, so of two relays that stop at the same moment at least
one sees that the other stops, and does not leave its kernels to it (were both to, both would stop with none
and the kernels would run on with no relay).

Either way it waits until nothing that may adopt a kernel is under way: every adoption, those begun
while it waits too, and the sync under way (it may be reading a kernel that a relay leaving now hands over,
to adopt it next). A kernel adopted after the kernels service counted this relay's own would be left running
with no relay: once prepared, it adopts nothing more, and runs no sync.

What may still come to it is stopped as it leaves (:meth:`Stopping.after_stop`): as the last relay of its
machine, it stops every kernel of the machine's list (:mod:`.ledger`) that no live relay manages. That is a
kernel handed to it after it prepared (its lease could not say it stops: the write was refused, so a relay
started meanwhile took it for live), or a dead relay's that Redis, out of memory, did not let it take over.
Refusing such a hand-over could not help: the relay that leaves it has already gone. It needs no write to
Redis (its end is told there as Redis allows), and a relay of the machine started meanwhile is left to adopt.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, DeferredList
from twisted.logger import Logger

from .guests import FleetGuests
from .mailbox import Mailbox
from .state import FleetState, Membership
from .store import FleetStore

log = Logger()


class Stopping:
    """Keeps count of the syncs under way, and prepares the stop; see the module docstring."""

    def __init__(
        self,
        store: FleetStore,
        state: FleetState,
        guests: FleetGuests,
        mailbox: Mailbox,
        sync: Callable[[], Deferred[None]],
    ) -> None:
        self._store = store
        self._state = state
        self._guests = guests
        self._mailbox = mailbox
        self._sync = sync
        self._sync_waiters: list[Deferred[None]] | None = None
        """Who waits for the sync under way to end; None while no sync is under way."""
        self._last_here = False
        """Whether it prepared to stop as the last relay of its machine."""

    def sync_begins(self) -> bool:
        """A sync may begin unless one is under way, or the stop is prepared (then it does not: False)."""
        if self._sync_waiters is not None or self._state.stop_prepared:
            return False
        self._sync_waiters = []
        return True

    def sync_ended(self) -> None:
        waiters, self._sync_waiters = self._sync_waiters or [], None
        for waiter in waiters:
            waiter.callback(None)

    def _sync_end(self) -> list[Deferred[None]]:
        if self._sync_waiters is None:
            return []
        waiter: Deferred[None] = Deferred()
        self._sync_waiters.append(waiter)
        return [waiter]

    async def settled(self) -> None:
        """Until no adoption and no sync is under way, those begun meanwhile too."""
        while waits := self._guests.adoptions() + self._sync_end():
            await DeferredList(waits, consumeErrors=True)

    async def before_stop(self, renew: Callable[[], Deferred[Any]]) -> None:
        """See the module docstring; ``renew`` writes this relay's lease (saying it stops) now."""
        self._state.preparing_stop = True
        try:
            await renew()
        except Exception:
            pass  # Redis away or full: the relays that cannot read it will not count on this one either
        await self.settled()
        # Relays read after this one's lease says it stops: of two that stop together, one sees the other.
        await self._sync()
        await self.settled()
        state = self._state
        if state.redis_up and state.live_relay_here():
            # Another live relay on this machine can adopt every kernel of this one (local or not).
            state.membership = Membership.HANDING_OFF
            await self._store.release(state.relay_id)
            message = {"type": "leaving", "from": state.relay_id}
            self._mailbox.broadcast(message, state.lease * 2, state.others)
        else:
            # The last relay here: every kernel it may manage whose owner is not alive is taken over.
            self._last_here = True
            for kernel_id, owner in self._guests.orphans():
                self._guests.adopt(kernel_id, owner, force=True).addErrback(
                    lambda f: log.warn("could not adopt a kernel before stopping: {e}", e=f.value)
                )
            await self.settled()
        state.stop_prepared = True

    async def after_stop(self) -> None:
        """
        Its kernels are stopped (or left running): as the last relay of its machine, it stops what no relay
        manages there, from the machine's list (see :meth:`.FleetGuests.stop_left`).
        """
        state = self._state
        if not self._last_here:
            return
        try:
            relays = await self._store.relays()
            state.others = {r: about for r, about in relays.items() if r != state.relay_id}
        except Exception:
            pass  # Redis away: as last read
        if not state.live_relay_here():  # one started meanwhile adopts them
            await self._guests.stop_left()


__all__ = ["Stopping"]

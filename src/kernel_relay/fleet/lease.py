# -*- test-case-name: tests.fleet.test_lease -*-
"""
This relay's lease, renewed every ``lease / 3`` seconds on a timer of its own (a long sync must never let it
lapse), and what the renewals show of Redis's memory.

When Redis is out of memory (its ``maxmemory`` reached, with ``noeviction``) it answers reads and refuses
writes. Then the lease is extended instead (``PEXPIRE``, which Redis allows then): no relay takes a live
relay's kernels over because Redis was full. What needs a write fails with Redis's own reason (a spawn) or is
done without Redis (each relay numbers its kernels' output alone, see :mod:`.numbering`); it is said once in
the log and in ``/api/health`` (``redis_full``) until no write has been refused for :data:`QUIET_RENEWALS`
renewals in a row, so that a Redis at its limit, where a write passes now and then, is not logged as full
and back again every few seconds.

Whether the lease is *held* (:meth:`LeaseKeeper.held`): a renewal begun less than a lease ago succeeded, and
none came more than a lease after the one before (a relay frozen or cut off past its lease, whose kernels
another relay may have taken meanwhile) unless a sync has read the fleet since. A relay that does not hold its
lease acts as no kernel's owner for numbering: it never starts a kernel's numbering again from its stale last
number beside the relay that took the kernel over (see :mod:`.numbering`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from .connection import RedisFull
from .state import FleetState
from .store import FleetStore

log = Logger()

#: How many renewals in a row must see no write refused for want of memory before Redis counts as having room.
QUIET_RENEWALS: Final = 3
#: How soon a renewal that failed is tried again (Redis restarting: once back, the relay saves its sessions'
#: marks again at its first renewal, which a returning session may be waiting for).
RENEW_RETRY: Final = 0.25


class LeaseKeeper:
    """Renews this relay's lease, and tells when Redis is out of memory; see the module docstring."""

    def __init__(
        self,
        store: FleetStore,
        state: FleetState,
        about: Callable[[], dict[str, Any]],
        clock: IReactorTime,
    ) -> None:
        self._store = store
        self._state = state
        self._about = about
        self._loop = LoopingCall(self._renew)
        self._loop.clock = clock
        self._clock = clock
        self._seen = 0
        self._quiet = 0
        self.full = False
        """Whether Redis is out of memory (as logged, and said in ``/api/health``)."""
        self._renewed: float | None = None
        self._lapsed = False
        self._retry: IDelayedCall | None = None

    def held(self) -> bool:
        """Whether this relay's lease is known to run, without a lapse since the fleet was last read."""
        renewed = self._renewed
        return (
            not self._lapsed
            and renewed is not None
            and self._clock.seconds() - renewed < self._state.lease
        )

    def synced(self, began: float) -> None:
        """A sync begun at ``began`` read the fleet: a lapse before it is known to this relay now."""
        if self._renewed is not None and began >= self._renewed:
            self._lapsed = False

    def start(self) -> None:
        self._loop.start(self._state.lease / 3, now=True)

    def stop(self) -> None:
        if self._loop.running:
            self._loop.stop()
        if self._retry is not None and self._retry.active():
            self._retry.cancel()

    def renew_now(self) -> Deferred[Any]:
        """Renew the lease now (and say what this relay runs)."""
        return self._store.renew(self._state.relay_id, self._about(), self._state.lease)

    def _renew(self) -> Deferred[None]:
        return Deferred.fromCoroutine(self._renewal())

    async def _renewal(self) -> None:
        refused: RedisFull | None = None
        began = self._clock.seconds()
        try:
            await self.renew_now()
        except RedisFull as error:
            refused = error
            kept = await self._store.extend_lease(
                self._state.relay_id, self._state.lease
            ).addCallbacks(lambda _: True, lambda f: False)
            if not kept:
                self.noted(refused)
                return
        except Exception as error:
            if self._state.redis_up:
                log.warn("Could not renew this relay's lease: {error}", error=error)
            if self._loop.running and (self._retry is None or not self._retry.active()):
                self._retry = self._clock.callLater(RENEW_RETRY, self._renew)
            return
        if self._renewed is not None and began - self._renewed >= self._state.lease:
            # Frozen or cut off past the lease: held again once a sync has read the fleet.
            self._lapsed = True
        self._renewed = began
        self.noted(refused)

    def noted(self, refused: RedisFull | None) -> None:
        """A renewal was refused for want of memory (``refused``) or done: log whether Redis is full, once."""
        refusals = self._store.memory_refusals
        if refused is None and refusals == self._seen:
            self._quiet += 1
        else:
            self._quiet = 0
        self._seen = refusals
        if self._quiet == 0 and not self.full:
            self.full = True
            log.error(
                "{why}: no kernel can start, and each relay numbers its kernels' output alone, until Redis "
                "has room (raise its maxmemory, or free memory)",
                why=str(refused or f"Redis at {self._store.url} is out of memory"),
            )
        elif self.full and self._quiet >= QUIET_RENEWALS:
            self.full = False
            log.info("The fleet's Redis at {url} has room again", url=str(self._store.url))
        self._store.full = self.full


__all__ = ["QUIET_RENEWALS", "RENEW_RETRY", "LeaseKeeper"]

"""A lease renewal that fails, in process: tried again soon, not a third of a lease later."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock

from kernel_relay.fleet.lease import RENEW_RETRY, LeaseKeeper
from kernel_relay.fleet.state import FleetState
from kernel_relay.fleet.store import FleetUnavailable

LEASE = 6.0


class Restarting:
    """A store whose Redis is away (restarting) until the test says it is back."""

    def __init__(self) -> None:
        self.up = True
        self.renewals = 0
        self.memory_refusals = 0
        self.full = False

    def renew(self, relay_id: str, about: Any, ttl: float) -> Deferred[Any]:
        if not self.up:
            return fail(FleetUnavailable("Redis is restarting"))
        self.renewals += 1
        return succeed(None)


def test_a_renewal_that_failed_is_tried_again_soon_and_stops_with_the_keeper() -> None:
    """A relay renews as soon as Redis is back (its sessions' marks are saved again then, and a returning session
    waits at most 2 s for them), and a stopped keeper tries nothing more."""
    clock, store = Clock(), Restarting()
    keeper = LeaseKeeper(store, FleetState("A", LEASE), dict, clock)  # type: ignore[arg-type]
    keeper.start()
    store.up = False
    clock.advance(LEASE / 3)  # the renewal fails: Redis restarts
    store.up = True
    clock.advance(RENEW_RETRY)
    assert store.renewals == 2
    store.up = False
    clock.advance(LEASE / 3 - RENEW_RETRY)
    keeper.stop()
    assert not clock.getDelayedCalls()

"""A relay frozen or cut off past its lease, in process: it numbers as no kernel's owner until it knows again."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from kernel_relay.fleet.lease import LeaseKeeper
from kernel_relay.fleet.state import FleetState

from .test_fleet import LEASE, Cluster


class Renewals:
    """A store whose lease renewals the test answers."""

    def __init__(self) -> None:
        self.pending: list[Deferred[Any]] = []
        self.memory_refusals = 0
        self.full = False

    def renew(self, relay_id: str, about: Any, ttl: float) -> Deferred[Any]:
        self.pending.append(Deferred())
        return self.pending[-1]


def test_a_lease_renewed_after_a_freeze_past_it_is_held_only_once_a_sync_read_the_fleet() -> None:
    """
    SIGSTOP past the lease: on SIGCONT the overdue renewal goes out, and ZMQ's backlog is read before its answer;
    the lease is not held until it is answered and a sync begun after it has read the fleet (who owns what now).
    """
    clock, store = Clock(), Renewals()
    keeper = LeaseKeeper(store, FleetState("A", LEASE), dict, clock)  # type: ignore[arg-type]
    keeper.start()
    store.pending.pop().callback(None)
    assert keeper.held()
    clock.advance(LEASE * 3)  # frozen, then thawed: the overdue renewal goes out at once
    assert not keeper.held()
    store.pending.pop().callback(None)
    assert not keeper.held()  # renewed, but after a lapse: another relay may own its kernels now
    keeper.synced(clock.seconds())
    assert keeper.held()
    keeper.stop()


def test_a_relay_cut_off_from_redis_past_its_lease_submits_as_no_kernels_owner() -> None:
    """Redis away for longer than the lease: the owner does not start a lost numbering again until it knows."""
    cluster = Cluster()
    a = cluster.start("A")
    cluster.spawn("A", "k1")
    cluster.advance(LEASE)
    owns = a.numbering._owns
    assert owns("k1")
    cluster.redis.up = False
    cluster.advance(LEASE * 2)
    assert not owns("k1")
    cluster.redis.up = True
    cluster.advance(LEASE)
    assert owns("k1")
    cluster.stop_all()

"""
Jupyter sessions' marks across a Redis restart, against a real redis-server: the freshest mark wins wherever
it is kept, and a returning session is never resumed from an older mark another relay saved again first.
"""

from __future__ import annotations

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.task import deferLater

from kernel_relay.fleet.mark_store import MarksUnsure
from kernel_relay.fleet.marks import FleetMarks
from kernel_relay.fleet.store import FleetStore
from tests.fleet.test_store import stores
from tests.redis_server import redis_server

__all__ = ["redis_server", "stores"]

LEASE = 5.0
ABOUT = {"machine": "m"}


async def a_moment() -> None:
    """Long enough for what a relay sent without waiting (its saves) to be done."""
    await deferLater(reactor, 0.1, lambda: None)


async def in_a_fleet(*members: tuple[str, FleetStore]) -> None:
    """Each relay renews its lease, then reads the fleet: each knows the others, as after a sync."""
    for relay_id, store in members:
        await store.renew(relay_id, ABOUT, LEASE)
    for _, store in members:
        await store.relays()


@pytest_twisted.ensureDeferred
async def test_a_session_back_during_settling_is_not_resumed_from_an_older_mark(
    stores: list[FleetStore],
) -> None:
    """Chaos seed 6's 19 s Jupyter repeat: Redis restarted empty, the relay holding the session's older mark saved
    it again first, and the session, back on that relay, was resumed from it; now it waits for the fresher one."""
    a, b = stores
    marks_a, marks_b = FleetMarks(a, reactor), FleetMarks(b, reactor)
    marks_a.save("k", {"s": (5, "p5")})  # the session read on A, then moved to B and read on
    marks_b.save("k", {"s": (30, "p30")})
    await in_a_fleet(("A", a), ("B", b))
    await a_moment()
    await a._call("FLUSHDB")  # as a restart with nothing on disk
    await a.renew("A", ABOUT, LEASE)  # A's renewal comes first: Redis settles
    marks_a.save_again()  # A saw its kernel lost, and saved its marks again
    await a_moment()
    loaded = marks_a.load("k", "s", patient=True)  # the session comes back to A
    await deferLater(reactor, 0.5, lambda: None)
    assert not loaded.called, "resumed from A's older mark before B saved its own again"
    await b.renew("B", ABOUT, LEASE)  # B's renewal: it saves its marks again
    assert await loaded == (30, "p30")


@pytest_twisted.ensureDeferred
async def test_a_relay_saves_its_marks_again_at_the_renewal_that_finds_them_lost(
    stores: list[FleetStore],
) -> None:
    """A relay that owns no kernel Redis lost (only sessions' marks) saves them again as soon as it sees the loss,
    and once every relay of the fleet has, Redis is settled: the mark is read at once."""
    a, b = stores
    marks_b = FleetMarks(b, reactor)
    marks_b.save("k", {"s": (30, "p30")})
    await in_a_fleet(("B", b))
    await a_moment()
    await a._call("FLUSHDB")
    await b.renew("B", ABOUT, LEASE)
    await a_moment()
    assert await a.mark("k", "s") == "30 p30"


@pytest_twisted.ensureDeferred
async def test_a_late_save_of_an_older_mark_never_replaces_a_fresher_one(
    stores: list[FleetStore],
) -> None:
    """The freshest position wins in Redis: a relay's save of an older mark leaves the newer one there."""
    a, b = stores
    await b.save_marks("k", {"s": "30 p30"}, 60, 10)
    await a.save_marks("k", {"s": "5 p5"}, 60, 10)
    assert await b.mark("k", "s") == "30 p30"


@pytest_twisted.ensureDeferred
async def test_the_relays_redis_waits_for_are_those_of_the_last_lease_not_of_a_read_of_the_empty_redis(
    stores: list[FleetStore],
) -> None:
    """A relay whose sync read the relays from the restarted Redis (none yet) before its renewal still has Redis
    wait for the others it knew a lease ago: their marks may be fresher than its own."""
    a, b = stores
    marks_a, marks_b = FleetMarks(a, reactor), FleetMarks(b, reactor)
    marks_a.save("k", {"s": (5, "p5")})
    marks_b.save("k", {"s": (30, "p30")})
    await in_a_fleet(("A", a), ("B", b))
    await a._call("FLUSHDB")
    assert await a.relays() == {}  # A's sync, first after the restart
    await a.renew("A", ABOUT, LEASE)
    await a_moment()
    with pytest.raises(MarksUnsure) as unsure:
        await b.mark("k", "s")
    assert unsure.value.found == "5 p5"
    await b.renew("B", ABOUT, LEASE)
    await a_moment()
    assert await a.mark("k", "s") == "30 p30"

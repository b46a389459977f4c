"""
A Redis writer without the fleet's secret, against a real redis-server: the output stream, sessions' marks,
reservations and owners it forges are not believed, and a mark Redis lost is not taken for a new session.
"""

from __future__ import annotations

import json
import time

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.task import deferLater

from kernel_relay.fleet.mark_store import MarksUnsure
from kernel_relay.fleet.secrets import Forged
from kernel_relay.fleet.store import FleetStore, key
from tests.fleet.test_store import number, stores
from tests.redis_server import redis_server

__all__ = ["redis_server", "stores"]


@pytest_twisted.ensureDeferred
async def test_the_stream_is_unreadable_in_redis_and_a_forged_entry_is_not_replayed(
    stores: list[FleetStore],
) -> None:
    """A kernel's output is not in Redis in clear; an entry added without the secret comes back as
    unreadable (None, counted), and an authentic one copied under another number is left out."""
    a, b = stores
    await number(a, "m1", b"secret-output-7c1d", 1000.0)
    raw = await a._call("XRANGE", key("journal", "k"), "-", "+")
    assert "secret-output-7c1d" not in str(raw)
    await a._call("XADD", key("journal", "k"), "0-5", "m", b"injected", "t", "1000.000", "i", "x")
    [(_, fields)] = raw
    await a._call("XADD", key("journal", "k"), "0-6", *fields)  # the authentic entry again
    assert await b.stream_since("k", 0) == [(1, 1000.0, b"secret-output-7c1d"), (5, 0.0, None)]
    assert b.forged.count == 1


@pytest_twisted.ensureDeferred
async def test_a_forged_or_unsealed_mark_is_refused_not_followed(stores: list[FleetStore]) -> None:
    """A mark written without the secret (a forger's, an older relay's) or moved from another session fails
    to open: the session is not resumed from where it says."""
    a, b = stores
    await a.save_marks("k1", {"s": "5 parent-1"}, 60, 10)
    assert await b.mark("k1", "s") == "5 parent-1"
    raw = await a._call("GET", key("mark", "k1", "s"))
    assert "parent-1" not in str(raw) and str(raw).startswith("5 ")
    for forged in ("9 parent-1", f"9 {str(raw).split(' ', 1)[1]}"):
        await a._call("SET", key("mark", "k1", "s"), forged)
        with pytest.raises(Forged):
            await b.mark("k1", "s")
    await a._call("SET", key("mark", "k1", "t"), raw)  # moved to another session
    with pytest.raises(Forged):
        await b.mark("k1", "t")
    assert b.forged.count == 3
    # A forged mark read is deleted: its high number no longer keeps the session's real mark out.
    await deferLater(reactor, 0.05, lambda: None)
    assert await a._call("GET", key("mark", "k1", "s")) is None
    await a.save_marks("k1", {"s": "6 parent-2"}, 60, 10)
    assert await b.mark("k1", "s") == "6 parent-2"


@pytest_twisted.ensureDeferred
async def test_a_forged_reservation_blocks_no_spawn(stores: list[FleetStore]) -> None:
    """A reservation written without the secret, however far its expiry, is not counted (and is removed);
    a relay's own is counted."""
    a, b = stores
    future = int(time.time() * 1000) + 10**9
    await a._call("HSET", key("pending"), "forged", str(future), "junk", "not a number")
    assert await a.reserve("r1", 2, 60) is True
    assert await a._call("HKEYS", key("pending")) == ["r1"]
    assert await b.reserve("r2", 2, 60) is True
    assert await b.reserve("r3", 2, 60) is False
    assert a.forged.count == 2


@pytest_twisted.ensureDeferred
async def test_a_forged_owner_is_no_owner_and_cannot_be_claimed_from(
    stores: list[FleetStore],
) -> None:
    """An owner written without the secret is not believed (no record, no owner) and a claim naming it
    fails; the relay that owns the kernel names itself again."""
    a, b = stores
    await a.register("k1", {"spec": "python3", "owner": "A"})
    assert await b.owner("k1") == "A"
    await b._call("HSET", key("kernel", "k1"), "owner", "X")  # X: no relay, no lease
    assert await b.owner("k1") is None
    assert await b.claim("k1", "X", "B") is False
    assert await b.take_over("k1", "X", "B") is False
    await a.set_owner("k1", "A")
    assert await b.owner("k1") == "A"
    assert (await b.kernel("k1") or {}).get("owner") == "A"
    await b._call("HSET", key("kernel", "k1"), "owner", "X")
    assert await b.kernel("k1") is None
    # Read whole, the forged record unlists the kernel: its owner registers it again (at its next sync).
    assert await b.kernel_ids() == set()
    assert b.forged.count >= 2


@pytest_twisted.ensureDeferred
async def test_no_mark_after_redis_lost_its_marks_is_told_unsure_not_new(
    stores: list[FleetStore],
) -> None:
    """Redis that restarted empty answers "no mark" for every session: until the relays of the fleet saved theirs
    again (or a lease passed), that is unsure (MarksUnsure), a mark found meanwhile too (a fresher one may be yet
    to come back), and only then a session new to the fleet."""
    a, b = stores
    await b.renew("B", {"machine": "m"}, 60)
    assert set(await a.relays()) == {"B"}  # the fleet as A knows it: B saves its marks again too
    await a.save_marks("k1", {"s": "5 p"}, 60, 10)
    await a._call("FLUSHDB")  # as a restart with nothing on disk
    with pytest.raises(MarksUnsure):
        await b.mark("k1", "s")
    await a.renew("A", {"machine": "m"}, 0.3)  # the first renewal after: Redis settles for a lease
    with pytest.raises(MarksUnsure):
        await b.mark("k1", "s")
    await a.save_marks("k1", {"s": "5 p"}, 60, 10)  # saved again meanwhile
    with pytest.raises(MarksUnsure) as unsure:
        await b.mark("k1", "s")
    assert unsure.value.found == "5 p"
    await b.renew("B", {"machine": "m"}, 60)  # B saves its marks again: the last Redis waits for
    await deferLater(reactor, 0.05, lambda: None)
    assert await b.mark("k1", "s") == "5 p"
    await deferLater(reactor, 0.4, lambda: None)
    assert await b.mark("k1", "new-session") is None
    await a._call("SET", key("kept-marks"), json.dumps("forged"))
    with pytest.raises(MarksUnsure):
        await b.mark("k1", "new-session")

"""
A Redis writer without the fleet's secret adds kernel ids to the fleet's ``kernels`` set, against a real
redis-server: they are not counted against ``--max-kernels``, not believed where the set is read, and removed
once (counted as forged), whatever they copy of real members.
"""

from __future__ import annotations

import pytest_twisted

from kernel_relay.fleet.store import FleetStore, key
from tests.fleet.test_store import stores
from tests.redis_server import redis_server

__all__ = ["redis_server", "stores"]


@pytest_twisted.ensureDeferred
async def test_forged_kernel_ids_block_no_spawn_and_are_removed_once(
    stores: list[FleetStore],
) -> None:
    """Ids added to ``kernels`` without the secret (bare, or shaped like a tagged member) do not fill
    ``--max-kernels``; the fleet's ids leave them out, and they are removed (counted once)."""
    a, b = stores
    await a.register("k1", {"spec": "python3", "owner": "A"})
    [real] = await a._call("SMEMBERS", key("kernels"))
    await a._call("SADD", key("kernels"), "fake1", "fake2 " + "0" * 32, real)  # a copy adds nothing
    assert await b.reserve("r1", 2, 60) is True
    assert await b._call("SMEMBERS", key("kernels")) == [real]
    assert b.forged.count == 2
    await a._call("SADD", key("kernels"), "fake3")
    assert await b.kernel_ids() == {"k1"}
    assert await b.kernel_ids() == {"k1"}
    assert b.forged.count == 3, "a forged id is counted (and logged) once"
    assert await b.reserve("r2", 2, 60) is False, "the relays' own kernels still count"


@pytest_twisted.ensureDeferred
async def test_a_replayed_member_without_its_record_is_forgotten_not_counted(
    stores: list[FleetStore],
) -> None:
    """A real member put back after its kernel ended (or listed with a record not written by a relay) is
    no kernel: reading it removes it (counted once), so that it stops counting and is not read again."""
    a, b = stores
    await a.register("k1", {"spec": "python3", "owner": "A"})
    [member] = await a._call("SMEMBERS", key("kernels"))
    await a.unregister("k1")
    await a._call("SADD", key("kernels"), member)  # an authentic member, replayed
    assert await b.kernel_ids() == {"k1"}
    assert await b.kernel("k1") is None
    assert await b.kernel_ids() == set()
    await a.register("k2", {"spec": "python3", "owner": "A"})
    await a._call("HSET", key("kernel", "k2"), "about", "forged")
    assert await b.kernel("k2") is None
    assert await b.kernel_ids() == set()
    assert await b.kernel("k2") is None
    assert b.forged.count == 2
    assert await a.reserve("r1", 1, 60) is True

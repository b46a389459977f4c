"""What the store writes to a real redis-server is sealed; what it reads without the fleet's secret it ignores."""

from __future__ import annotations

import json

import pytest_twisted
from twisted.internet import reactor

from kernel_relay.fleet.secrets import FleetKeys
from kernel_relay.fleet.store import FleetStore, RedisURL, key
from tests.fleet.test_store import KEYS, connected, stores
from tests.redis_server import redis_server

__all__ = ["redis_server", "stores"]


@pytest_twisted.ensureDeferred
async def test_only_relays_with_the_fleets_secret_join(stores: list[FleetStore]) -> None:
    """The first relay sets the check value; one with the same secret joins, one with another does not."""
    a, b = stores
    assert await a.join() is True
    assert await b.join() is True
    other = FleetStore(RedisURL.parse(str(a.url)), reactor, FleetKeys("another secret"))
    other._calls = b._calls
    assert await other.join() is False


@pytest_twisted.ensureDeferred
async def test_forged_moved_and_replayed_messages_are_ignored(stores: list[FleetStore]) -> None:
    """A message written without the secret, one moved from another mailbox, and one read twice are None."""
    a, b = stores
    box = key("mailbox", "B")
    await a._call("RPUSH", box, json.dumps({"type": "command", "op": "shutdown", "id": "k1"}))
    assert await b.read_mailbox("B", 1) is None
    await a.post("C", {"type": "command", "op": "shutdown", "id": "k1"}, 10)
    moved = await a._call("LPOP", key("mailbox", "C"))
    await a._call("RPUSH", box, moved)
    assert await b.read_mailbox("B", 1) is None
    await a.post("B", {"type": "kernel", "id": "k1"}, 10)
    sealed = await a._call("LRANGE", box, 0, 0)
    await a._call("RPUSH", box, sealed[0])
    assert await b.read_mailbox("B", 1) == {"type": "kernel", "id": "k1"}
    assert await b.read_mailbox("B", 1) is None  # the same letter again
    assert b.forged.count == 3


@pytest_twisted.ensureDeferred
async def test_records_are_sealed_bound_to_their_kernel_and_checked(
    stores: list[FleetStore],
) -> None:
    """A record's fields but its owner are unreadable in Redis; a copy under another id, or a field
    written without the secret, makes the record None."""
    a, b = stores
    about = json.dumps({"connection": {"key": "hmac-key-5e1f"}})
    await a.register("k1", {"spec": "python3", "owner": "A", "about": about, "env": '{"K": "v"}'})
    raw = await a._call("HGETALL", key("kernel", "k1"))
    assert "hmac-key-5e1f" not in str(raw) and "python3" not in str(raw)
    assert (await a._call("HGET", key("kernel", "k1"), "owner")).startswith("A ")  # with its tag
    assert (await b.kernel("k1") or {}).get("about") == about
    flat = list(await a._call("HGETALL", key("kernel", "k1")))
    await a._call("HSET", key("kernel", "k2"), *flat)
    assert await b.kernel("k2") is None
    await a._call("HSET", key("kernel", "k1"), "about", json.dumps({"connection": {}}))
    assert await b.kernel("k1") is None
    # Listed with a forged record, it is no kernel of the fleet's until its owner registers it again.
    assert await b.kernel_ids() == set()
    await a.register("k1", {"spec": "python3", "owner": "A", "about": about, "env": '{"K": "v"}'})
    # An update of some fields (after a restart, an adoption) is sealed as well.
    await a.register("k1", {"owner": "B", "about": about})
    assert await b.kernel("k1") == {
        "spec": "python3",
        "owner": "B",
        "about": about,
        "env": '{"K": "v"}',
    }


@pytest_twisted.ensureDeferred
async def test_token_digests_are_hidden_and_forged_ones_ignored(stores: list[FleetStore]) -> None:
    """A token's digest is not in Redis (nor its name a plain hash); an entry written without the secret
    admits nothing."""
    a, b = stores
    digest = bytes(range(32))
    await a.add_token("k1", digest, "read-only")
    raw = await a._call("HGETALL", key("tokens", "k1"))
    assert digest.hex() not in str(raw)
    await a._call("HSET", key("tokens", "k1"), (b"\xff" * 32).hex(), "full")
    assert await b.tokens("k1") == {digest: "read-only"}


@pytest_twisted.ensureDeferred
async def test_a_forged_lease_is_no_relay(stores: list[FleetStore]) -> None:
    """A lease written without the secret does not count as a relay of the fleet."""
    a, b = stores
    await a.renew("A", {"machine": "m"}, 10)
    await b._call("SET", key("relay", "X"), json.dumps({"machine": "m"}))
    await b._call("SADD", key("relays"), "X")
    assert await b.relays() == {"A": {"machine": "m"}}


@pytest_twisted.ensureDeferred
async def test_the_store_needs_the_keys_to_read_anything(redis_server: object) -> None:
    """Two stores with the same secret read each other's records (the keys are derived alike)."""
    url = redis_server.database(14)  # type: ignore[attr-defined]
    a = await connected(url)
    b = FleetStore(RedisURL.parse(url), reactor, FleetKeys("test-fleet-secret"))
    b._calls = a._calls
    try:
        await a.register("k9", {"spec": "python3", "owner": "A"})
        assert await b.kernel("k9") == {"spec": "python3", "owner": "A"}
        assert KEYS.check == FleetKeys("test-fleet-secret").check
        await a._call("DEL", key("kernel", "k9"), key("kernels"))
    finally:
        await a.disconnect()

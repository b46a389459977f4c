"""The fleet's Redis scripts against a real redis-server (Debian's, on loopback): what must be atomic is."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.task import deferLater

from kernel_relay.fleet.secrets import SEALED_OVERHEAD, FleetKeys
from kernel_relay.fleet.store import FleetStore, FleetUnavailable, RedisURL
from tests.redis_server import RedisServer, redis_server

__all__ = ["redis_server"]

KEYS = FleetKeys("test-fleet-secret")


async def connected(url: str) -> FleetStore:
    store = FleetStore(RedisURL.parse(url), reactor, KEYS)
    store.connect()
    for _ in range(100):
        if store.up:
            return store
        await deferLater(reactor, 0.02, lambda: None)
    raise AssertionError(f"no connection to {url}")


@pytest_twisted.async_yield_fixture
async def stores(
    redis_server: RedisServer, request: pytest.FixtureRequest
) -> AsyncIterator[list[FleetStore]]:
    # A database of its own per test: 1..15 (0 is the module's default).
    number = 1 + abs(hash(request.node.name)) % 15
    url = redis_server.database(number)
    made = [await connected(url), await connected(url)]
    await made[0]._call("FLUSHDB")
    # As in a fleet that has run for a while: Redis has kept the sessions' marks for longer than a lease.
    await made[0].keep_marks(0.001, "A")
    await deferLater(reactor, 0.01, lambda: None)
    yield made
    for store in made:
        await store.disconnect()


@pytest_twisted.ensureDeferred
async def test_max_kernels_is_counted_over_every_relay(stores: list[FleetStore]) -> None:
    a, b = stores
    results = await gatherResults(
        [a.reserve("r1", 2, 60), b.reserve("r2", 2, 60), b.reserve("r3", 2, 60)]
    )
    assert sorted(results) == [False, True, True]
    # Which of the three lost depends on which store proved the fleet's secret first.
    first, second = (name for name, held in zip(("r1", "r2", "r3"), results, strict=True) if held)
    await a.register("k1", {"spec": "python3", "owner": "A"}, first)
    assert await b.reserve("r4", 2, 60) is False  # k1 runs, the second still starts
    await b.unreserve(second)
    assert await b.reserve("r5", 2, 60) is True
    assert await a.reserve("any", None, 60) is True  # no limit


@pytest_twisted.ensureDeferred
async def test_an_expired_reservation_frees_its_place(stores: list[FleetStore]) -> None:
    a, _ = stores
    assert await a.reserve("r1", 1, 0.05) is True
    await deferLater(reactor, 0.1, lambda: None)
    assert await a.reserve("r2", 1, 60) is True


@pytest_twisted.ensureDeferred
async def test_a_kernel_is_claimed_only_when_its_owners_lease_expired_and_only_once(
    stores: list[FleetStore],
) -> None:
    a, b = stores
    await a.renew("A", {"pid": 1}, 0.2)
    await a.register("k1", {"owner": "A"})
    assert await b.claim("k1", "A", "B") is False  # A's lease runs
    await deferLater(reactor, 0.3, lambda: None)
    claims = await gatherResults([b.claim("k1", "A", "B"), a.claim("k1", "A", "C")])
    assert sorted(claims) == [False, True]
    record = await a.kernel("k1")
    assert record is not None and record["owner"] in ("B", "C")
    assert await a.claim("missing", "A", "B") is False


def number(
    store: FleetStore,
    msg_id: str,
    payload: bytes,
    when: float,
    *,
    after: int = -1,
    owner: bool = True,
    keep: int = 100,
    keep_bytes: int = 1 << 40,
    keep_seconds: float = 1e9,
) -> Deferred[int]:
    """Kernel k's message numbered as a relay submits it (by default: the owner, with no number yet)."""
    return store.number("k", msg_id, payload, when, keep, keep_bytes, keep_seconds, after, owner)


@pytest_twisted.ensureDeferred
async def test_each_message_is_numbered_once_however_many_relays_submit_it(
    stores: list[FleetStore],
) -> None:
    a, b = stores
    numbers = await gatherResults(
        [
            number(a, "m1", b"one", 1.0),
            number(b, "m1", b"one", 1.0),
            number(b, "m2", b"\xff\x00two", 2.0),
            number(a, "m2", b"\xff\x00two", 2.0),
        ]
    )
    assert numbers == [1, 1, 2, 2]
    assert await a.stream_since("k", 0) == [(1, 1.0, b"one"), (2, 2.0, b"\xff\x00two")]
    assert await a.stream_since("k", 1) == [(2, 2.0, b"\xff\x00two")]
    assert await b.bump("k", 10) == 10
    assert await number(a, "m3", b"three", 3.0) == 11
    assert await b.bump("k", 5) == 11  # never back


@pytest_twisted.ensureDeferred
async def test_the_lease_list_forgets_relays_whose_lease_ran_out(stores: list[FleetStore]) -> None:
    a, b = stores
    await a.renew("A", {"host": "x"}, 60)
    await b.renew("B", {"host": "y"}, 0.05)
    await deferLater(reactor, 0.1, lambda: None)
    assert await a.relays() == {"A": {"host": "x"}}
    await a.release("A")
    assert await b.relays() == {}


@pytest_twisted.ensureDeferred
async def test_mailboxes_tokens_and_marks(stores: list[FleetStore]) -> None:
    a, b = stores
    await a.post("B", {"type": "kernel", "id": "k1"}, 10)
    assert await b.read_mailbox("B", 1) == {"type": "kernel", "id": "k1"}
    await a.add_token("k1", b"\x01\x02", "read-only")
    assert await b.tokens("k1") == {b"\x01\x02": "read-only"}
    await a.save_marks("k1", {"session": "7 m1", "short": "9 m2"}, 60, 10)
    await a.save_marks("k1", {"short": "9 m2"}, 0.1, 10)
    assert await b.mark("k1", "session") == "7 m1"
    # Each session's position expires on its own.
    await deferLater(reactor, 0.2, lambda: None)
    assert await b.mark("k1", "short") is None
    assert await b.mark("k1", "session") == "7 m1"
    await a.unregister("k1")
    assert await b.tokens("k1") == {}
    # The kernel's sessions' positions went with it.
    assert await b.mark("k1", "session") is None


@pytest_twisted.ensureDeferred
async def test_a_store_without_redis_fails_at_once_and_says_where(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    from tests.support import free_port

    store = FleetStore(RedisURL.parse(f"redis://:secret@127.0.0.1:{free_port()}/3"), reactor, KEYS)
    store.connect()
    try:
        assert not store.up
        with pytest.raises(FleetUnavailable) as error:
            await store.kernel_ids()
        assert "127.0.0.1" in str(error.value) and "secret" not in str(error.value)
    finally:
        await store.disconnect()


def test_redis_urls() -> None:
    url = RedisURL.parse("rediss://user:p%40ss@cache.example.com:6380/2")
    assert (url.host, url.port, url.db, url.username, url.password, url.tls) == (
        "cache.example.com",
        6380,
        2,
        "user",
        "p@ss",
        True,
    )
    assert "p@ss" not in str(url)
    assert RedisURL.parse("redis://localhost").port == 6379
    for bad in ("http://x", "redis://", "redis://h/db", "redis://h:99999"):
        with pytest.raises(ValueError):
            RedisURL.parse(bad)


@pytest_twisted.ensureDeferred
async def test_a_kernel_keeps_only_its_newest_marks(stores: list[FleetStore]) -> None:
    """Past ``keep`` sessions of one kernel, the oldest mark is forgotten, key and all."""
    a, _ = stores
    for n in range(5):
        await a.save_marks("k2", {f"s{n}": f"{n} m"}, 60, 3)
    assert [await a.mark("k2", f"s{n}") for n in range(5)] == [None, None, "2 m", "3 m", "4 m"]
    await a.unregister("k2")


@pytest_twisted.ensureDeferred
async def test_a_kernels_stream_is_bounded_by_bytes_and_age_as_the_journal_is(
    stores: list[FleetStore],
) -> None:
    """100 messages of 100 kB into a stream of 1 MB at most: it keeps about 1 MB, and drops what is too old."""
    a, _ = stores
    big = b"x" * 100_000
    for n in range(100):
        await number(a, f"m{n}", big, 1000.0 + n, keep_bytes=1_000_000, keep_seconds=50)
    kept = await a.stream_since("k", 0)
    assert 1 <= len(kept) <= 10
    assert await a.stream_bytes("k") == len(kept) * (len(big) + SEALED_OVERHEAD) <= 1_000_000
    await number(a, "late", b"small", 2000.0, keep_bytes=1_000_000, keep_seconds=50)
    assert [entry[0] for entry in await a.stream_since("k", 0)] == [101]  # the others are too old


@pytest_twisted.ensureDeferred
async def test_a_message_keeps_its_number_as_long_as_the_stream_keeps_it_and_is_never_renumbered(
    stores: list[FleetStore],
) -> None:
    """However late a relay submits a message: the same number while kept, a refusal (-1) once trimmed."""
    a, b = stores
    for n in range(20):
        assert await number(a, f"m{n}", b"out", float(n), keep=10) == n + 1
    # B, frozen since it had number 10 (say for minutes), submits m10 (numbered 11): still known.
    assert await number(b, "m10", b"out", 10.0, after=10, keep=10) == 11
    # B, frozen since number 3, submits m3: trimmed (the stream keeps 11..20): refused, not renumbered.
    assert await number(b, "m3", b"out", 3.0, after=2, keep=10) == -1
    assert await a.last_seq("k") == 20


@pytest_twisted.ensureDeferred
async def test_a_numbering_redis_lost_is_started_again_by_the_owner_only_past_its_last_number(
    stores: list[FleetStore],
) -> None:
    """After Redis lost a kernel's numbering, a guest's submission waits (-2); the owner's goes on past its last."""
    a, b = stores
    assert await number(b, "m1", b"out", 1.0, after=57, owner=False) == -2
    assert await number(a, "m1", b"out", 1.0, after=57) == 58
    assert await number(b, "m1", b"out", 1.0, after=57, owner=False) == 58

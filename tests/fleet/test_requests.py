"""The fleet's records of requests: their codec, and their keys in a real redis-server (sealed, bounded, ended)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater

from kernel_relay.fleet.connection import text
from kernel_relay.fleet.numbering import SharedNumbering
from kernel_relay.fleet.requests import FleetRequests, decode, encode
from kernel_relay.fleet.secrets import FleetKeys
from kernel_relay.fleet.store import FleetStore, FleetUnavailable, RedisURL
from kernel_relay.kernels import KernelMessage
from kernel_relay.relay.execution import RequestRecord
from kernel_relay.relay.ledger import RequestLedger
from kernel_relay.relay.numbering import Fetched
from kernel_relay.relay.payload import Outgoing
from kernel_relay.relay.requests import PAGE, RemoteRequests
from tests.fleet.test_store import KEYS, connected
from tests.redis_server import RedisServer, redis_server
from tests.relay.test_requests import cell, iopub

__all__ = ["redis_server"]

KERNEL = "k1-0000"
FULL = RequestRecord(
    "r1",
    12,
    1700000000.5,
    cell_id="c1",
    document_path="a.ipynb",
    status="ok",
    inferred=True,
    execution_count=0,
    input_request={"prompt": "who? ", "password": False},
    ended="kernel restarting",
    finished=1700000001.0,
)


def test_a_record_comes_back_as_it_went() -> None:
    """Every field, empty ones and zeros included, survives the codec."""
    for record in (FULL, RequestRecord("r2", 0, 0.0), replace(FULL, execution_count=None)):
        assert decode(encode(record)) == record


@pytest.mark.parametrize(
    "data",
    [
        b"not json",
        b"[]",
        b'{"first": 1, "submitted": 0}',
        b'{"msg_id": "r", "first": true, "submitted": 0}',
        b'{"msg_id": "r", "first": "1", "submitted": 0}',
        b'{"msg_id": "r", "first": 1, "submitted": 0, "code": "x"}',
        b'{"msg_id": "r", "first": 1, "submitted": 0, "inferred": 1}',
    ],
)
def test_what_is_no_record_is_none(data: bytes) -> None:
    """A value that is not a record's (wrong type, unknown or missing field) is refused, never half read."""
    assert decode(data) is None


@pytest_twisted.async_yield_fixture
async def store(redis_server: RedisServer) -> AsyncIterator[FleetStore]:
    made = await connected(redis_server.database(9))
    await made._call("FLUSHDB")
    yield made
    await made.disconnect()


async def settled() -> None:
    """The fire-and-forget writes are answered (one connection: a read after them sees them)."""
    await deferLater(reactor, 0.05, lambda: None)


@pytest_twisted.ensureDeferred
async def test_records_are_sealed_kept_and_bounded(store: FleetStore) -> None:
    """A record reads back on another relay's view, sealed in Redis; a kernel keeps its newest; keys expire."""
    requests = FleetRequests(store, KEYS, reactor, ttl=60, keep=2)
    for n in range(3):
        requests.save(KERNEL, replace(FULL, msg_id=f"r{n}", submitted=float(n)))
    requests.save(KERNEL, replace(FULL, msg_id="r2", submitted=2.0, status="error"))
    await settled()
    assert await requests.load(KERNEL, "r0") is None  # the oldest went
    found = await requests.load(KERNEL, "r2")
    assert found == replace(FULL, msg_id="r2", submitted=2.0, status="error")
    raw = text(await store._call("HGET", f"kernel-relay:requests:{KERNEL}", "r2"))
    assert "a.ipynb" not in raw and raw.startswith("s1.")
    assert 0 < int(await store._call("PTTL", f"kernel-relay:requests:{KERNEL}")) <= 60_000
    assert 0 < int(await store._call("PTTL", f"kernel-relay:request-order:{KERNEL}")) <= 60_000
    assert await requests.load(KERNEL, "nope") is None
    assert [r.msg_id for r in await requests.recent(KERNEL)] == ["r1", "r2"]
    assert await requests.recent("another-kernel") == []


@pytest_twisted.ensureDeferred
async def test_once_written_a_record_is_there_for_every_relay(
    store: FleetStore, redis_server: RedisServer
) -> None:
    """written() fires once the writes begun before it are answered: another relay then reads them."""
    requests = FleetRequests(store, KEYS, reactor)
    elsewhere = await connected(redis_server.database(9))
    other = FleetRequests(elsewhere, KEYS, reactor)
    await requests.written(KERNEL)  # none under way
    asking = RequestRecord("r1", 1, 1.0, input_request={"prompt": "?", "password": False})
    requests.save(KERNEL, asking)
    await requests.written(KERNEL)
    assert (await other.load(KERNEL, "r1")) is not None
    requests.input_answered(KERNEL)
    await requests.written(KERNEL)
    found = await other.load(KERNEL, "r1")
    await elsewhere.disconnect()
    assert found is not None and found.input_request is None


@pytest_twisted.ensureDeferred
async def test_forged_or_moved_records_are_ignored(store: FleetStore) -> None:
    """A record written without the fleet's secret, or moved to another request, reads as none."""
    requests = FleetRequests(store, KEYS, reactor)
    requests.save(KERNEL, FULL)
    await settled()
    where = f"kernel-relay:requests:{KERNEL}"
    sealed = await store._call("HGET", where, "r1")
    await store._call("HSET", where, "moved", sealed)
    assert await requests.load(KERNEL, "moved") is None
    other = FleetRequests(store, FleetKeys("another-secret"), reactor)
    other.save(KERNEL, replace(FULL, msg_id="r9"))
    await settled()
    assert await requests.load(KERNEL, "r9") is None
    assert store.forged.count == 2


@pytest_twisted.ensureDeferred
async def test_a_kernels_end_ends_its_live_records_only_and_an_answer_ends_their_wait(
    store: FleetStore,
) -> None:
    """end_live ends what still runs, saying why (finished records stay); an input_reply clears prompts."""
    requests = FleetRequests(store, KEYS, reactor)
    running = RequestRecord("run", 3, 1.0)
    done = RequestRecord("done", 1, 0.5, status="ok", execution_count=2)
    requests.save(KERNEL, running)
    requests.save(KERNEL, done)
    await settled()
    requests.end_live(KERNEL, "kernel restarting")
    await settled()
    ended = await requests.load(KERNEL, "run")
    assert ended is not None and ended.ended == "kernel restarting" and ended.finished
    assert await requests.load(KERNEL, "done") == done
    asking = RequestRecord("ask", 4, 2.0, input_request={"prompt": "?", "password": False})
    requests.save(KERNEL, asking)
    await settled()
    requests.input_answered(KERNEL)
    await settled()
    assert await requests.load(KERNEL, "ask") == replace(asking, input_request=None)


@pytest_twisted.ensureDeferred
async def test_without_redis_a_save_is_logged_and_a_load_fails_clearly() -> None:
    """Redis away: saving does not raise (the request runs on), loading fails with FleetUnavailable."""
    store = FleetStore(RedisURL.parse("redis://127.0.0.1:9/0"), reactor, KEYS)
    requests = FleetRequests(store, KEYS, reactor)
    requests.save(KERNEL, FULL)
    requests.end_live(KERNEL, "kernel died")
    with pytest.raises(FleetUnavailable):
        await requests.load(KERNEL, "r1")


class CountingNumbering(SharedNumbering):
    """The fleet's numbering over the real store, counting the stream's reads and what each returned."""

    def __init__(self, store: FleetStore) -> None:
        super().__init__(store, reactor, keep=10_000)
        self.reads: list[int] = []

    def fetch(
        self, kernel_id: str, since: int, until: int | None = None, count: int | None = None
    ) -> Deferred[Fetched]:
        return super().fetch(kernel_id, since, until, count).addCallback(self._counted)

    def _counted(self, fetched: Fetched) -> Fetched:
        self.reads.append(len(fetched))
        return fetched


async def numbered(numbering: SharedNumbering, messages: list[KernelMessage]) -> None:
    """Each message numbered in the kernel's stream in Redis, in order, as the owner numbers them."""
    for message in messages:
        ready: Deferred[int | None] = Deferred()
        numbering.number(KERNEL, message.msg_id, Outgoing.of_kernel(message), ready.callback)
        assert await ready is not None


@pytest_twisted.ensureDeferred
async def test_stream_reads_are_bounded_by_an_end_and_a_count(store: FleetStore) -> None:
    """XRANGE's end id and COUNT bound a read of a kernel's stream in Redis."""
    numbering = SharedNumbering(store, reactor, keep=100)
    await numbered(numbering, [iopub("stream", "r1", name="stdout", text=str(n)) for n in range(9)])
    assert [seq for seq, _, _ in await store.stream_since(KERNEL, 2, until=6)] == [3, 4, 5, 6]
    assert [seq for seq, _, _ in await store.stream_since(KERNEL, 2, count=3)] == [3, 4, 5]
    assert [seq for seq, _, _ in await store.stream_since(KERNEL, 7)] == [8, 9]


@pytest_twisted.ensureDeferred
async def test_another_relays_read_stops_at_the_requests_end_and_pages_a_live_one(
    store: FleetStore,
) -> None:
    """Rebuilt from Redis, a finished request costs one page of the stream, a live one every page, once each."""
    numbering = CountingNumbering(store)
    records = FleetRequests(store, KEYS, reactor)
    records.save(KERNEL, RequestRecord("r1", 0, 1.0))
    records.save(KERNEL, RequestRecord("r2", 4, 2.0))
    await numbered(numbering, cell("r1", "a\n", count=1))
    flood = [iopub("stream", "r2", name="stdout", text=f"{n}\n") for n in range(PAGE + 10)]
    await numbered(numbering, flood)
    remote = RemoteRequests(RequestLedger(reactor), records, numbering, reactor)
    done = await remote.read(KERNEL, "r1")
    assert done is not None and done.outputs.items == [
        {"output_type": "stream", "name": "stdout", "text": "a\n"}
    ]
    assert numbering.reads == [PAGE]
    numbering.reads.clear()
    live = await remote.read(KERNEL, "r2")
    assert live is not None and live.live
    assert live.outputs.items[0]["text"] == "".join(f"{n}\n" for n in range(PAGE + 10))
    assert numbering.reads == [PAGE, 10]

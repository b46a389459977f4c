"""Looking up kernel ids clients name, in process: a kernel started elsewhere is found at once, at a bounded cost."""

from __future__ import annotations

import uuid
from typing import Any

from twisted.internet.defer import Deferred, DeferredList

from kernel_relay.fleet.finder import READ_INTERVAL
from kernel_relay.fleet.records import KernelRecord
from tests.fakes import result_of

from .test_fleet import Cluster


def count_reads(cluster: Cluster, name: str) -> dict[str, int]:
    """How many times the relay reads the fleet's ids and kernel records from now on."""
    store: Any = cluster.store(name)
    reads = {"kernel_ids": 0, "record": 0}
    for method in reads:
        passing = getattr(store, method)

        def counted(*args: Any, method: str = method, passing: Any = passing) -> Any:
            reads[method] += 1
            return passing(*args)

        setattr(store, method, counted)
    return reads


def started_unheard(cluster: Cluster, name: str) -> str:
    """A kernel started on relay ``name`` and registered, that no other relay heard of yet: its id."""
    kernel_id = str(uuid.uuid4())
    cluster.kernels[name].start(kernel_id)
    store: Any = cluster.store(name)
    about = result_of(cluster.kernels[name].describe(kernel_id))
    result_of(store.put_record(kernel_id, KernelRecord(owner=name, spec="python3", about=about)))
    return kernel_id


def test_a_flood_of_unknown_ids_costs_redis_one_read_per_interval_and_a_real_kernel_is_still_found() -> (
    None
):
    """500 look-ups of ids no kernel has, with one of a kernel started elsewhere among them: Redis is read a
    bounded number of times (no record of an unknown id is read), and the real kernel is served at once."""
    cluster = Cluster()
    cluster.start("A")
    b = cluster.start("B")
    real = started_unheard(cluster, "A")
    reads = count_reads(cluster, "B")
    looked: list[Deferred[None]] = [b.find(str(uuid.uuid4())) for _ in range(250)]
    looked.append(b.find(real))
    looked += [b.find(str(uuid.uuid4())) for _ in range(250)]
    cluster.advance(0.1)
    assert all(d.called for d in looked)
    assert cluster.kernels["B"].is_guest(real)
    assert reads == {"kernel_ids": 1, "record": 1}, reads
    cluster.stop_all()


def test_look_ups_spread_over_a_second_read_the_ids_at_most_once_per_interval() -> None:
    """A client naming a new unknown id every 20 ms for a second: at most one read of the ids per interval."""
    cluster = Cluster()
    b = cluster.start("B")
    reads = count_reads(cluster, "B")
    looked = []
    for _ in range(50):
        looked.append(b.find(str(uuid.uuid4())))
        cluster.advance(0.02, step=0.02)
    cluster.advance(READ_INTERVAL)
    result_of(DeferredList(looked))
    assert reads["record"] == 0
    assert 1 <= reads["kernel_ids"] <= 1 / READ_INTERVAL + 2, reads
    cluster.stop_all()


def test_an_id_that_cannot_be_a_kernels_costs_no_read() -> None:
    """An id too long or with characters no kernel id has is refused without asking Redis."""
    cluster = Cluster()
    b = cluster.start("B")
    reads = count_reads(cluster, "B")
    for bad in ("x" * 65, "../../etc", "a b", ""):
        assert result_of(b.find(bad)) is None
    assert reads == {"kernel_ids": 0, "record": 0}
    cluster.stop_all()

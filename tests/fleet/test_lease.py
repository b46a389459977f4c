"""A fleet whose Redis is out of memory, in process: leases kept, spawns refused with the reason, said once."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from twisted.logger import formatEvent, globalLogPublisher

from kernel_relay.fleet.connection import RedisFull
from kernel_relay.fleet.lease import QUIET_RENEWALS
from tests.fakes import failure_of, result_of

from .test_fleet import LEASE, Cluster


@pytest.fixture
def logged() -> Iterator[list[str]]:
    """The log lines written during a test."""
    lines: list[str] = []

    def observe(event: dict[str, Any]) -> None:
        lines.append(formatEvent(event) or "")

    globalLogPublisher.addObserver(observe)
    try:
        yield lines
    finally:
        globalLogPublisher.removeObserver(observe)


def test_a_full_redis_keeps_every_lease_and_refuses_spawns_with_its_reason(
    logged: list[str],
) -> None:
    """Redis out of memory for many leases: no lease lapses (nobody adopts), spawns fail with Redis's OOM, each
    relay says so once (and in its view), and says it has room again once writes pass for a few renewals."""
    cluster = Cluster()
    a, b = cluster.start("A"), cluster.start("B")
    cluster.spawn("A", "k1")
    cluster.redis.full = True
    cluster.advance(LEASE * 4)
    assert set(cluster.redis.live_leases()) == {"A", "B"}
    assert (
        cluster.owner("k1") == "A" and b.guests.adopted == 0 and cluster.kernels["B"].dropped == []
    )
    assert "OOM" in str(failure_of(a.spawning.reserve("r", None), RedisFull).value)
    assert a.fleet_view()["redis_full"] and b.fleet_view()["redis_full"] and a.redis_up
    full = [line for line in logged if "no kernel can start" in line]
    assert len(full) == 2 and all("out of memory" in line for line in full), full
    assert not [line for line in logged if "Could not renew" in line or "is gone" in line]
    cluster.redis.full = False
    cluster.advance(LEASE / 3 * (QUIET_RENEWALS - 1))
    assert a.fleet_view()["redis_full"], "room again after a single quiet renewal"
    cluster.advance(LEASE)
    assert not a.fleet_view()["redis_full"] and not b.fleet_view()["redis_full"]
    assert result_of(a.spawning.reserve("r", None)) is True
    assert len([line for line in logged if "has room again" in line]) == 2
    cluster.stop_all()


def test_a_redis_at_its_limit_is_not_said_full_and_back_at_every_renewal(
    logged: list[str],
) -> None:
    """A write refused now and then (Redis at its limit): Redis counts as full throughout, logged once."""
    cluster = Cluster()
    a = cluster.start("A")
    for _ in range(6):
        cluster.redis.full = True
        cluster.advance(LEASE / 3)
        cluster.redis.full = False
        cluster.advance(LEASE / 3)
        assert a.fleet_view()["redis_full"]
    assert len([line for line in logged if "no kernel can start" in line]) == 1
    assert not [line for line in logged if "has room again" in line]
    cluster.stop_all()

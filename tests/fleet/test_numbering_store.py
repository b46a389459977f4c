"""
The fleet's numbering scripts against a real redis-server, across what breaks numbering: Redis restarting
empty, a relay frozen meanwhile, relays that numbered alone (one number per message, whatever happened).
"""

from __future__ import annotations

import pytest_twisted

from kernel_relay.fleet.numbering import OWNER_FIRST, TOO_LATE
from kernel_relay.fleet.store import FleetStore
from tests.fleet.test_store import number, redis_server, stores

__all__ = ["redis_server", "stores"]


async def numbered_one_to_five(store: FleetStore) -> None:
    for n in range(1, 6):
        assert await number(store, f"m{n}", b"out", float(n), after=n - 1) == n


@pytest_twisted.ensureDeferred
async def test_a_relay_frozen_across_a_redis_restart_is_refused_rather_than_given_a_second_number(
    stores: list[FleetStore],
) -> None:
    """A restarts the numbering after Redis lost it; B, frozen since number 2, submits m3 (numbered 3 before)."""
    a, b = stores
    await numbered_one_to_five(a)
    await a._call("FLUSHDB")  # Redis restarted empty
    assert await number(a, "m6", b"out", 6.0, after=5) == 6
    assert await number(b, "m3", b"out", 3.0, after=2, owner=False) == TOO_LATE
    # The same when B still takes itself for the owner (its lease lapsed while it was frozen).
    assert await number(b, "m4", b"out", 4.0, after=3) == TOO_LATE
    assert await number(b, "m7", b"out", 7.0, after=6, owner=False) == 7


@pytest_twisted.ensureDeferred
async def test_numbers_a_relay_gave_alone_are_not_given_to_its_messages_again_elsewhere(
    stores: list[FleetStore],
) -> None:
    """B numbered m6..m10 alone (Redis away for it) and goes on; A, slower, submits m6: refused, not 12."""
    a, b = stores
    await numbered_one_to_five(a)
    assert await number(b, "m11", b"out", 11.0, after=10, owner=False) == 11
    assert await number(a, "m6", b"out", 6.0, after=5) == TOO_LATE
    assert await number(a, "m11", b"out", 11.0, after=5) == 11  # known: the same number
    assert await number(a, "m12", b"out", 12.0, after=11) == 12
    # Trimming the stream's oldest (1..4) does not lower the floor below what B gave alone.
    assert await number(a, "m13", b"out", 13.0, after=12, keep=3) == 13
    assert await number(a, "m7", b"out", 7.0, after=6) == TOO_LATE


@pytest_twisted.ensureDeferred
async def test_a_bump_moves_the_floor_too_and_never_starts_a_lost_numbering(
    stores: list[FleetStore],
) -> None:
    """A bump past numbers Redis never saw refuses who had not seen them; on a lost numbering it waits for the owner."""
    a, b = stores
    await numbered_one_to_five(a)
    assert await b.bump("k", 9) == 9
    assert await number(a, "m6", b"out", 6.0, after=5) == TOO_LATE
    await a._call("FLUSHDB")
    await b.bump("k", 12)
    assert await number(b, "m13", b"out", 13.0, after=12, owner=False) == OWNER_FIRST

"""
The fleet's numbering scripts against a real redis-server, across what breaks numbering: Redis restarting
empty, a relay frozen meanwhile, relays that numbered alone (one number per message, whatever happened).
"""

from __future__ import annotations

from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred, fail
from twisted.internet.task import Clock, deferLater

from kernel_relay.fleet.connection import RedisFull
from kernel_relay.fleet.numbering import (
    HISTORY_WAIT,
    OWNER_FIRST,
    OWNER_RETRY,
    PREVIOUS_FIRST,
    TOO_LATE,
    SharedNumbering,
)
from kernel_relay.fleet.store import FleetStore, FleetUnavailable
from kernel_relay.relay.payload import Outgoing
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


class Reconnecting:
    """A relay's store across a Redis restart: away (calls fail at once) until the test brings it back, and
    ``failing`` calls that fail while its connection is up (a connection lost and found again meanwhile)."""

    def __init__(self, store: FleetStore) -> None:
        self.store = store
        self.away = False
        self.failing = 0
        self.late = False
        """The next call goes to Redis 20 ms late, after calls made meanwhile."""
        self.full = False
        self.passing: set[str] = set()
        """While ``full``, the messages whose numbering Redis lets through (a write passes whenever a buffer
        is freed); the others are refused (out of memory), a moment later."""

    @property
    def up(self) -> bool:
        return not self.away and self.store.up

    def number(self, *args: Any) -> Deferred[int]:
        if self.full and args[1] not in self.passing:
            # The script reads before it writes: a message whose predecessor is not numbered is answered.
            previous = args[9] if len(args) > 9 else ""
            d = self.store._call("HEXISTS", f"kernel-relay:seen:{args[0]}", previous or "-")
            return d.addCallback(
                lambda seen: PREVIOUS_FIRST if previous and not int(seen) else self._refused()
            )
        if self.failing and not self.away:
            self.failing -= 1
            return fail(FleetUnavailable("a dead connection, discarded"))
        return self._call(self.store.number, *args)

    def bump(self, *args: Any) -> Deferred[int]:
        return (
            deferLater(reactor, 0, self._refused)
            if self.full
            else self._call(self.store.bump, *args)
        )

    def _refused(self) -> int:
        raise RedisFull("OOM command not allowed when used memory > 'maxmemory'")

    def _call(self, call: Any, *args: Any) -> Deferred[int]:
        if self.away:
            return fail(FleetUnavailable("Redis is away"))
        if self.late:
            self.late = False
            return deferLater(reactor, 0.02, call, *args)
        return call(*args)  # type: ignore[no-any-return]


def two_relays(
    stores: list[FleetStore], owners: tuple[bool, ...] = (True, False)
) -> tuple[Clock, list[tuple[SharedNumbering, Reconnecting, list[int | None]]]]:
    """Relay A (the kernel's owner) and relay B (and C, ... as ``owners`` says), each numbering through a
    connection to one Redis (C shares B's)."""
    clock = Clock()
    relays = []
    for n, owner in enumerate(owners):
        flaky = Reconnecting(stores[min(n, 1)])
        shared = SharedNumbering(flaky, clock, keep=100, owns=lambda kernel_id, o=owner: o)  # type: ignore[arg-type]
        relays.append((shared, flaky, []))
    return clock, relays


def give(relay: tuple[SharedNumbering, Reconnecting, list[int | None]], *msg_ids: str) -> None:
    shared, _, got = relay
    for msg_id in msg_ids:
        shared.number("k", msg_id, Outgoing((b"{}", b"{}", b"{}", b"{}"), [], "iopub"), got.append)


async def answered(clock: Clock, rounds: int = 5) -> None:
    """Let Redis answer and the relays ask again (their retries run on ``clock``)."""
    for _ in range(rounds):
        await deferLater(reactor, 0.03, lambda: None)
        clock.advance(OWNER_RETRY)


@pytest.mark.parametrize("late", [False, True], ids=["registration-in-time", "registration-late"])
@pytest_twisted.ensureDeferred
async def test_live_output_after_redis_restarted_empty_reaches_every_relay_once_numbered(
    stores: list[FleetStore], late: bool
) -> None:
    """Both relays numbered alone while Redis was away; once it is back (empty), A's first submission of the
    new cell fails in the reconnect while B's wait for A: every message reaches both, under one number (also
    when A's first call once back, the registration of what it gave alone, is slow to reach Redis)."""
    clock, (a, b) = two_relays(stores)
    a[1].away = b[1].away = True
    give(a, "m1", "m2", "m3")
    give(b, "m1", "m2", "m3")
    await stores[0]._call("FLUSHDB")  # Redis restarted empty
    b[1].away = False
    give(b, "busy", "idle")
    await answered(clock, 1)
    give(a, "busy")  # A's connection is not back yet: numbered alone
    a[1].away, a[1].late = False, late
    give(a, "idle")
    await answered(clock)
    assert a[2] == b[2] == [1, 2, 3, 4, 5]


@pytest_twisted.ensureDeferred
async def test_a_submission_failed_while_redis_is_up_keeps_the_fleets_numbers_in_the_kernels_order(
    stores: list[FleetStore],
) -> None:
    """A's submission of a message fails once (its connection up), the next one succeeds: neither relay drops
    a live message as a gap, and both give each message the same number, in the kernel's order."""
    clock, (a, b) = two_relays(stores)
    give(a, "m1")
    give(b, "m1")
    await answered(clock, 1)
    a[1].failing = 1
    give(a, "busy", "idle")
    give(b, "busy", "idle")
    await answered(clock)
    assert a[2] == b[2] == [1, 2, 3]


@pytest_twisted.ensureDeferred
async def test_numbers_a_relay_gave_alone_and_registered_are_the_fleets_for_those_messages(
    stores: list[FleetStore],
) -> None:
    """B numbered m6..m8 alone and registers them: A's submissions of them get B's numbers, and A's next
    message, submitted with the last number A had before them, is numbered after them, not refused."""
    a, b = stores
    await numbered_one_to_five(a)
    assert await b.bump("k", 8, [("m6", 6), ("m7", 7), ("m8", 8)], False, 8.0) == 8
    assert [await number(a, f"m{n}", b"out", float(n), after=5) for n in (6, 7, 8)] == [6, 7, 8]
    assert await number(a, "m9", b"out", 9.0, after=5) == 9
    # Its stream has an entry without a message for each: a gap for a client resuming elsewhere.
    assert [(seq, data) for seq, _, data in await a.stream_since("k", 5)] == [
        (6, None),
        (7, None),
        (8, None),
        (9, b"out"),
    ]


@pytest_twisted.ensureDeferred
async def test_a_message_is_numbered_only_after_the_one_before_it(stores: list[FleetStore]) -> None:
    """A submission naming a predecessor Redis has not numbered waits (-3); once it is numbered, it follows."""
    a, b = stores
    d = a.number("k", "x2", b"out", 2.0, 100, 1 << 40, 1e9, 0, True, "x1")
    assert await d == PREVIOUS_FIRST
    assert await number(b, "x1", b"out", 1.0, after=0) == 1
    assert await a.number("k", "x2", b"out", 2.0, 100, 1 << 40, 1e9, 0, True, "x1") == 2


@pytest_twisted.ensureDeferred
async def test_a_write_a_full_redis_lets_through_is_numbered_past_what_the_relays_gave_alone(
    stores: list[FleetStore],
) -> None:
    """Redis out of memory refuses x1..x3 (numbered alone, alike on both relays) but lets x4 through, sent
    while they were on their way: it is numbered after them, not given a number they have here."""
    clock, (a, b) = two_relays(stores)
    give(a, "m1")
    give(b, "m1")
    await answered(clock, 1)
    for _, store, _ in (a, b):
        store.full, store.passing = True, {"x4"}
    give(a, "x1", "x2", "x3", "x4")
    give(b, "x1", "x2", "x3", "x4")
    await answered(clock)
    assert a[2] == b[2] == [1, 2, 3, 4, 5]


@pytest_twisted.ensureDeferred
async def test_under_a_full_redis_output_goes_on_at_redis_pace_not_a_retry_per_message(
    stores: list[FleetStore],
) -> None:
    """Redis out of memory: a burst of 100 messages is numbered alone as fast as Redis refuses them, none
    waiting for a retry (the relay's retries run on a clock this test never moves)."""
    clock, (a, _) = two_relays(stores)
    give(a, "m1")
    await answered(clock, 1)
    a[1].full = True
    give(a, *(f"x{n}" for n in range(100)))
    for _ in range(200):
        if len(a[2]) == 101:
            break
        await deferLater(reactor, 0.01, lambda: None)
    assert a[2] == list(range(1, 102))


@pytest_twisted.ensureDeferred
async def test_a_new_relays_first_message_is_numbered_after_what_the_older_relays_saw_before_it(
    stores: list[FleetStore],
) -> None:
    """C starts while A (the owner) and B have m3 and m4 on their way (A's late): C's first message, a
    welcome the others see after m4, reaches Redis first, yet gets 5 everywhere and nobody drops a gap."""
    clock, (a, b, c) = two_relays(stores, (True, False, False))
    give(a, "m1", "m2")
    give(b, "m1", "m2")
    await answered(clock, 1)
    a[1].late = True
    give(c, "welcome")
    give(b, "m3", "m4", "welcome")
    give(a, "m3", "m4", "welcome")
    await answered(clock)
    assert a[2] == b[2] == [1, 2, 3, 4, 5]
    assert c[2] == [5]
    assert a[0].too_late == b[0].too_late == 0


@pytest_twisted.ensureDeferred
async def test_a_new_relays_first_message_no_older_relay_numbers_is_numbered_after_the_wait(
    stores: list[FleetStore],
) -> None:
    """C's first messages, which no relay with history numbers (A is gone), wait a while for one, then
    are numbered past the fleet's count, the second after the first, none by C alone (not from 0)."""
    clock, (a, c) = two_relays(stores, (True, False))
    give(a, "m1", "m2")
    await answered(clock, 1)
    give(c, "welcome", "out")
    await answered(clock)
    assert c[2] == []
    clock.advance(HISTORY_WAIT)
    await answered(clock)
    assert c[2] == [3, 4]
    assert c[0].local_numbers == 0

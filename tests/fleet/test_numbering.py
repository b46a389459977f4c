"""The fleet's shared iopub numbering, on a store whose answers the test gives (in any order)."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock

from kernel_relay.fleet.numbering import SharedNumbering, pack, unpack
from kernel_relay.fleet.store import FleetUnavailable
from kernel_relay.relay.payload import Outgoing


class ScriptedStore:
    """Records each numbering call and lets the test answer it; ``up`` False fails calls at once."""

    def __init__(self) -> None:
        self.up = True
        self.full = False
        self.calls: list[tuple[str, str, Deferred[int]]] = []
        self.afters: list[int] = []
        self.bumps: list[tuple[str, int]] = []

    def number(self, kernel_id: str, msg_id: str, *args: Any) -> Deferred[int]:
        self.afters.append(args[5] if len(args) > 5 else -9)
        if not self.up or self.full:
            return fail(FleetUnavailable("Redis is away"))
        d: Deferred[int] = Deferred()
        self.calls.append((kernel_id, msg_id, d))
        return d

    def bump(self, kernel_id: str, seq: int, *registered: Any) -> Deferred[int]:
        """Moves the fleet's count past ``seq`` (answered at once, as Redis would)."""
        self.bumps.append((kernel_id, seq))
        return succeed(seq)


def message(text: str) -> Outgoing:
    return Outgoing((b"{}", b"{}", b"{}", f'{{"text":"{text}"}}'.encode()), [], "iopub")


def numbering() -> tuple[SharedNumbering, ScriptedStore, list[tuple[str, int]]]:
    store = ScriptedStore()
    shared = SharedNumbering(store, Clock(), keep=100)  # type: ignore[arg-type]
    return shared, store, []


def test_numbers_reach_the_core_in_the_kernels_order_whatever_the_order_of_answers() -> None:
    shared, store, got = numbering()
    for name in "abc":
        shared.number("k", name, message(name), lambda seq, name=name: got.append((name, seq)))
    store.calls[2][2].callback(7)
    store.calls[1][2].callback(6)
    assert got == []
    store.calls[0][2].callback(5)
    assert got == [("a", 5), ("b", 6), ("c", 7)]


def test_what_the_relay_says_itself_comes_after_what_is_pending_and_takes_no_number() -> None:
    shared, store, got = numbering()
    shared.after("k", lambda seq: got.append(("idle kernel", seq)))
    shared.number("k", "a", message("a"), lambda seq: got.append(("a", seq)))
    shared.after("k", lambda seq: got.append(("status", seq)))
    assert got == [("idle kernel", 0)]
    store.calls[0][2].callback(41)
    assert got == [("idle kernel", 0), ("a", 41), ("status", 41)]


def test_while_redis_is_away_the_relay_numbers_on_alone_then_moves_the_fleet_past_it() -> None:
    shared, store, got = numbering()
    shared.number("k", "a", message("a"), lambda seq: got.append(("a", seq)))
    store.calls[0][2].callback(10)
    store.up = False
    shared.number("k", "b", message("b"), lambda seq: got.append(("b", seq)))
    shared.number("k", "c", message("c"), lambda seq: got.append(("c", seq)))
    assert got == [("a", 10), ("b", 11), ("c", 12)]
    assert shared.local_numbers == 2
    store.up = True
    shared.number("k", "d", message("d"), lambda seq: got.append(("d", seq)))
    # The fleet's counter is moved past 12 before d is numbered (both go out on one connection, in order).
    assert store.bumps == [("k", 12)]
    store.calls[-1][2].callback(13)
    assert got[-1] == ("d", 13)


def test_an_answer_behind_what_the_relay_gave_alone_is_not_given_twice() -> None:
    shared, store, got = numbering()
    store.up = False
    shared.number("k", "a", message("a"), lambda seq: got.append(("a", seq)))
    store.up = True
    shared.number("k", "b", message("b"), lambda seq: got.append(("b", seq)))
    store.calls[0][2].callback(1)  # another relay's number, from before this relay's own
    assert got == [("a", 1), ("b", None)]  # a gap: b's number is 1 in the fleet, and 1 was a's here


def test_kernels_are_numbered_apart() -> None:
    shared, store, got = numbering()
    shared.number("k1", "a", message("a"), lambda seq: got.append(("k1", seq)))
    shared.number("k2", "b", message("b"), lambda seq: got.append(("k2", seq)))
    store.calls[1][2].callback(1)
    assert got == [("k2", 1)]
    shared.forget("k1")
    store.calls[0][2].callback(3)  # a kernel forgotten meanwhile: its late answer is harmless
    assert ("k2", 1) in got


@given(
    parts=st.lists(st.binary(max_size=64), min_size=4, max_size=4),
    buffers=st.lists(st.binary(max_size=64), max_size=3),
)
def test_pack_and_unpack_keep_every_byte(parts: list[bytes], buffers: list[bytes]) -> None:
    original = Outgoing((parts[0], parts[1], parts[2], parts[3]), buffers, "iopub")
    again = unpack(pack(original))
    assert [bytes(p) for p in again.parts] == parts
    assert [bytes(b) for b in again.buffers] == buffers
    assert again.channel == "iopub"


def test_unpack_refuses_what_pack_did_not_make() -> None:
    import pytest

    for junk in (b"", b"KR1", b"XX1\x00\x04", pack(message("a"))[:-1]):
        with pytest.raises((ValueError, Exception)):
            unpack(junk)


def test_a_flood_keeps_few_calls_unanswered_and_loses_no_order() -> None:
    from kernel_relay.fleet.numbering import MAX_IN_FLIGHT

    shared, store, got = numbering()
    for n in range(MAX_IN_FLIGHT * 3):
        shared.number("k", f"m{n}", message(str(n)), lambda seq: got.append(seq))
    assert len(store.calls) == MAX_IN_FLIGHT == shared.in_flight
    answered = 0
    while answered < len(store.calls):
        store.calls[answered][2].callback(answered + 1)
        answered += 1
        assert shared.in_flight <= MAX_IN_FLIGHT
    assert got == list(range(1, MAX_IN_FLIGHT * 3 + 1))
    assert shared.in_flight == 0


def test_one_kernels_flood_never_holds_another_kernels_message_back() -> None:
    """Kernel A floods 50,000 messages; kernel B's one message goes to Redis at once and is delivered on its answer."""
    shared, store, got = numbering()
    for n in range(50_000):
        shared.number("A", f"a{n}", message("a"), lambda seq: None)
    shared.number("B", "b", message("1 + 1"), lambda seq: got.append(("B", seq)))
    [call] = [c for c in store.calls if c[0] == "B"]
    call[2].callback(1)
    assert got == [("B", 1)]


def test_a_message_the_fleet_numbered_too_long_ago_gets_no_second_number() -> None:
    """Redis refuses a late message (-1): the core gets None (a gap is told), and numbering goes on."""
    from kernel_relay.fleet.numbering import TOO_LATE

    shared, store, got = numbering()
    shared.number("k", "a", message("a"), lambda seq: got.append(("a", seq)))
    shared.number("k", "b", message("b"), lambda seq: got.append(("b", seq)))
    store.calls[0][2].callback(TOO_LATE)
    store.calls[1][2].callback(120)
    assert got == [("a", None), ("b", 120)]
    assert shared.too_late == 1 and shared.local_numbers == 0


def test_each_submission_carries_the_relays_last_number_when_the_message_came() -> None:
    """What Redis checks a late message against: the last number this relay had when the message came."""
    store = ScriptedStore()
    shared = SharedNumbering(store, Clock(), keep=100)  # type: ignore[arg-type]
    shared.number("k", "a", message("a"), lambda seq: None)
    store.calls[0][2].callback(7)
    shared.number("k", "b", message("b"), lambda seq: None)
    assert store.afters == [-1, 7]


def test_a_relay_waits_for_the_owner_to_start_a_lost_numbering_again() -> None:
    """Redis lost the kernel's numbering (-2: the owner starts it again): the relay asks again, then delivers."""
    from kernel_relay.fleet.numbering import OWNER_FIRST, OWNER_RETRY

    clock = Clock()
    store = ScriptedStore()
    shared = SharedNumbering(store, clock, keep=100, owns=lambda kernel_id: False)  # type: ignore[arg-type]
    got: list[int | None] = []
    shared.number("k", "a", message("a"), got.append)
    store.calls[0][2].callback(OWNER_FIRST)
    assert got == [] and len(store.calls) == 1
    clock.advance(OWNER_RETRY)
    assert len(store.calls) == 2
    store.calls[1][2].callback(31)
    assert got == [31] and shared.local_numbers == 0


def test_a_full_redis_is_not_asked_to_move_past_the_relay_at_every_message() -> None:
    """While Redis refuses writes (out of memory, its connection up) the relay numbers alone without a bump per
    message; once Redis has room, one bump, past the last number it gave."""
    shared, store, got = numbering()
    store.full = True
    for name in "abcde":
        shared.number("k", name, message(name), lambda seq, name=name: got.append((name, seq)))
    assert got == [("a", 1), ("b", 2), ("c", 3), ("d", 4), ("e", 5)] and store.bumps == []
    store.full = False
    shared.number("k", "f", message("f"), lambda seq: got.append(("f", seq)))
    assert store.bumps == [("k", 5)]


def test_a_fleet_behind_what_the_relay_gave_alone_gives_no_second_number_and_no_flapping() -> None:
    """
    Redis, connected again, answers numbers at or below what this relay gave alone (as for a relay frozen across
    a Redis restart): each such message is a gap, never a second number; one warning, one bump, one "again",
    not an "alone / back" pair per message.
    """
    from twisted.logger import capturedLogs, formatEvent

    shared, store, got = numbering()
    with capturedLogs() as events:
        store.up = False
        for name in "abc":
            shared.number("k", name, message(name), lambda seq, name=name: got.append((name, seq)))
        store.up = True
        for fleet, name in enumerate("defg", start=1):
            shared.number("k", name, message(name), lambda seq, name=name: got.append((name, seq)))
            store.calls[-1][2].callback(fleet)
    assert got == [("a", 1), ("b", 2), ("c", 3), ("d", None), ("e", None), ("f", None), ("g", 4)]
    assert store.bumps == [("k", 3)]
    ours = ("kernel_relay.fleet.numbering", "kernel_relay.fleet.alone")
    told = [formatEvent(e) for e in events if e["log_namespace"] in ours]
    assert len(told) == 3, told
    assert "alone from 1: Redis cannot be reached" in told[0]
    assert "moves past 3" in told[1] and "again from 4" in told[2]
    assert shared.local_numbers == 3 and shared.too_late == 3


def test_a_backlog_the_fleet_refuses_is_said_once_not_per_message() -> None:
    """A relay thawed after a Redis restart: its backlog is refused (-1) message by message, logged once."""
    from twisted.logger import capturedLogs

    from kernel_relay.fleet.numbering import TOO_LATE

    shared, store, got = numbering()
    with capturedLogs() as events:
        for name in "abc":
            shared.number("k", name, message(name), lambda seq, name=name: got.append((name, seq)))
            store.calls[-1][2].callback(TOO_LATE)
        shared.number("k", "d", message("d"), lambda seq: got.append(("d", seq)))
        store.calls[-1][2].callback(9)
    assert got == [("a", None), ("b", None), ("c", None), ("d", 9)]
    assert len([e for e in events if e["log_level"].name == "warn"]) == 1


def test_numbers_given_alone_are_registered_once_redis_is_back_without_waiting_for_more_output() -> (
    None
):
    """The kernel's last message (an idle) was numbered alone: once Redis answers, the relay registers it
    with the fleet on its own, msg_id and number, rather than at a next message that may never come."""
    from kernel_relay.fleet.alone import CATCH_UP

    clock, store = Clock(), ScriptedStore()
    registered: list[tuple[Any, ...]] = []
    store.bump = lambda *args: registered.append(args) or succeed(args[1])  # type: ignore[method-assign]
    shared = SharedNumbering(store, clock, keep=100)  # type: ignore[arg-type]
    store.up = False
    shared.number("k", "idle", message("idle"), lambda seq: None)
    clock.advance(CATCH_UP)
    assert registered == []
    store.up = True
    clock.advance(CATCH_UP)
    assert [args[:4] for args in registered] == [("k", 1, [("idle", 1)], True)]
    clock.advance(CATCH_UP * 4)
    assert len(registered) == 1

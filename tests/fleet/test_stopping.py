"""
The last relay to stop, in process: what is handed to it while it prepares to stop, or after, is stopped with
it, and so are the kernels of dead relays of its machine that Redis, out of memory, does not let it take over.
"""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.defer import Deferred, fail

from kernel_relay.fleet import Fleet
from kernel_relay.fleet.connection import RedisFull
from kernel_relay.fleet.records import KernelRecord
from tests.fakes import result_of

from .test_fleet import LEASE, Cluster


def gate(obj: Any, name: str, kernel_id: str) -> Deferred[None]:
    """Hold ``obj.name(kernel_id, ...)`` until the returned Deferred fires (other kernels pass at once)."""
    held: Deferred[None] = Deferred()
    passing = getattr(obj, name)

    def gated(called: str, *args: Any) -> Any:
        if called != kernel_id:
            return passing(called, *args)
        return held.addCallback(lambda _: passing(called, *args))

    setattr(obj, name, gated)
    return held


def stop_like_the_kernels_service(fleet: Fleet, kernels: Any) -> Deferred[list[str]]:
    """prepare_stop, then stop the kernels the relay owns by then (what the kernels service does): their ids."""

    def stop_owned(_: object) -> list[str]:
        owned = [kernel.id for kernel in kernels.owned()]
        if not fleet.hand_off():
            for kernel_id in owned:
                kernels.stopped(kernel_id)
        return owned

    return fleet.prepare_stop().addCallback(stop_owned)


@pytest.mark.parametrize(
    "read_first", [True, False], ids=["adoption-begun-meanwhile", "sync-under-way"]
)
def test_a_kernel_handed_over_while_the_last_relay_prepares_to_stop_is_stopped_with_it(
    read_first: bool,
) -> None:
    """
    B stops as C hands its kernels over, while B's sync is still reading a kernel it had not heard of (C's
    k2): B waits for that sync and every adoption begun meanwhile (not only those under way when it looked),
    whichever ends first, so no kernel is left running without a relay.
    """
    cluster = Cluster()
    b = cluster.start("B")
    c = cluster.start("C")
    cluster.spawn("C", "k1")
    # C started k2 and registered it; B missed the news (it reads it at its next sync).
    cluster.kernels["C"].start("k2")
    about = result_of(cluster.kernels["C"].describe("k2"))
    result_of(
        cluster.store("C").put_record("k2", KernelRecord(owner="C", spec="python3", about=about))
    )
    reading = gate(cluster.store("B"), "record", "k2")
    adopting = gate(cluster.kernels["B"], "adopt", "k1")
    adopting_k2 = gate(cluster.kernels["B"], "adopt", "k2")
    cluster.advance(1.0)  # B's sync begins, and waits for k2's record
    cluster.freeze("C")  # what B tells it now, it never reads: it is stopping
    result_of(c.prepare_stop())
    assert c.hand_off()
    cluster.advance(0.2)  # B reads that C leaves
    assert b.state.others == {}
    stopping = stop_like_the_kernels_service(b, cluster.kernels["B"])
    assert not stopping.called
    for step in (reading, adopting) if read_first else (adopting, reading):
        step.callback(None)
    adopting_k2.callback(None)
    cluster.advance(0.5)
    assert sorted(result_of(stopping)) == ["k1", "k2"]
    b.leave()
    assert cluster.machine.running == set(), "a kernel was left running with no relay"
    cluster.stop_all()


def test_two_relays_that_stop_together_do_not_both_hand_their_kernels_over() -> None:
    """
    B and C stop at the same moment, each seeing the other's lease: not both leave their kernels to the other
    (each would then stop with none, and the kernels run on with no relay); every kernel is stopped.
    """
    cluster = Cluster()
    b, c = cluster.start("B"), cluster.start("C")
    cluster.spawn("B", "k1")
    cluster.spawn("C", "k2")
    releasing = gate(cluster.store("B"), "release", "B")  # B's lease ends a moment after it decides
    stopping = [
        stop_like_the_kernels_service(fleet, cluster.kernels[name])
        for name, fleet in (("B", b), ("C", c))
    ]
    releasing.callback(None)
    cluster.advance(1.0)
    for each in stopping:
        result_of(each)
    for fleet in (b, c):
        fleet.leave()
    cluster.advance(1.0)
    assert cluster.machine.running == set(), "kernels left running with no relay"
    cluster.stop_all()


def refuse_writes_of(cluster: Cluster, name: str) -> None:
    """This relay's lease writes are refused for want of memory (its lease is extended, as Redis allows)."""
    cluster.store(name).renew = lambda *args: fail(RedisFull("OOM command not allowed"))  # type: ignore[method-assign]


def test_a_kernel_handed_over_after_the_last_relay_prepared_its_stop_is_stopped() -> None:
    """
    A prepares to stop as the last relay but its lease cannot say so (the write refused); C, started
    meanwhile, takes A for a live relay and leaves its kernel to A after A's kernels were counted: A adopts
    nothing more, and stops the handed kernel as it leaves (none runs with no relay).
    """
    cluster = Cluster()
    a = cluster.start("A")
    cluster.spawn("A", "k1")
    refuse_writes_of(cluster, "A")
    assert result_of(stop_like_the_kernels_service(a, cluster.kernels["A"])) == ["k1"]
    assert not a.hand_off()
    c = cluster.start("C")
    cluster.spawn("C", "k2")
    assert cluster.kernels["A"].is_guest("k2")
    result_of(stop_like_the_kernels_service(c, cluster.kernels["C"]))
    assert c.hand_off(), "C left k2 to A, whose lease does not say it stops"
    cluster.advance(1.0)  # A hears that C leaves
    assert not cluster.kernels["A"].owns("k2"), "adopted after A's kernels were counted"
    for fleet in (c, a):
        fleet.leave()
    cluster.advance(0.5)
    assert cluster.machine.running == set(), "a kernel was left running with no relay"
    cluster.stop_all()


def test_the_last_relay_stops_a_dead_relays_kernels_when_redis_refuses_the_take_over() -> None:
    """
    Redis is out of memory and B's lease has lapsed (B frozen, as if dead): A cannot take B's kernel over
    (the claim is a write), yet A, stopping last, stops it from this machine's list.
    """
    cluster = Cluster()
    a = cluster.start("A")
    cluster.start("B")
    cluster.spawn("B", "k2")
    cluster.freeze("B")
    cluster.redis.full = True
    cluster.advance(LEASE + 1)
    assert "B" not in a.others and not cluster.kernels["A"].owns("k2")
    result_of(stop_like_the_kernels_service(a, cluster.kernels["A"]))
    a.leave()
    cluster.advance(0.5)
    assert cluster.machine.running == set(), "a dead relay's kernel was left running"
    cluster.stop_all()

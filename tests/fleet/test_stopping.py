"""The last relay to stop, in process: what is handed to it while it prepares to stop is stopped with it."""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.defer import Deferred

from kernel_relay.fleet import Fleet
from kernel_relay.fleet.records import KernelRecord
from tests.fakes import result_of

from .test_fleet import Cluster


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

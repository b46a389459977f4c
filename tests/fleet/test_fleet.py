"""The fleet's decisions, in process: relays on one fake Redis, each on a clock of its own that may stop."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from twisted.internet.testing import MemoryReactorClock

from kernel_relay.auth import TokenAuth
from kernel_relay.fleet import Fleet
from kernel_relay.fleet.capacity import JOIN_WAIT
from kernel_relay.fleet.ledger import Ledger
from kernel_relay.fleet.state import Membership
from kernel_relay.fleet.store import FleetUnavailable
from kernel_relay.kernels import LOOKUP_WAIT, KernelLaunchError
from tests.fakes import failure_of, result_of

from .fakes import FakeRedis, FakeStore, FleetKernels, Machine

LEASE = 3.0


class Cluster:
    """Relays sharing one fake Redis and one machine; time passes for every relay that is not frozen."""

    def __init__(self) -> None:
        self.redis = FakeRedis()
        self.machine = Machine()
        self.relays: dict[str, Fleet] = {}
        self.kernels: dict[str, FleetKernels] = {}
        self.clocks: dict[str, MemoryReactorClock] = {}
        self.disk = Path(tempfile.mkdtemp(prefix="fleet-ledger-"))
        """The machine's list of the fleet's kernels (see ``fleet.ledger``)."""

    def start(self, name: str) -> Fleet:
        clock = MemoryReactorClock()
        clock.advance(self.redis.clock.seconds())
        kernels = FleetKernels(self.machine)
        fleet = Fleet(
            FakeStore(self.redis, clock),  # type: ignore[arg-type]
            kernels,  # type: ignore[arg-type]
            TokenAuth("admin"),
            clock,
            lease=LEASE,
            relay_id=name,
            ledger=Ledger(
                self.disk,
                runs=lambda kernel_id, about: kernel_id in self.machine.running,
                stop=self.machine.kill,
            ),
        )
        self.relays[name], self.kernels[name], self.clocks[name] = fleet, kernels, clock
        fleet.startService()
        self.advance(0.5)
        return fleet

    def store(self, name: str) -> FakeStore:
        store: Any = self.relays[name].store
        return store  # type: ignore[no-any-return]

    def freeze(self, name: str) -> None:
        self.store(name).frozen = True

    def thaw(self, name: str) -> None:
        self.store(name).frozen = False
        self.redis.deliver(name)

    def advance(self, seconds: float, step: float = 0.1) -> None:
        for _ in range(round(seconds / step)):
            self.redis.clock.advance(step)
            for name, clock in self.clocks.items():
                if not self.store(name).frozen:
                    clock.advance(step)

    def spawn(self, name: str, kernel_id: str) -> None:
        """Start a kernel on a relay and register it, as the spawner does."""
        kernel = self.kernels[name].start(kernel_id)
        d = self.relays[name].spawning.register(kernel, "r")  # type: ignore[arg-type]
        self.advance(0.5)
        result_of(d)

    def owner(self, kernel_id: str) -> str:
        return self.redis.kernels[kernel_id]["owner"]

    def stop_all(self) -> None:
        for fleet in self.relays.values():
            fleet.leave()
            fleet.stopService()
        shutil.rmtree(self.disk, ignore_errors=True)


def test_a_relay_is_ready_only_once_it_has_joined_and_spawns_wait_for_it() -> None:
    """A relay whose Redis is away stays joining (not ready; a spawn waits, then fails); once Redis answers it joins."""
    cluster = Cluster()
    cluster.redis.up = False
    a = cluster.start("A")
    assert a.membership is Membership.JOINING and not a.ready
    waiting = a.spawning.reserve("r1", None)
    assert not waiting.called
    cluster.advance(JOIN_WAIT + 1)
    failure_of(waiting, FleetUnavailable)
    later = a.spawning.reserve("r2", None)
    cluster.redis.up = True
    cluster.advance(1)
    assert a.ready and a.fleet_view()["membership"] == "joined"
    assert result_of(later) is True
    a.leave()
    assert a.membership is Membership.LEAVING and not a.ready
    failure_of(a.spawning.reserve("r3", None), FleetUnavailable)


def test_a_kernel_spawned_on_one_relay_is_served_at_once_by_the_others() -> None:
    """Registering a kernel tells every relay whose lease runs, which serves it as a guest before the spawn answers."""
    cluster = Cluster()
    cluster.start("A")
    cluster.start("B")
    cluster.spawn("A", "k1")
    assert cluster.kernels["B"].is_guest("k1")
    assert cluster.relays["B"].state.records["k1"].owner == "A"
    cluster.stop_all()


def test_a_relay_whose_lease_lapsed_serves_as_a_guest_the_kernel_another_adopted() -> None:
    """A relay frozen past its lease finds its kernel adopted when it wakes, and demotes it: one manager only."""
    cluster = Cluster()
    cluster.start("A")
    cluster.start("B")
    cluster.spawn("A", "k1")
    cluster.freeze("A")
    cluster.advance(LEASE * 2)
    assert cluster.kernels["B"].owns("k1") and cluster.owner("k1") == "B"
    cluster.thaw("A")
    cluster.advance(LEASE)
    assert cluster.kernels["A"].demoted == ["k1"] and cluster.kernels["A"].is_guest("k1")
    assert cluster.owner("k1") == "B" and cluster.kernels["B"].owns("k1")
    cluster.stop_all()


def test_of_two_relays_racing_to_adopt_a_kernel_only_one_wins() -> None:
    """Two relays that claim a gone relay's kernel in the same instant: one manages it, the other serves it."""
    cluster = Cluster()
    cluster.start("A")
    cluster.start("B")
    cluster.start("C")
    cluster.spawn("A", "k1")
    cluster.freeze("A")
    cluster.advance(LEASE * 2)
    owners = [name for name in "BC" if cluster.kernels[name].owns("k1")]
    assert len(owners) == 1 and cluster.owner("k1") == owners[0]
    loser = "C" if owners == ["B"] else "B"
    assert cluster.kernels[loser].is_guest("k1")
    assert cluster.relays[loser].state.records["k1"].owner == owners[0]
    assert cluster.relays["B"].guests.adopted + cluster.relays["C"].guests.adopted == 1
    cluster.stop_all()


def test_a_guest_missing_from_redis_while_its_owner_lives_is_dropped_after_two_leases() -> None:
    """A kernel whose end this relay never heard of is dropped once missing for two leases, not at once."""
    cluster = Cluster()
    cluster.start("A")
    cluster.start("B")
    cluster.spawn("A", "k1")
    del cluster.redis.kernels["k1"]
    cluster.kernels["A"].own.pop("k1")
    cluster.advance(LEASE)
    assert cluster.kernels["B"].is_guest("k1")
    cluster.advance(LEASE * 2)
    assert cluster.kernels["B"].dropped == [("k1", "shutdown")]
    cluster.stop_all()


def test_a_relay_that_stops_cleanly_hands_its_kernels_over_at_once() -> None:
    """A relay stopping beside another live relay of its machine leaves its kernels to it, adopted within a tick."""
    cluster = Cluster()
    cluster.start("A")
    cluster.start("B")
    cluster.spawn("A", "k1")
    a = cluster.relays["A"]
    stopping = a.prepare_stop()
    cluster.advance(0.3)
    result_of(stopping)
    assert a.hand_off() and a.membership is Membership.HANDING_OFF and not a.ready
    assert "A" not in cluster.redis.live_leases()
    cluster.advance(0.3)
    assert cluster.kernels["B"].owns("k1") and cluster.owner("k1") == "B"
    assert cluster.kernels["B"].dropped == []
    cluster.stop_all()


def test_a_redis_restart_while_the_owner_is_stopped_is_no_death() -> None:
    """Redis restarting empty while a kernel's owner is frozen: the kernel is registered again and adopted, never told dead."""
    cluster = Cluster()
    cluster.start("A")
    cluster.start("B")
    cluster.spawn("A", "k1")
    cluster.freeze("A")
    cluster.redis.restart_empty()
    cluster.advance(LEASE * 3)
    assert cluster.kernels["B"].dropped == []
    assert cluster.kernels["B"].owns("k1") and cluster.owner("k1") == "B"
    cluster.thaw("A")
    cluster.advance(LEASE)
    assert cluster.kernels["A"].demoted == ["k1"] and cluster.kernels["A"].dropped == []
    cluster.stop_all()


def test_a_kernel_whose_process_died_with_its_relay_is_told_dead_everywhere() -> None:
    """An adopter that finds the gone relay's kernel process gone unregisters it and every relay tells its clients."""
    cluster = Cluster()
    cluster.start("A")
    cluster.start("B")
    cluster.start("C")
    cluster.spawn("A", "k1")
    cluster.freeze("A")
    cluster.machine.running.discard("k1")
    cluster.advance(LEASE * 2)
    assert "k1" not in cluster.redis.kernels
    for name in "BC":
        assert [k for k, reason in cluster.kernels[name].dropped if reason.startswith("died")] == [
            "k1"
        ]
    cluster.stop_all()


def test_a_command_for_a_guest_is_done_by_its_owner_or_times_out() -> None:
    """An interrupt of a guest is done by its owner through the mailboxes; a frozen owner's silence is a clear error."""
    cluster = Cluster()
    cluster.start("A")
    cluster.start("B")
    cluster.spawn("A", "k1")
    done = cluster.relays["B"].owners.interrupt("k1")
    cluster.advance(0.3)
    assert result_of(done) is None and cluster.kernels["A"].done == [("k1", "interrupt")]
    cluster.freeze("A")
    late = cluster.relays["B"].owners.interrupt("k1")
    cluster.advance(cluster.relays["B"].owners.timeouts["interrupt"] + 0.5)
    assert "did not answer" in str(failure_of(late, KernelLaunchError).value)
    cluster.stop_all()


def test_tokens_issued_on_one_relay_work_on_the_others() -> None:
    """A kernel token issued on one relay is honoured by a relay serving the kernel, and by one that joins later."""
    cluster = Cluster()
    a = cluster.start("A")
    cluster.start("B")
    cluster.spawn("A", "k1")
    auth: Any = a.tokens._auth
    token = auth.scoped.issue("k1", "read-only")
    cluster.advance(0.3)
    late = cluster.start("C")
    for name in ("B", "C"):
        scoped = cluster.relays[name].tokens._auth.scoped
        assert scoped.scope_of([token]) is not None
    assert late.ready
    cluster.stop_all()


def test_a_kernel_whose_relay_and_record_are_both_gone_is_found_again() -> None:
    """A relay killed just before Redis restarts empty leaves a kernel no relay knows: the next relay of its machine adopts it."""
    cluster = Cluster()
    cluster.start("A")
    cluster.spawn("A", "k1")
    cluster.freeze("A")  # killed: it never runs again
    cluster.redis.restart_empty()
    cluster.start("B")
    cluster.advance(LEASE * 3)
    assert cluster.kernels["B"].owns("k1") and cluster.owner("k1") == "B"
    cluster.kernels["B"].stopped("k1")
    cluster.advance(0.5)
    assert "k1" not in cluster.redis.kernels and not list(cluster.disk.iterdir())
    cluster.stop_all()


def test_a_listed_kernel_whose_process_is_gone_is_forgotten() -> None:
    """A kernel listed on disk whose owner and process are both gone is not registered again, and leaves the list."""
    cluster = Cluster()
    cluster.start("A")
    cluster.spawn("A", "k1")
    cluster.freeze("A")
    cluster.machine.running.discard("k1")
    cluster.redis.restart_empty()
    cluster.start("B")
    cluster.advance(LEASE)
    assert "k1" not in cluster.redis.kernels and "k1" not in cluster.kernels["B"]
    assert not list(cluster.disk.iterdir())
    cluster.stop_all()


def test_the_marks_a_relay_saved_are_saved_again_when_redis_restarts_empty() -> None:
    """A Jupyter session's mark saved through a relay is back in Redis after Redis restarts empty."""
    cluster = Cluster()
    a = cluster.start("A")
    cluster.spawn("A", "k1")
    a.marks.save("k1", {"the-session": (5, "parent")})
    cluster.redis.restart_empty()
    cluster.advance(LEASE)
    assert cluster.redis.marks["k1"] == {"the-session": "5 parent"}
    assert result_of(a.marks.load("k1", "the-session")) == (5, "parent")
    cluster.stop_all()


def test_a_live_owner_slower_to_see_redis_back_keeps_its_kernel() -> None:
    """Redis restarts empty and the owner reconnects a moment after another relay: that relay does not take the live owner's kernel."""
    cluster = Cluster()
    cluster.start("A")
    cluster.start("B")
    cluster.spawn("A", "k1")
    cluster.freeze("A")  # its connection comes back later than B's
    cluster.redis.restart_empty()
    cluster.advance(1.5)
    cluster.thaw("A")
    cluster.advance(LEASE * 3)
    assert cluster.owner("k1") == "A" and cluster.kernels["A"].owns("k1")
    assert cluster.kernels["A"].demoted == [] and cluster.relays["B"].guests.adopted == 0
    assert cluster.kernels["B"].is_guest("k1") and cluster.kernels["B"].dropped == []
    cluster.stop_all()


def test_a_relay_still_joining_finds_a_kernel_another_relay_started_once_it_has_joined() -> None:
    """A kernel id a client names is looked up once the relay has joined: served if registered, else not;
    while Redis stays away, the look-up gives up after LOOKUP_WAIT."""
    cluster = Cluster()
    cluster.start("A")
    cluster.spawn("A", "k1")
    cluster.redis.up = False
    b = cluster.start("B")
    assert b.membership is Membership.JOINING
    given_up = b.find("k1")
    cluster.advance(LOOKUP_WAIT + 0.5)
    failure_of(given_up, FleetUnavailable)
    found, unknown = b.find("k1"), b.find("nope")
    assert not found.called and not unknown.called
    cluster.redis.up = True
    cluster.advance(1)
    assert result_of(found) is None and result_of(unknown) is None
    assert cluster.kernels["B"].is_guest("k1") and "nope" not in cluster.kernels["B"]
    assert cluster.kernels["B"].lookup == b.find  # type: ignore[attr-defined]
    cluster.stop_all()


def test_a_relay_whose_redis_is_away_looks_nothing_up() -> None:
    """A joined relay that lost Redis answers a look-up at once, without asking Redis (nor logging a warning)."""
    cluster = Cluster()
    a = cluster.start("A")
    cluster.redis.up = False
    cluster.advance(LEASE)
    assert not a.redis_up
    asked: list[str] = []
    store = cluster.store("A")
    store.record = lambda kernel_id: asked.append(kernel_id)  # type: ignore[method-assign,assignment,func-returns-value,return-value]
    assert result_of(a.find("k1")) is None and asked == []
    cluster.stop_all()

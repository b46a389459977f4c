"""
In-memory fakes for the fleet's decisions: a Redis that several relays share (leases expire on its own clock,
and it can be stopped or restarted empty), each relay's view of it (the store's interface), and a kernel
registry whose kernels' processes run on one machine that every relay of the test shares.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock

from kernel_relay.fleet.connection import RedisFull
from kernel_relay.fleet.records import KernelRecord
from kernel_relay.fleet.store import FleetUnavailable, RedisURL
from kernel_relay.kernels import UnknownKernel
from kernel_relay.kernels.adoption import KernelGone, this_host


@dataclass
class FakeRedis:
    """What the relays of a test share; ``clock`` is real time (each relay has its own, which may stop)."""

    clock: Clock = field(default_factory=Clock)
    up: bool = True
    full: bool = False
    """Out of memory: reads are answered, writes refused (but ``PEXPIRE``)."""
    leases: dict[str, tuple[dict[str, Any], float]] = field(default_factory=dict)
    kernels: dict[str, dict[str, str]] = field(default_factory=dict)
    tokens: dict[str, dict[bytes, str]] = field(default_factory=dict)
    marks: dict[str, dict[str, str]] = field(default_factory=dict)
    boxes: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    readers: dict[str, tuple[Deferred[dict[str, Any] | None], FakeStore]] = field(
        default_factory=dict
    )

    def live_leases(self) -> dict[str, dict[str, Any]]:
        now = self.clock.seconds()
        return {r: about for r, (about, until) in self.leases.items() if until > now}

    def restart_empty(self) -> None:
        """Redis restarts with nothing on disk."""
        for name in ("leases", "kernels", "tokens", "marks", "boxes"):
            getattr(self, name).clear()

    def deliver(self, relay_id: str) -> None:
        reader = self.readers.get(relay_id)
        if reader is not None and self.boxes.get(relay_id) and not reader[1].frozen:
            del self.readers[relay_id]
            reader[0].callback(self.boxes[relay_id].pop(0))


class FakeStore:
    """One relay's view of a :class:`FakeRedis`, with the interface of ``FleetStore`` that the fleet uses."""

    def __init__(self, redis: FakeRedis, clock: Clock) -> None:
        self.redis = redis
        self.clock = clock
        self.url = RedisURL("fake")
        self.member = False
        self.frozen = False
        self.full = False
        self.memory_refusals = 0

    @property
    def up(self) -> bool:
        return self.redis.up

    def _ok(self, value: Any = None) -> Deferred[Any]:
        if not self.redis.up:
            return fail(FleetUnavailable("Redis is away"))
        return succeed(value)

    def _refused(self) -> bool:
        """Whether a write is refused for want of memory (counted, as the real connection does)."""
        if self.redis.up and self.redis.full:
            self.full = True
            self.memory_refusals += 1
        return self.redis.full

    def _full(self) -> Deferred[Any]:
        return fail(RedisFull("Redis is out of memory: OOM command not allowed"))

    def extend_lease(self, relay_id: str, ttl: float) -> Deferred[Any]:
        about, until = self.redis.leases.get(relay_id, ({}, 0.0))
        if until <= self.redis.clock.seconds():
            return self._ok(0)
        self.redis.leases[relay_id] = (about, self.redis.clock.seconds() + ttl)
        return self._ok(1)

    def connect(self) -> None:
        pass

    def disconnect(self) -> Deferred[Any]:
        return succeed(None)

    def join(self) -> Deferred[bool]:
        self.member = self.redis.up
        return self._ok(True)

    def renew(self, relay_id: str, about: Mapping[str, Any], ttl: float) -> Deferred[Any]:
        if self._refused():
            return self._full()
        if self.redis.up:
            self.redis.leases[relay_id] = (dict(about), self.redis.clock.seconds() + ttl)
        return self._ok()

    def release(self, relay_id: str) -> Deferred[Any]:
        self.redis.leases.pop(relay_id, None)
        return self._ok()

    def relays(self) -> Deferred[dict[str, dict[str, Any]]]:
        return self._ok(self.redis.live_leases())

    def lease_alive(self, relay_id: str) -> Deferred[bool]:
        return self._ok(relay_id in self.redis.live_leases())

    def reserve(self, reservation: str, max_kernels: int | None, ttl: float) -> Deferred[bool]:
        if self._refused():
            return self._full()
        return self._ok(max_kernels is None or len(self.redis.kernels) < max_kernels)

    def unreserve(self, reservation: str) -> Deferred[Any]:
        return self._ok()

    def put_record(
        self, kernel_id: str, record: KernelRecord, reservation: str = ""
    ) -> Deferred[Any]:
        if self.redis.up:
            self.redis.kernels.setdefault(kernel_id, {}).update(record.encode())
        return self._ok()

    def unregister(self, kernel_id: str) -> Deferred[Any]:
        if self.redis.up:
            for name in ("kernels", "tokens", "marks"):
                getattr(self.redis, name).pop(kernel_id, None)
        return self._ok()

    def kernel_ids(self) -> Deferred[set[str]]:
        return self._ok(set(self.redis.kernels))

    def record(self, kernel_id: str) -> Deferred[KernelRecord | None]:
        fields = self.redis.kernels.get(kernel_id)
        return self._ok(None if fields is None else KernelRecord.decode(fields))

    def owner(self, kernel_id: str) -> Deferred[str | None]:
        return self._ok(self.redis.kernels.get(kernel_id, {}).get("owner"))

    def claim(self, kernel_id: str, old_owner: str, new_owner: str) -> Deferred[bool]:
        if old_owner in self.redis.live_leases():
            return self._ok(False)
        return self.take_over(kernel_id, old_owner, new_owner)

    def take_over(self, kernel_id: str, old_owner: str, new_owner: str) -> Deferred[bool]:
        if self._refused():
            return self._full()
        fields = self.redis.kernels.get(kernel_id)
        if not self.redis.up or fields is None or fields.get("owner") != old_owner:
            return self._ok(False)
        fields["owner"] = new_owner
        return self._ok(True)

    def set_owner(self, kernel_id: str, owner: str) -> Deferred[Any]:
        if kernel_id in self.redis.kernels and self.redis.up:
            self.redis.kernels[kernel_id]["owner"] = owner
        return self._ok()

    def add_token(self, kernel_id: str, digest: bytes, access: str) -> Deferred[Any]:
        if self.redis.up:
            self.redis.tokens.setdefault(kernel_id, {})[digest] = access
        return self._ok()

    def tokens(self, kernel_id: str) -> Deferred[dict[bytes, str]]:
        return self._ok(dict(self.redis.tokens.get(kernel_id, {})))

    def post(self, relay_id: str, message: Mapping[str, Any], ttl: float) -> Deferred[Any]:
        if self.redis.up:
            self.redis.boxes.setdefault(relay_id, []).append(json.loads(json.dumps(dict(message))))
            self.redis.deliver(relay_id)
        return self._ok()

    def read_mailbox(self, relay_id: str, wait: int) -> Deferred[dict[str, Any] | None]:
        if not self.redis.up:
            return fail(FleetUnavailable("Redis is away"))
        if self.redis.boxes.get(relay_id):
            return succeed(self.redis.boxes[relay_id].pop(0))
        d: Deferred[dict[str, Any] | None] = Deferred()
        self.redis.readers[relay_id] = (d, self)

        def waited() -> None:
            if self.redis.readers.get(relay_id, (None,))[0] is d:
                del self.redis.readers[relay_id]
                d.callback(None)

        self.clock.callLater(wait, waited)
        return d

    def save_marks(
        self, kernel_id: str, marks: Mapping[str, str], ttl: float, keep: int
    ) -> Deferred[Any]:
        if self.redis.up:
            self.redis.marks.setdefault(kernel_id, {}).update(marks)
        return self._ok()

    def mark(self, kernel_id: str, session_id: str) -> Deferred[str | None]:
        return self._ok(self.redis.marks.get(kernel_id, {}).get(session_id))


@dataclass
class FakeFleetKernel:
    id: str
    spec_name: str = "python3"


class Machine:
    """The kernels' processes of one machine, which every relay of a test runs on."""

    def __init__(self) -> None:
        self.running: set[str] = set()

    def kill(self, kernel_id: str, about: Mapping[str, Any]) -> bool:
        """A kernel's process is killed (by a relay that does not manage it): whether it ran."""
        if kernel_id not in self.running:
            return False
        self.running.discard(kernel_id)
        return True


class FleetKernels:
    """A relay's kernels, with the interface of ``KernelRegistry`` that the fleet uses; it records what is done."""

    def __init__(self, machine: Machine) -> None:
        self.machine = machine
        self.own: dict[str, FakeFleetKernel] = {}
        self.guests: dict[str, FakeFleetKernel] = {}
        self.dropped: list[tuple[str, str]] = []
        self.demoted: list[str] = []
        self.done: list[tuple[str, str]] = []
        self.owners: Any = None
        self.observers: list[Any] = []

    def start(self, kernel_id: str) -> FakeFleetKernel:
        kernel = self.own[kernel_id] = FakeFleetKernel(kernel_id)
        self.machine.running.add(kernel_id)
        return kernel

    def __contains__(self, kernel_id: object) -> bool:
        return kernel_id in self.own or kernel_id in self.guests

    def __len__(self) -> int:
        return len(self.own) + len(self.guests)

    def owned(self) -> list[FakeFleetKernel]:
        return list(self.own.values())

    def owns(self, kernel_id: str) -> bool:
        return kernel_id in self.own

    def is_guest(self, kernel_id: str) -> bool:
        return kernel_id in self.guests

    def add_guest(
        self, kernel_id: str, spec_name: str, connection: dict[str, Any]
    ) -> FakeFleetKernel:
        kernel = self.guests[kernel_id] = FakeFleetKernel(kernel_id, spec_name)
        return kernel

    def drop_guest(self, kernel_id: str, reason: str) -> None:
        if self.guests.pop(kernel_id, None) is not None:
            self.dropped.append((kernel_id, reason))

    def describe(self, kernel_id: str) -> Deferred[dict[str, Any]]:
        about = {"connection": {"ip": "127.0.0.1", "key": "k"}, "provisioner": {"pid": 1}}
        return succeed({**about, "host": this_host()})

    def demote(self, kernel_id: str) -> None:
        self.demoted.append(kernel_id)
        self.guests[kernel_id] = self.own.pop(kernel_id)

    def adopt(self, kernel_id: str, about: Mapping[str, Any], env: Any = None) -> Deferred[Any]:
        if kernel_id not in self.guests:
            return fail(UnknownKernel(kernel_id))
        if kernel_id not in self.machine.running:
            return fail(KernelGone(f"kernel {kernel_id}'s process is gone"))
        kernel = self.own[kernel_id] = self.guests.pop(kernel_id)
        return succeed(kernel)

    def _do(self, kernel_id: str, op: str) -> Deferred[Any]:
        self.done.append((kernel_id, op))
        return succeed(None)

    def interrupt(self, kernel_id: str) -> Deferred[Any]:
        return self._do(kernel_id, "interrupt")

    def restart(self, kernel_id: str) -> Deferred[Any]:
        return self._do(kernel_id, "restart")

    def shutdown(self, kernel_id: str) -> Deferred[Any]:
        return self._do(kernel_id, "shutdown")

    def add_observer(self, observer: Any) -> None:
        self.observers.append(observer)

    def stopped(self, kernel_id: str, reason: str = "shutdown") -> None:
        """One of this relay's kernels ended: its observers hear of it."""
        kernel = self.own.pop(kernel_id)
        self.machine.running.discard(kernel_id)
        for observer in self.observers:
            observer.kernel_stopped(kernel, reason)

# -*- test-case-name: tests.fleet.test_fleet -*-
"""
One relay's part in a fleet: relays started with the same ``--redis`` serve every kernel any of them started.

- Each relay holds a lease in Redis that it renews every ``lease / 3`` seconds; a kernel's record names the
  relay that manages its process (its owner).
- Every relay connects to every kernel of the fleet: the ones other relays manage are *guests* here
  (``KernelRegistry.add_guest``), so a client can use any kernel through any relay, and replies still reach
  the asking client (each relay's clients have their own ZMQ identities).
- Interrupt, restart and shutdown of a guest are asked of its owner, through the owner's mailbox.
- When a relay's lease expires, the first relay to claim each of its kernels (one atomic script) rebuilds the
  kernel's manager from its record and manages it from then on; its clients, on any relay, carry on.
- Kernel tokens are shared as digests; ``--max-kernels`` counts the fleet's kernels.
- A relay acts only once it has shown it holds the fleet's secret (:meth:`FleetStore.join`); one with another
  secret refuses to start. What Redis holds is sealed with it (see :mod:`.secrets`).

Joining (:class:`Membership`): a relay is *joining* until its lease is written and it has read the fleet's
kernels (in that order); only then is it *joined*: ready (``/api/health/ready``), and allowed to start kernels.
A kernel it starts is registered before it is used, and every relay whose lease runs once it is registered is
told, and answers once it serves the kernel (for a short while at most), before the spawn answers: a relay
that joins later reads it from Redis, one that joined earlier hears of it, so a kernel started anywhere is
usable everywhere as soon as its id is known.

What needs Redis fails with a clear error while Redis is away (a spawn, a command for another relay's kernel);
what does not (serving the clients and kernels a relay has) goes on, and the relay catches up when Redis is
back, registering its kernels again should Redis have lost them.
"""

from __future__ import annotations

import json
import os
import socket
import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from enum import Enum
from typing import Any, Final

from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList, fail, inlineCallbacks, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from ..auth import Scope, TokenAuth
from ..kernels import Kernel, KernelLaunchError, KernelRegistry, UnknownKernel
from ..kernels.adoption import KernelGone, kernel_env, start_time, this_host
from .numbering import SharedNumbering
from .store import FleetStore, FleetUnavailable

log = Logger()

#: How long a command for another relay's kernel may wait for that relay's answer, beyond its own work.
COMMAND_GRACE: Final = 10.0
#: How long the fleet remembers where a Jupyter session stopped (as the Jupyter front does).
MARK_SECONDS: Final = 3600.0
#: How many sessions of one kernel the fleet remembers (the oldest are forgotten first), and the longest
#: session name or mark it keeps.
MARKS_PER_KERNEL: Final = 1_000
MARK_BYTES: Final = 512
#: How long a reserved place in ``--max-kernels`` is held for a kernel that is starting.
RESERVATION_SECONDS: Final = 300.0
#: How long a spawn waits for the other relays to say they serve the new kernel (a frozen one is not waited
#: for longer: it reads the kernel from Redis when it wakes).
KNOWN_TIMEOUT: Final = 2.0
#: How long a spawn asked of a relay that is joining its fleet waits for it to have joined.
JOIN_WAIT: Final = 10.0
#: How soon a relay that could not join yet tries again.
JOIN_RETRY: Final = 0.1


class Membership(Enum):
    """Where this relay is in its life in the fleet."""

    JOINING = "joining"
    """Started: its lease is not written yet, or it has not read the fleet's kernels."""
    JOINED = "joined"
    """Ready: it holds a lease, serves the fleet's kernels and may start kernels of its own."""
    LEAVING = "leaving"
    """Stopping: it starts no kernel, and its lease is released."""


def _refused(reason: str) -> None:
    log.critical("{reason}", reason=reason)


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _process_alive(about: Mapping[str, Any]) -> bool:
    """Whether the relay a lease describes still runs (on this machine: its pid, checked by start time)."""
    pid = about.get("pid")
    if not isinstance(pid, int):
        return True
    now = start_time(pid)
    started = about.get("started")
    return now is not None and (not isinstance(started, str) or now == started)


class Fleet(Service):
    """This relay's membership of a fleet; see the module docstring."""

    def __init__(
        self,
        store: FleetStore,
        kernels: KernelRegistry,
        auth: TokenAuth,
        clock: IReactorTime,
        *,
        lease: float = 5.0,
        launch_timeout: float = 60.0,
        shutdown_timeout: float = 5.0,
        keep: int = 10_000,
        keep_bytes: int = 8 * 1024 * 1024,
        keep_seconds: float = 600.0,
        relay_id: str | None = None,
    ) -> None:
        self.store = store
        self.relay_id = relay_id or uuid.uuid4().hex
        self._kernels = kernels
        self._auth = auth
        self._clock = clock
        self.lease = lease
        self._timeouts = {
            "interrupt": COMMAND_GRACE,
            "shutdown": shutdown_timeout * 2 + COMMAND_GRACE,
            "restart": launch_timeout + shutdown_timeout * 2 + COMMAND_GRACE,
        }
        self.numbering = SharedNumbering(
            store,
            clock,
            keep=keep,
            keep_bytes=keep_bytes,
            keep_seconds=keep_seconds,
            owns=kernels.owns,
        )
        self._records: dict[str, dict[str, str]] = {}
        """The fleet record of every kernel this relay serves, as last read (or written)."""
        self._registered: set[str] = set()
        """This relay's own kernels that are in the fleet's registry."""
        self._loading: dict[str, list[Deferred[None]]] = {}
        """Kernels being read from Redis, and who waits for each."""
        self._missing: dict[str, float] = {}
        """Guests missing from the registry, since when."""
        self._adoptions: dict[str, Deferred[None]] = {}
        self._handing_off = False
        self._syncing = False
        self.others: dict[str, dict[str, Any]] = {}
        """The other relays whose lease runs, as of the last renewal."""
        self._requests: dict[str, tuple[Deferred[None], IDelayedCall]] = {}
        self._unregistering: set[Deferred[Any]] = set()
        self._held_marks: dict[str, OrderedDict[str, tuple[str, float]]] = {}
        """The marks this relay saved, by kernel and session (with when): saved again should Redis lose them."""
        self._tick = LoopingCall(self._sync)
        self._tick.clock = clock
        self._renewal = LoopingCall(self._renew)
        self._renewal.clock = clock
        self.membership = Membership.JOINING
        self._joining: list[Deferred[None]] = []
        """Spawns waiting for this relay to have joined."""
        self._left: Deferred[None] = Deferred()
        self._reading = False
        self.redis_up = False
        self.adopted = 0
        self.env_allowed: frozenset[str] = frozenset()
        """The names besides ``KERNEL_*`` that a kernel's ``env`` may set (``--kernel-env-allow``)."""
        self.on_refused: Callable[[str], None] = _refused
        """Called when Redis shows this relay holds another secret than the fleet's (tap: exit)."""
        kernels.owners = self
        kernels.add_observer(self)
        auth.scoped.on_issue = self._token_issued

    # -- service ---------------------------------------------------------------------------------------

    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]
        log.info(
            "Relay {relay} joins the fleet at {url} (lease {lease:g}s)",
            relay=self.relay_id,
            url=str(self.store.url),
            lease=self.lease,
        )
        self.store.connect()
        self._clock.callLater(0, self._join)

    def _join(self) -> None:
        """Act only once Redis confirms this relay holds the fleet's secret; with another one, refuse."""
        if not self.running:
            return

        def proven(member: bool) -> None:
            if not self.running:
                return
            if not member:
                self.on_refused(
                    f"Refusing to join the fleet at {self.store.url}: its relays share another secret "
                    "(the admin token or --fleet-secret). Give this relay the fleet's, or use another "
                    "Redis database for another fleet."
                )
                return
            self._start_loops()

        def unproven(failure: Failure) -> None:
            if not failure.check(FleetUnavailable):  # type: ignore[no-untyped-call]
                log.failure("joining the fleet failed", failure=failure)
            if self.running:
                # At once without a connection (no call goes out): the join follows Redis closely.
                self._clock.callLater(0.1 if not self.store.up else 0.5, self._join)

        self.store.join().addCallbacks(proven, unproven)

    def _start_loops(self) -> None:
        # The lease on a timer of its own: a long sync (adoptions) must never let it lapse.
        self._renewal.start(self.lease / 3, now=True)
        self._tick.start(self.lease / 3, now=True)
        self._reading = True
        self._clock.callLater(0, self._read_mailbox)

    def stopService(self) -> Deferred[Any]:
        """Leave once the kernels service has stopped (it calls :meth:`leave`): their ends reach Redis."""
        super().stopService()  # type: ignore[no-untyped-call]
        return self._left

    def leave(self) -> Deferred[None]:
        """The kernels are stopped or handed over: release the lease and disconnect from Redis."""
        if self.membership is Membership.LEAVING:
            return self._left
        self.membership = Membership.LEAVING
        waiting, self._joining = self._joining, []
        for waiter in waiting:
            waiter.errback(FleetUnavailable("this relay is leaving the fleet"))
        self._reading = False
        for loop in (self._tick, self._renewal):
            if loop.running:
                loop.stop()
        for request, (done, timer) in list(self._requests.items()):
            del self._requests[request]
            if timer.active():
                timer.cancel()
            done.errback(KernelLaunchError("the relay is stopping"))
        d: Deferred[Any] = DeferredList(list(self._unregistering), consumeErrors=True)
        if self.store.up:
            d.addCallback(lambda _: self.store.release(self.relay_id))
        d.addErrback(lambda f: None)
        d.addBoth(lambda _: self.store.disconnect())
        d.addBoth(lambda _: self._left.callback(None))
        return self._left

    def hand_off(self) -> bool:
        """Whether this relay, stopping, leaves its kernels running for the other relays to adopt."""
        return self._handing_off

    def prepare_stop(self) -> Deferred[None]:
        """
        Before the kernels stop: with other relays running, leave the fleet now (they adopt this relay's
        kernels at once); as the last relay, first adopt the kernels of relays that are gone, so that none
        is left running when this one stops.
        """
        if self._tick.running:
            self._tick.stop()
        if not self.store.member:
            return succeed(None)  # it has nothing of the fleet's
        d: Deferred[Any] = self._sync()

        def decide(_: object) -> Deferred[Any]:
            here = this_host()
            if self.redis_up and any(
                about.get("machine") == here and _process_alive(about)
                for about in self.others.values()
            ):
                # Another live relay on this machine can adopt every kernel of this one (local or not).
                self._handing_off = True
                left = self.store.release(self.relay_id)
                left.addCallback(
                    lambda _: self._broadcast({"type": "leaving", "from": self.relay_id})
                )
                return left
            # The last relay here: every kernel it may manage whose owner is not alive is taken over (a
            # relay killed a moment ago still has a lease), so that it stops with this relay's own.
            for kernel_id, record in list(self._records.items()):
                owner = record.get("owner", "")
                if (
                    self._kernels.is_guest(kernel_id)
                    and self._may_adopt(record)
                    and not self._owner_alive(owner)
                ):
                    self._adopt(kernel_id, owner, force=True).addErrback(
                        lambda f: log.warn(
                            "could not adopt a kernel before stopping: {e}", e=f.value
                        )
                    )
            return DeferredList(list(self._adoptions.values()), consumeErrors=True)

        def settle_adoptions(_: object) -> Deferred[Any]:
            # An adoption under way finishes first: its kernel is stopped or handed over with the rest.
            return DeferredList(list(self._adoptions.values()), consumeErrors=True)

        d.addCallback(settle_adoptions)
        d.addCallback(decide)
        d.addErrback(lambda f: log.failure("leaving the fleet failed", failure=f))
        return d.addCallback(lambda _: None)

    # -- spawning (FleetCapacity) ----------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        """Whether this relay has joined the fleet (and is not leaving it)."""
        return self.membership is Membership.JOINED

    def reserve(self, reservation: str, max_kernels: int | None) -> Deferred[bool]:
        """A place in ``--max-kernels``; a spawn asked while this relay joins waits for it to have joined."""
        d = self._when_joined()
        return d.addCallback(
            lambda _: self.store.reserve(reservation, max_kernels, RESERVATION_SECONDS)
        )

    def _when_joined(self) -> Deferred[None]:
        if self.membership is Membership.JOINED:
            return succeed(None)
        if self.membership is Membership.LEAVING:
            return fail(FleetUnavailable("this relay is leaving the fleet"))
        waiter: Deferred[None] = Deferred()

        def too_long() -> None:
            if waiter in self._joining:
                self._joining.remove(waiter)
                waiter.errback(
                    FleetUnavailable(
                        f"this relay has not joined its fleet within {JOIN_WAIT:g}s (is Redis at "
                        f"{self.store.url} up?): it starts kernels once it has"
                    )
                )

        timer = self._clock.callLater(JOIN_WAIT, too_long)
        self._joining.append(waiter)

        def settled(result: object) -> object:
            if timer.active():
                timer.cancel()
            return result

        return waiter.addBoth(settled)

    def unreserve(self, reservation: str) -> None:
        self.store.unreserve(reservation).addErrback(lambda f: None)

    def register(
        self, kernel: Kernel, reservation: str, env: Mapping[str, str] | None = None
    ) -> Deferred[None]:
        """Put a kernel this relay started in the registry, and tell the other relays."""
        d = self._kernels.describe(kernel.id)

        def write(about: dict[str, Any]) -> Deferred[None]:
            record = {
                "spec": kernel.spec_name,
                "owner": self.relay_id,
                "created": _now_iso(),
                "about": json.dumps(about),
            }
            if env:
                # What its POST /api/kernels asked for (KERNEL_* and allowed names): a restart by an
                # adopter starts it with the same.
                record["env"] = json.dumps(dict(env))
            self._records[kernel.id] = record
            # Before the write: should its answer be lost, the kernel's stop still unregisters it.
            self._registered.add(kernel.id)

            d = self.store.register(kernel.id, record, reservation)
            return d.addCallback(lambda _: self._tell_known(kernel.id))

        return d.addCallback(write)

    # -- KernelOwners: acting on guests ----------------------------------------------------------------

    def interrupt(self, kernel_id: str) -> Deferred[None]:
        return self._ask(kernel_id, "interrupt")

    def restart(self, kernel_id: str) -> Deferred[None]:
        return self._ask(kernel_id, "restart")

    def shutdown(self, kernel_id: str) -> Deferred[None]:
        return self._ask(kernel_id, "shutdown")

    def _ask(self, kernel_id: str, op: str) -> Deferred[None]:
        """Have the owner do ``op``; if its lease has expired, adopt the kernel first and do it here."""
        record = self._records.get(kernel_id, {})
        owner = record.get("owner", "")
        if owner and owner not in self.others and self.redis_up:
            d = self.store.lease_alive(owner)

            def checked(alive: bool) -> Deferred[None]:
                if alive:  # a relay this one has not heard of yet
                    return self._post_command(kernel_id, op, owner)
                if not self._may_adopt(record):
                    raise KernelLaunchError(
                        f"the relay that managed kernel {kernel_id} is gone, and only a relay on its "
                        "machine can take it over"
                    )
                return self._adopt(kernel_id, owner).addCallback(after_adoption)

            def after_adoption(_: object) -> Deferred[None]:
                if not self._kernels.owns(kernel_id):
                    raise KernelLaunchError(
                        f"kernel {kernel_id} could not be taken over; try again"
                    )
                return getattr(self._kernels, op)(kernel_id).addCallback(lambda _: None)  # type: ignore[no-any-return]

            return d.addCallback(checked)
        return self._post_command(kernel_id, op, owner)

    def _post_command(self, kernel_id: str, op: str, owner: str) -> Deferred[None]:
        """Ask the owner through its mailbox; the answer comes to this relay's."""
        request = uuid.uuid4().hex
        done: Deferred[None] = Deferred()

        def timed_out() -> None:
            self._requests.pop(request, None)
            done.errback(
                KernelLaunchError(
                    f"the relay that manages kernel {kernel_id} did not answer the {op} within "
                    f"{self._timeouts[op]:g}s"
                )
            )

        timer = self._clock.callLater(self._timeouts[op], timed_out)
        self._requests[request] = (done, timer)
        message = {
            "type": "command",
            "op": op,
            "id": kernel_id,
            "request": request,
            "from": self.relay_id,
        }

        def unposted(failure: Failure) -> None:
            if self._requests.pop(request, None) is not None:
                timer.cancel()
                done.errback(
                    KernelLaunchError(
                        f"cannot reach the relay that manages kernel {kernel_id}: {failure.value}"
                    )
                )

        self.store.post(owner, message, self._timeouts[op]).addErrback(unposted)
        return done

    def _command(self, message: dict[str, Any]) -> None:
        """Another relay asks this one to act on one of its kernels; the answer goes to its mailbox."""
        kernel_id, op = str(message.get("id")), str(message.get("op"))
        sender, request = str(message.get("from")), str(message.get("request"))
        if op not in self._timeouts or not self._kernels.owns(kernel_id):
            d: Deferred[Any] = Deferred()
            d.errback(UnknownKernel(f"relay {self.relay_id} does not manage kernel {kernel_id}"))
        else:
            log.info(
                "{op} of kernel {kernel} asked by relay {sender}",
                op=op,
                kernel=kernel_id,
                sender=sender,
            )
            d = getattr(self._kernels, op)(kernel_id)

        def answer(result: object) -> None:
            error = result.getErrorMessage() if isinstance(result, Failure) else None
            unknown = isinstance(result, Failure) and result.check(UnknownKernel) is not None  # type: ignore[no-untyped-call]
            reply = {"type": "reply", "request": request, "error": error, "unknown": unknown}
            self.store.post(sender, reply, COMMAND_GRACE).addErrback(
                lambda f: log.warn(
                    "could not answer relay {sender}: {error}", sender=sender, error=f.value
                )
            )

        d.addBoth(answer)

    def _reply(self, message: dict[str, Any]) -> None:
        pending = self._requests.pop(str(message.get("request")), None)
        if pending is None:
            return
        done, timer = pending
        if timer.active():
            timer.cancel()
        error = message.get("error")
        if error is None:
            done.callback(None)
        elif message.get("unknown"):
            done.errback(UnknownKernel(str(error)))
        else:
            done.errback(KernelLaunchError(str(error)))

    # -- tokens ----------------------------------------------------------------------------------------

    def _token_issued(self, digest: bytes, scope: Scope) -> None:
        d = self.store.add_token(scope.kernel_id, digest, scope.access)
        d.addCallback(
            lambda _: self._broadcast(
                {
                    "type": "token",
                    "id": scope.kernel_id,
                    "digest": digest.hex(),
                    "access": scope.access,
                }
            )
        )
        d.addErrback(
            lambda f: log.warn(
                "A token of kernel {kernel} works on this relay only: {error}",
                kernel=scope.kernel_id,
                error=f.value,
            )
        )

    def _load_tokens(self, kernel_id: str) -> Deferred[None]:
        def admit(found: dict[bytes, str]) -> None:
            for digest, access in found.items():
                self._auth.scoped.admit(digest, Scope(kernel_id, access))

        return self.store.tokens(kernel_id).addCallback(admit)

    # -- KernelObserver ----------------------------------------------------------------------------------

    def kernel_started(self, kernel: Kernel) -> None:
        pass

    def kernel_stopped(self, kernel: Kernel, reason: str) -> None:
        self._records.pop(kernel.id, None)
        self._held_marks.pop(kernel.id, None)
        if kernel.id not in self._registered:
            return
        self._registered.discard(kernel.id)
        d = self.store.unregister(kernel.id)
        d.addCallback(
            lambda _: self._broadcast({"type": "gone", "id": kernel.id, "reason": reason})
        )
        # The relay leaves Redis only once the ends of its kernels are written there.
        self._unregistering.add(d)

        def written(result: object) -> object:
            self._unregistering.discard(d)
            return result

        d.addBoth(written)
        d.addErrback(
            lambda f: log.warn(
                "Kernel {kernel} ended but Redis could not be told: {error}",
                kernel=kernel.id,
                error=f.value,
            )
        )

    def kernel_restarting(self, kernel: Kernel) -> None:
        pass

    def kernel_restarted(self, kernel: Kernel) -> None:
        """A restart runs a new process: the record must name it, or whoever adopts the kernel finds it gone."""
        if kernel.id not in self._registered or not self._kernels.owns(kernel.id):
            return
        d = self._kernels.describe(kernel.id)
        d.addCallback(
            lambda about: self.store.register(
                kernel.id, {"owner": self.relay_id, "about": json.dumps(about)}
            )
        )
        d.addErrback(
            lambda f: log.warn(
                "Kernel {kernel} restarted but its record in Redis still names the old process: {error}",
                kernel=kernel.id,
                error=f.value,
            )
        )

    def kernel_ready(self, kernel: Kernel) -> None:
        pass

    # -- the mailbox -------------------------------------------------------------------------------------

    def _broadcast(self, message: dict[str, Any]) -> None:
        """Tell every relay whose lease runs now (read afresh: one that joined since the last sync too)."""

        def post(relays: dict[str, dict[str, Any]]) -> None:
            for relay in relays:
                if relay != self.relay_id:
                    self.store.post(relay, message, self.lease * 2).addErrback(lambda f: None)

        self.store.relays().addCallbacks(post, lambda f: post(self.others))

    def _tell_known(self, kernel_id: str) -> Deferred[None]:
        """
        Tell the other relays of a new kernel, and wait (:data:`KNOWN_TIMEOUT` at most) until each serves
        it. The relays are read after the kernel is registered: one whose lease is written later reads the
        kernel when it joins.
        """

        def ask(relays: dict[str, dict[str, Any]]) -> Deferred[Any]:
            waits = []
            for relay in relays:
                if relay == self.relay_id:
                    continue
                request = uuid.uuid4().hex
                done: Deferred[None] = Deferred()
                timer = self._clock.callLater(KNOWN_TIMEOUT, lambda r=request: self._unanswered(r))
                self._requests[request] = (done, timer)
                message = {"type": "kernel", "id": kernel_id, "request": request}
                message["from"] = self.relay_id
                posted = self.store.post(relay, message, self.lease * 2)
                posted.addErrback(self._unanswered_post, request)
                waits.append(done)
            return DeferredList(waits, consumeErrors=True)

        d = self.store.relays().addCallback(ask)
        d.addErrback(lambda f: None)  # registered: the others read it at their next sync
        return d.addCallback(lambda _: None)

    def _unanswered_post(self, failure: Failure, request: str) -> None:
        self._unanswered(request)

    def _unanswered(self, request: str) -> None:
        pending = self._requests.pop(request, None)
        if pending is not None:
            done, timer = pending
            if timer.active():
                timer.cancel()
            done.callback(None)

    def _read_mailbox(self) -> None:
        if not self._reading:
            return
        d = self.store.read_mailbox(self.relay_id, 1)

        def again(delay: float) -> None:
            if self._reading:
                self._clock.callLater(delay, self._read_mailbox)

        def read(message: dict[str, Any] | None) -> None:
            again(0)
            if message is not None:
                self._dispatch(message)

        def failed(failure: Failure) -> None:
            again(0.5)
            if not failure.check(FleetUnavailable):  # type: ignore[no-untyped-call]
                log.failure("reading the fleet mailbox failed", failure=failure)

        d.addCallbacks(read, failed)

    def _dispatch(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        kernel_id = str(message.get("id", ""))
        try:
            if kind == "kernel":
                learnt = self._learn(kernel_id)
                if message.get("request"):
                    sender, request = str(message.get("from")), str(message.get("request"))
                    reply = {"type": "reply", "request": request, "error": None}
                    learnt.addBoth(
                        lambda _: self.store.post(sender, reply, COMMAND_GRACE).addErrback(
                            lambda f: None
                        )
                    )
            elif kind == "gone":
                self._records.pop(kernel_id, None)
                self._kernels.drop_guest(kernel_id, str(message.get("reason", "shutdown")))
            elif kind == "token":
                self._auth.scoped.admit(
                    bytes.fromhex(str(message.get("digest"))),
                    Scope(kernel_id, str(message.get("access"))),
                )
            elif kind == "leaving":
                # A relay stops and leaves its kernels to the others: adopt them now, not a lease later.
                self.others.pop(str(message.get("from")), None)
                self._clock.callLater(0, self._sync)
            elif kind == "command":
                self._command(message)
            elif kind == "reply":
                self._reply(message)
        except Exception:
            log.failure("a fleet message could not be handled: {kind}", kind=kind)

    # -- keeping in step -------------------------------------------------------------------------------

    def _learn(self, kernel_id: str) -> Deferred[None]:
        """Serve a kernel of the fleet that this relay does not know yet, as a guest."""
        if kernel_id in self._kernels:
            return succeed(None)
        if kernel_id in self._loading:
            waiter: Deferred[None] = Deferred()
            self._loading[kernel_id].append(waiter)
            return waiter
        self._loading[kernel_id] = []

        def loaded(record: dict[str, str] | None) -> Deferred[None] | None:
            if record is None or kernel_id in self._kernels:
                return None
            about = json.loads(record.get("about", "{}"))
            connection = about.get("connection")
            if not isinstance(connection, dict):
                log.warn("kernel {kernel} has no connection info in the fleet", kernel=kernel_id)
                return None
            self._records[kernel_id] = record
            self._kernels.add_guest(kernel_id, record.get("spec", ""), connection)
            log.info(
                "Serving kernel {kernel} of relay {owner}",
                kernel=kernel_id,
                owner=record.get("owner"),
            )
            return self._load_tokens(kernel_id)

        def done(result: object) -> None:
            for waiter in self._loading.pop(kernel_id, []):
                waiter.callback(None)
            if isinstance(result, Failure):
                log.warn(
                    "could not load kernel {kernel}: {error}", kernel=kernel_id, error=result.value
                )

        d = self.store.kernel(kernel_id).addCallback(loaded)
        return d.addBoth(done)

    def _sync(self) -> Deferred[None]:
        """Renew the lease, learn new and gone kernels, adopt the kernels of relays whose lease expired."""
        if self._syncing:
            return succeed(None)
        self._syncing = True
        d: Deferred[None] = self._sync_once()

        def done(result: object) -> object:
            self._syncing = False
            if self.membership is Membership.JOINING and self.running:
                # Joining waits for no lease period: spawns wait for it.
                self._clock.callLater(JOIN_RETRY, self._sync)
            return result

        return d.addBoth(done)

    def _renew(self) -> Deferred[None]:
        d = self.store.renew(self.relay_id, self._about(), self.lease)

        def failed(failure: Failure) -> None:
            if self.redis_up:
                log.warn(
                    "Could not renew this relay's lease: {error}", error=failure.getErrorMessage()
                )

        return d.addCallbacks(lambda _: None, failed)

    @inlineCallbacks
    def _sync_once(self) -> Any:
        try:
            if self.membership is Membership.JOINING:
                # The lease first: a relay that registers a kernel after this one has read the kernels
                # finds this relay's lease, and tells it.
                yield self.store.renew(self.relay_id, self._about(), self.lease)
            relays = yield self.store.relays()
            ids = yield self.store.kernel_ids()
        except FleetUnavailable as error:
            if self.redis_up:
                log.warn(
                    "The fleet's Redis is gone ({error}): serving what this relay has", error=error
                )
            self.redis_up = False
            return
        except Exception:
            log.failure("fleet sync failed")
            return
        lost = False
        if not self.redis_up:
            log.info("The fleet's Redis at {url} answers", url=str(self.store.url))
            lost = self.membership is not Membership.JOINING
        self.redis_up = True
        self.others = {relay: about for relay, about in relays.items() if relay != self.relay_id}
        try:
            for kernel in self._kernels.owned():
                if kernel.id not in self._registered:
                    continue
                if kernel.id not in ids:
                    lost = True
                    yield self._register_again(kernel)
                    continue
                owner = yield self.store.owner(kernel.id)
                if owner and owner != self.relay_id:
                    # This relay's lease lapsed (a pause, a partition) and another adopted the kernel: one
                    # manager only, so this relay serves it as a guest from now on.
                    log.warn(
                        "Relay {owner} took kernel {kernel} over while this relay's lease lapsed",
                        owner=owner,
                        kernel=kernel.id,
                    )
                    self._registered.discard(kernel.id)
                    self._records.setdefault(kernel.id, {})["owner"] = owner
                    self._kernels.demote(kernel.id)
            for kernel_id in ids:
                if kernel_id not in self._kernels:
                    yield self._learn(kernel_id)
                elif self._kernels.is_guest(kernel_id):
                    # Tokens come by mailbox at once; this catches any message this relay missed.
                    yield self._load_tokens(kernel_id)
            now = self._clock.seconds()
            for kernel_id, record in list(self._records.items()):
                if kernel_id in ids or not self._kernels.is_guest(kernel_id):
                    self._missing.pop(kernel_id, None)
                elif not self._owner_alive(record.get("owner", "")):
                    # Redis lost it (it restarted empty) and its owner is gone too: put it back as this
                    # relay knows it, so that it is adopted (or found dead) like any kernel of a gone relay.
                    self._missing.pop(kernel_id, None)
                    lost = True
                    yield self._restore(kernel_id, record)
                    ids.add(kernel_id)
                elif now - self._missing.setdefault(kernel_id, now) > 2 * self.lease:
                    # Gone without a word (its end was told while this relay could not hear), and not
                    # registered again by its owner (as it would be had Redis only lost it).
                    self._missing.pop(kernel_id, None)
                    self._records.pop(kernel_id, None)
                    self._kernels.drop_guest(kernel_id, "shutdown")
            for kernel_id, record in list(self._records.items()):
                owner = record.get("owner", "")
                if (
                    kernel_id in ids
                    and self._kernels.is_guest(kernel_id)
                    and not self._owner_alive(owner)
                    and self._may_adopt(record)
                ):
                    # A relay of this machine whose process is gone need not wait for its lease to end.
                    force = owner in relays
                    yield self._adopt(kernel_id, owner, force=force).addErrback(lambda f: None)
        except FleetUnavailable:
            self.redis_up = False
            return
        except Exception:
            log.failure("fleet sync failed")
            return
        if lost:
            self._save_held_marks()
        if self.membership is Membership.JOINING:
            self.membership = Membership.JOINED
            waiting, self._joining = self._joining, []
            for waiter in waiting:
                waiter.callback(None)
            log.info(
                "Relay {relay} has joined the fleet: {relays} relay(s), {kernels} kernel(s)",
                relay=self.relay_id,
                relays=1 + len(self.others),
                kernels=len(ids),
            )

    @staticmethod
    def _may_adopt(record: dict[str, str]) -> bool:
        """A local kernel (its provisioner knows a pid) can be managed only from its own machine."""
        try:
            about = json.loads(record.get("about", "{}"))
        except ValueError:
            return False
        local = "pid" in (about.get("provisioner") or {})
        return not local or about.get("host") == this_host()

    def _owner_alive(self, owner: str) -> bool:
        """Whether a relay holds a lease and, when it runs on this machine, its process runs."""
        if owner == self.relay_id:
            return True
        about = self.others.get(owner)
        if about is None:
            return False
        return about.get("machine") != this_host() or _process_alive(about)

    def _restore(self, kernel_id: str, record: dict[str, str]) -> Deferred[None]:
        """Register a guest again as this relay last read it, with the tokens it knows (Redis lost them)."""
        log.warn(
            "Kernel {kernel} of relay {owner} was missing from the fleet's Redis and its owner is gone: "
            "registering it again",
            kernel=kernel_id,
            owner=record.get("owner"),
        )
        tokens = self._auth.scoped.digests(kernel_id)

        def add_tokens(_: object) -> Deferred[Any]:
            return DeferredList(
                [self.store.add_token(kernel_id, d, s.access) for d, s in tokens.items()],
                consumeErrors=True,
            )

        d = self.store.register(kernel_id, record).addCallback(add_tokens)
        return d.addCallback(lambda _: None)

    def _register_again(self, kernel: Kernel) -> Deferred[None]:
        """Redis lost this relay's kernel (it restarted empty): put it back, with its tokens."""
        log.warn(
            "Kernel {kernel} was missing from the fleet's Redis: registering it again",
            kernel=kernel.id,
        )
        self._registered.discard(kernel.id)
        tokens = self._auth.scoped.digests(kernel.id)

        def share_tokens(_: object) -> None:
            for digest, scope in tokens.items():
                self._token_issued(digest, scope)

        env = json.loads(self._records.get(kernel.id, {}).get("env") or "null")
        return self.register(kernel, "", env).addCallback(share_tokens)

    def _adopt(self, kernel_id: str, owner: str, *, force: bool = False) -> Deferred[None]:
        """
        Take over a guest whose owner's lease has expired, unless another relay is first; ``force``: whose
        owner is known dead (a relay of this machine whose process is gone), lease or not.
        """
        if kernel_id in self._adoptions:
            return self._adoptions[kernel_id]

        def claimed(won: bool) -> Deferred[None] | None:
            if not won:
                return self.store.kernel(kernel_id).addCallback(refreshed)
            log.warn(
                "Relay {owner} is gone: adopting its kernel {kernel}", owner=owner, kernel=kernel_id
            )
            # The record as it is now (a restart since this relay read it names another process).
            return self.store.kernel(kernel_id).addCallback(rebuild)

        def rebuild(record: dict[str, str] | None) -> Deferred[None]:
            record = record or self._records.get(kernel_id, {})
            self._records[kernel_id] = record
            about = json.loads(record.get("about", "{}"))
            env = json.loads(record.get("env", "{}")) if record.get("env") else None
            # A restart here launches within this relay's policy, whatever the record says.
            env = kernel_env(env, self.env_allowed) if env else None
            d = self._kernels.adopt(kernel_id, about, env)
            return d.addCallbacks(adopted, lost)

        def refreshed(record: dict[str, str] | None) -> None:
            # Another relay was first (or the record is gone: the sync drops a guest missing for long).
            if record is not None and kernel_id in self._records:
                self._records[kernel_id] = record

        def adopted(kernel: Kernel) -> Deferred[None]:
            self.adopted += 1
            self._registered.add(kernel_id)
            self._records.setdefault(kernel_id, {})["owner"] = self.relay_id
            return (
                self._kernels.describe(kernel_id)
                .addCallback(
                    lambda about: self.store.register(
                        kernel_id, {"owner": self.relay_id, "about": json.dumps(about)}
                    )
                )
                .addCallback(lambda _: None)
            )

        def lost(failure: Failure) -> Deferred[None]:
            if not failure.check(KernelGone):  # type: ignore[no-untyped-call]
                # It runs but cannot be managed from here (no such kernelspec here, say): give the claim
                # back, so that a relay that can manage it does, and keep serving it as a guest.
                log.warn(
                    "Could not adopt kernel {kernel}, left to another relay: {error}",
                    kernel=kernel_id,
                    error=failure.value,
                )
                return self.store.set_owner(kernel_id, owner).addErrback(lambda f: None)
            # Its process is gone (it died with its relay, or since): its clients are told it died.
            reason = f"died: {failure.getErrorMessage()}"
            log.warn(
                "Could not adopt kernel {kernel}: {error}", kernel=kernel_id, error=failure.value
            )
            self._records.pop(kernel_id, None)
            self._kernels.drop_guest(kernel_id, reason)
            d = self.store.unregister(kernel_id)
            d.addCallback(
                lambda _: self._broadcast({"type": "gone", "id": kernel_id, "reason": reason})
            )
            return d.addErrback(lambda f: None)

        claim = self.store.take_over if force else self.store.claim
        d: Deferred[Any] = claim(kernel_id, owner, self.relay_id).addCallback(claimed)

        finished = False

        def settled(result: object) -> object:
            nonlocal finished
            finished = True
            self._adoptions.pop(kernel_id, None)
            return result

        d.addBoth(settled)
        if not finished:
            self._adoptions[kernel_id] = d
        return d

    def _about(self) -> dict[str, Any]:
        return {
            "pid": os.getpid(),
            "started": start_time(os.getpid()),
            "host": socket.gethostname(),
            "machine": this_host(),
            "kernels": len(self._kernels.owned()),
            "serves": len(self._kernels),
        }

    # -- SharedMarks: where Jupyter sessions stopped ------------------------------------------------------

    def save(self, kernel_id: str, marks: Mapping[str, tuple[int, str | None]]) -> None:
        """Each session's ``relay_seq`` and parent ``msg_id`` (ids only: a mark is a few hundred bytes)."""
        encoded = {
            session: f"{seq} {parent_id or ''}"[:MARK_BYTES]
            for session, (seq, parent_id) in marks.items()
            if len(session) <= MARK_BYTES
        }
        held = self._held_marks.setdefault(kernel_id, OrderedDict())
        now = self._clock.seconds()
        for session, value in encoded.items():
            held.pop(session, None)
            held[session] = (value, now)
        while len(held) > MARKS_PER_KERNEL:
            held.popitem(last=False)
        d = self.store.save_marks(kernel_id, encoded, MARK_SECONDS, MARKS_PER_KERNEL)
        d.addErrback(lambda f: None)

    def _save_held_marks(self) -> None:
        """Redis lost what it held (it restarted empty): save again the marks this relay saved, unexpired."""
        now = self._clock.seconds()
        for kernel_id, held in list(self._held_marks.items()):
            fresh = {s: v for s, (v, when) in held.items() if now - when < MARK_SECONDS}
            if fresh:
                d = self.store.save_marks(kernel_id, fresh, MARK_SECONDS, MARKS_PER_KERNEL)
                d.addErrback(lambda f: None)

    def load(self, kernel_id: str, session_key: str) -> Deferred[tuple[int, str | None] | None]:
        def decoded(value: str | None) -> tuple[int, str | None] | None:
            if not value:
                return None
            seq, _, parent_id = value.partition(" ")
            return (int(seq), parent_id or None) if seq.isdigit() else None

        return self.store.mark(kernel_id, session_key).addCallback(decoded)

    def fleet_view(self) -> dict[str, Any]:
        """What /metrics and /api/health say of the fleet."""
        return {
            "relay": self.relay_id,
            "membership": self.membership.value,
            "ready": self.ready,
            "redis_up": self.redis_up,
            "relays": 1 + len(self.others),
            "owned_kernels": len(self._kernels.owned()),
            "guest_kernels": len(self._kernels) - len(self._kernels.owned()),
            "adopted": self.adopted,
            "local_numbers": self.numbering.local_numbers,
            "too_late": self.numbering.too_late,
        }


__all__ = ["Fleet", "Membership"]

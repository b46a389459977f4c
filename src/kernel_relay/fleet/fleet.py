# -*- test-case-name: tests.fleet.test_fleet -*-
"""
One relay's part in a fleet: relays started with the same ``--redis`` serve every kernel any of them started.

- Each relay holds a lease in Redis that it renews every ``lease / 3`` seconds; a kernel's record names the
  relay that manages its process (its owner).
- Every relay connects to every kernel of the fleet: the ones other relays manage are *guests* here
  (:mod:`.guests`), so a client can use any kernel through any relay, and replies still reach the asking
  client (each relay's clients have their own ZMQ identities).
- Interrupt, restart and shutdown of a guest are asked of its owner, through the owner's mailbox
  (:mod:`.owners` over :mod:`.mailbox`).
- When a relay's lease expires, the first relay to claim each of its kernels (one atomic script) rebuilds the
  kernel's manager from its record and manages it from then on; its clients, on any relay, carry on.
- Kernel tokens are shared as digests (:mod:`.tokens`); ``--max-kernels`` counts the fleet's kernels
  (:mod:`.capacity`); Jupyter sessions' marks are kept for the fleet (:mod:`.marks`).
- A relay acts only once it has shown it holds the fleet's secret (:meth:`FleetStore.join`); one with another
  secret refuses to start. What Redis holds is sealed with it (see :mod:`.secrets`).

Joining (:class:`.state.Membership`): a relay is *joining* until its lease is written and it has read the
fleet's kernels (in that order); only then is it *joined*: ready (``/api/health/ready``), and allowed to start
kernels. A kernel it starts is registered before it is used, and every relay whose lease runs once it is
registered is told, and answers once it serves the kernel (for a short while at most), before the spawn
answers (:mod:`.owned`): a relay that joins later reads it from Redis, one that joined earlier hears of it,
so a kernel started anywhere is usable everywhere as soon as its id is known; and a kernel id a client
names that a relay does not know is read from Redis before it is refused (:meth:`Fleet.find`), once the
relay has joined, so even a relay started a moment ago serves it.

What needs Redis fails with a clear error while Redis is away (a spawn, a command for another relay's kernel);
what does not (serving the clients and kernels a relay has) goes on, and the relay catches up when Redis is
back, registering its kernels again should Redis have lost them.

This module is the service: it joins, keeps the lease, runs the sync that keeps the parts in step, and leaves.
The parts share one :class:`.state.FleetState`; a flow of more than one step is a coroutine (``async def``,
run with ``Deferred.fromCoroutine``), and what other layers call returns a Deferred.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any, Final

from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from ..auth import TokenAuth
from ..kernels import KernelLaunchError, KernelRegistry
from .capacity import FleetSpawning
from .connection import RedisFull
from .finder import KernelFinder
from .guests import FleetGuests
from .lease import LeaseKeeper
from .ledger import Ledger, ledger_dir
from .mailbox import Mailbox
from .marks import FleetMarks
from .numbering import SharedNumbering
from .owned import OwnKernels
from .owners import COMMAND_GRACE, FleetOwners
from .state import FleetState, Link, Membership, lease_about
from .stopping import Stopping
from .store import FleetStore, FleetUnavailable
from .tokens import TokenSharing

log = Logger()

#: How soon a relay that could not join yet tries again.
JOIN_RETRY: Final = 0.1


def _refused(reason: str) -> None:
    log.critical("{reason}", reason=reason)


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
        ledger: Ledger | None = None,
    ) -> None:
        self.store = store
        self.relay_id = relay_id or uuid.uuid4().hex
        self.lease = lease
        self.state = FleetState(self.relay_id, lease)
        self._kernels = kernels
        self._clock = clock
        self.numbering = SharedNumbering(
            store,
            clock,
            keep=keep,
            keep_bytes=keep_bytes,
            keep_seconds=keep_seconds,
            owns=self._numbers_as_owner,
        )
        self.mailbox = Mailbox(store, self.relay_id, clock, self._heard)
        self.tokens = TokenSharing(store, auth, self.mailbox, self.state)
        self.marks = FleetMarks(store, clock)
        ledger = ledger or Ledger(ledger_dir(str(store.url)))
        self.guests = FleetGuests(
            store, kernels, self.state, self.tokens, self.mailbox, clock, ledger
        )
        self.own = OwnKernels(
            store, kernels, self.state, self.tokens, self.marks, self.mailbox, ledger
        )
        self.owners = FleetOwners(
            store,
            kernels,
            self.state,
            self.guests,
            self.mailbox,
            launch_timeout=launch_timeout,
            shutdown_timeout=shutdown_timeout,
        )
        self.spawning = FleetSpawning(store, self.state, self.own, clock)
        """The fleet's share in each start (the spawner's ``FleetCapacity``)."""
        self.finder = KernelFinder(store, self.state, self.spawning, self.guests, clock)
        kernels.owners = self.owners
        kernels.lookup = self.find
        self._tick = self._every(self._sync)
        self.lease_keeper = LeaseKeeper(store, self.state, self._about, clock)
        self.stopping = Stopping(store, self.state, self.guests, self.mailbox, self._sync)
        self._left: Deferred[None] = Deferred()
        self.on_refused: Callable[[str], None] = _refused
        """Called when Redis shows this relay holds another secret than the fleet's (tap: exit)."""

    def _every(self, work: Callable[[], Deferred[None]]) -> LoopingCall:
        loop = LoopingCall(work)
        loop.clock = self._clock
        return loop

    # -- what others read ----------------------------------------------------------------------------

    @property
    def membership(self) -> Membership:
        return self.state.membership

    @property
    def ready(self) -> bool:
        """Whether this relay has joined the fleet (and is not leaving it)."""
        return self.spawning.ready

    @property
    def redis_up(self) -> bool:
        return self.state.redis_up

    @property
    def others(self) -> dict[str, dict[str, Any]]:
        """The other relays whose lease runs, as of the last renewal."""
        return self.state.others

    @property
    def env_allowed(self) -> frozenset[str]:
        """The names besides ``KERNEL_*`` that a kernel's ``env`` may set (``--kernel-env-allow``)."""
        return self.guests.env_allowed

    @env_allowed.setter
    def env_allowed(self, names: frozenset[str]) -> None:
        self.guests.env_allowed = names

    def hand_off(self) -> bool:
        """Whether this relay, stopping, leaves its kernels running for the other relays to adopt."""
        return self.state.membership is Membership.HANDING_OFF

    def fleet_view(self) -> dict[str, Any]:
        """What /metrics and /api/health say of the fleet."""
        return {
            "relay": self.relay_id,
            "membership": self.state.membership.value,
            "ready": self.ready,
            "redis_up": self.redis_up,
            "redis_full": self.store.full,
            "relays": 1 + len(self.others),
            "owned_kernels": len(self._kernels.owned()),
            "guest_kernels": len(self._kernels) - len(self._kernels.owned()),
            "adopted": self.guests.adopted,
            "local_numbers": self.numbering.local_numbers,
            "too_late": self.numbering.too_late,
        }

    # -- joining -------------------------------------------------------------------------------------

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
        if self.running:
            Deferred.fromCoroutine(self._prove())

    async def _prove(self) -> None:
        try:
            member = await self.store.join()
        except Exception as error:
            if not isinstance(error, FleetUnavailable):
                log.failure("joining the fleet failed")
            if self.running:
                # At once without a connection (no call goes out): the join follows Redis closely.
                self._clock.callLater(0.1 if not self.store.up else 0.5, self._join)
            return
        if not self.running:
            return
        if not member:
            self.on_refused(
                f"Refusing to join the fleet at {self.store.url}: its relays share another secret "
                "(the admin token or --fleet-secret). Give this relay the fleet's, or use another "
                "Redis database for another fleet."
            )
            return
        self.lease_keeper.start()
        self._tick.start(self.lease / 3, now=True)
        self.mailbox.start()

    # -- the mailbox ---------------------------------------------------------------------------------

    def _heard(self, message: dict[str, Any]) -> None:
        """A message from another relay (replies are the mailbox's own)."""
        kind = message.get("type")
        kernel_id = str(message.get("id", ""))
        if kind == "kernel":
            Deferred.fromCoroutine(self._serve(message))
        elif kind == "gone":
            self.guests.drop(kernel_id, str(message.get("reason", "shutdown")))
        elif kind == "token":
            self.tokens.heard(message)
        elif kind == "leaving":
            # A relay stops and leaves its kernels to the others: adopt them now, not a lease later.
            self.state.others.pop(str(message.get("from")), None)
            self._clock.callLater(0, self._sync)
        elif kind == "command":
            self.owners.command(message)

    async def _serve(self, message: dict[str, Any]) -> None:
        """Another relay started a kernel: serve it, and say so if asked."""
        await self.guests.learn(str(message.get("id", "")))
        if message.get("request"):
            await self.mailbox.reply(message, COMMAND_GRACE, error=None).addErrback(lambda f: None)

    def find(self, kernel_id: str) -> Deferred[None]:
        """A kernel a client names that this relay does not know: read from Redis and served (:mod:`.finder`)."""
        return self.finder.find(kernel_id)

    # -- keeping in step -----------------------------------------------------------------------------

    def _sync(self) -> Deferred[None]:
        """Renew the lease, learn new and gone kernels, adopt the kernels of relays whose lease expired."""
        if not self.stopping.sync_begins():
            return succeed(None)

        def done(result: object) -> object:
            self.stopping.sync_ended()
            if self.state.membership is Membership.JOINING and self.running:
                # Joining waits for no lease period: spawns wait for it.
                self._clock.callLater(JOIN_RETRY, self._sync)
            return result

        return Deferred.fromCoroutine(self._sync_once()).addBoth(done)

    def _numbers_as_owner(self, kernel_id: str) -> bool:
        """Whether this relay may start the kernel's numbering again: it owns it, and holds its lease."""
        return self._kernels.owns(kernel_id) and self.lease_keeper.held()

    async def _sync_once(self) -> None:
        began = self._clock.seconds()
        try:
            relays, ids = await self._read_fleet()
        except RedisFull as error:
            self.lease_keeper.noted(error)  # it answers: not gone
            return
        except FleetUnavailable as error:
            if self.redis_up:
                log.warn(
                    "The fleet's Redis is gone ({error}): serving what this relay has", error=error
                )
            self.state.link = Link.DOWN
            return
        except Exception:
            log.failure("fleet sync failed")
            return
        back = self.state.link is Link.DOWN and self.state.membership is not Membership.JOINING
        if not self.redis_up:
            log.info("The fleet's Redis at {url} answers", url=str(self.store.url))
        self.state.link = Link.UP
        self.state.others = {r: about for r, about in relays.items() if r != self.relay_id}
        if back or self.own.lost(ids):
            # Before anything that waits (registering again tells the other relays): the sessions that
            # reconnect meanwhile find their marks.
            self.marks.save_again()
        try:
            await self.own.check(ids)
            lost = await self.guests.recover(ids)
            await self._learn(ids)
            lost = await self.guests.check_missing(ids) or lost
            await self._adopt_orphans(ids, relays)
        except RedisFull:
            return  # what needed a write waits for Redis to have room (said once by the lease keeper)
        except FleetUnavailable:
            self.state.link = Link.DOWN
            return
        except Exception:
            log.failure("fleet sync failed")
            return
        self.lease_keeper.synced(began)
        if lost:
            self.marks.save_again()
        if self.state.membership is Membership.JOINING:
            self._joined(len(ids))

    async def _read_fleet(self) -> tuple[dict[str, dict[str, Any]], set[str]]:
        if self.state.membership is Membership.JOINING:
            # The lease first: a relay that registers a kernel after this one has read the kernels finds
            # this relay's lease, and tells it.
            await self.lease_keeper.renew_now()
        relays = await self.store.relays()
        ids = await self.store.kernel_ids()
        return relays, ids

    def _about(self) -> dict[str, Any]:
        """What this relay's lease says of it."""
        about = lease_about(len(self._kernels.owned()), len(self._kernels))
        return {**about, "stopping": True} if self.state.preparing_stop else about

    async def _learn(self, ids: set[str]) -> None:
        for kernel_id in ids:
            if kernel_id not in self._kernels:
                await self.guests.learn(kernel_id)
            elif self._kernels.is_guest(kernel_id):
                # Tokens come by mailbox at once; this catches any message this relay missed.
                await self.tokens.load(kernel_id)

    async def _adopt_orphans(self, ids: set[str], relays: dict[str, Any]) -> None:
        for kernel_id, owner in self.guests.orphans(ids):
            # A relay of this machine whose process is gone need not wait for its lease to end.
            try:
                await self.guests.adopt(kernel_id, owner, force=owner in relays)
            except Exception:
                pass

    def _joined(self, kernels: int) -> None:
        self.state.membership = Membership.JOINED
        self.spawning.joined()
        log.info(
            "Relay {relay} has joined the fleet: {relays} relay(s), {kernels} kernel(s)",
            relay=self.relay_id,
            relays=1 + len(self.others),
            kernels=kernels,
        )

    # -- leaving -------------------------------------------------------------------------------------

    def prepare_stop(self) -> Deferred[None]:
        """Before the kernels stop: leave the fleet, or adopt what no relay will (see :mod:`.stopping`)."""
        if self._tick.running:
            self._tick.stop()
        if not self.store.member:
            return succeed(None)  # it has nothing of the fleet's
        d = Deferred.fromCoroutine(self.stopping.before_stop(self.lease_keeper.renew_now))
        d.addErrback(lambda f: log.failure("leaving the fleet failed", failure=f))
        return d.addCallback(lambda _: None)

    def stopService(self) -> Deferred[Any]:
        """Leave once the kernels service has stopped (it calls :meth:`leave`): their ends reach Redis."""
        super().stopService()  # type: ignore[no-untyped-call]
        return self._left

    def leave(self) -> Deferred[None]:
        """The kernels are stopped or handed over: release the lease and disconnect from Redis."""
        if self.state.membership is Membership.LEAVING:
            return self._left
        self.state.membership = Membership.LEAVING
        self.spawning.leaving()
        self.mailbox.stop(KernelLaunchError("the relay is stopping"))
        if self._tick.running:
            self._tick.stop()
        self.lease_keeper.stop()
        Deferred.fromCoroutine(self._release())
        return self._left

    async def _release(self) -> None:
        await DeferredList(list(self.own.unregistering), consumeErrors=True)
        await self.stopping.after_stop()
        try:
            if self.store.up:
                await self.store.release(self.relay_id)
        except Exception:
            pass
        try:
            await self.store.disconnect()
        finally:
            self._left.callback(None)


__all__ = ["Fleet", "Membership"]

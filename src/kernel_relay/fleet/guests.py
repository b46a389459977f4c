# -*- test-case-name: tests.fleet.test_fleet -*-
"""
The fleet's kernels that other relays manage (guests here), and adopting them: a guest is served as soon as
it is heard of (or read from Redis); it is adopted when its owner is gone (its lease lapsed, or its process
on this machine is gone), by the first relay to claim it (one atomic script); it is dropped when its end is
told, or when it stays missing from Redis while its owner lives (its end was told while this relay could not
hear); and it is registered again, as this relay knows it, when Redis lost it and its owner is gone too.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from ..kernels import KernelRegistry
from ..kernels.adoption import KernelGone, kernel_env
from .connection import MAX_RETRY_DELAY
from .ledger import Ledger
from .mailbox import Mailbox
from .records import KernelRecord
from .state import FleetState
from .store import FleetStore
from .tokens import TokenSharing

log = Logger()


class FleetGuests:
    """Serves, drops and adopts the guests; see the module docstring."""

    def __init__(
        self,
        store: FleetStore,
        kernels: KernelRegistry,
        state: FleetState,
        tokens: TokenSharing,
        mailbox: Mailbox,
        clock: IReactorTime,
        ledger: Ledger,
    ) -> None:
        self._store = store
        self._ledger = ledger
        self._kernels = kernels
        self._state = state
        self._tokens = tokens
        self._mailbox = mailbox
        self._clock = clock
        self._loading: dict[str, list[Deferred[None]]] = {}
        """Kernels being read from Redis, and who waits for each."""
        self._missing: dict[str, float] = {}
        """Guests missing from the registry, since when."""
        self._unlisted: dict[str, float] = {}
        """Kernels of this machine's list missing from the registry, their owner gone, since when."""
        self._adoptions: dict[str, Deferred[None]] = {}
        self.adopted = 0
        self.env_allowed: frozenset[str] = frozenset()
        """The names besides ``KERNEL_*`` that a kernel's ``env`` may set (``--kernel-env-allow``)."""

    @property
    def grace(self) -> float:
        """
        How long a kernel Redis lost, whose owner has no lease, is left for its owner to register again:
        a live owner may reconnect to Redis later than this relay, and then renews its lease.
        """
        return self._state.lease + MAX_RETRY_DELAY

    # -- serving ------------------------------------------------------------------------------------------

    def learn(self, kernel_id: str) -> Deferred[None]:
        """Serve a kernel of the fleet that this relay does not know yet, as a guest."""
        if kernel_id in self._kernels:
            return succeed(None)
        waiter: Deferred[None] = Deferred()
        if kernel_id in self._loading:
            self._loading[kernel_id].append(waiter)
            return waiter
        self._loading[kernel_id] = [waiter]
        Deferred.fromCoroutine(self._load(kernel_id))
        return waiter

    async def _load(self, kernel_id: str) -> None:
        try:
            record = await self._store.record(kernel_id)
            if record is not None and kernel_id not in self._kernels:
                await self._serve(kernel_id, record)
        except Exception as error:
            log.warn("could not load kernel {kernel}: {error}", kernel=kernel_id, error=error)
        for waiter in self._loading.pop(kernel_id, []):
            waiter.callback(None)

    async def _serve(self, kernel_id: str, record: KernelRecord) -> None:
        if record.connection is None:
            log.warn("kernel {kernel} has no connection info in the fleet", kernel=kernel_id)
            return
        self._state.records[kernel_id] = record
        self._kernels.add_guest(kernel_id, record.spec, record.connection)
        log.info("Serving kernel {kernel} of relay {owner}", kernel=kernel_id, owner=record.owner)
        await self._tokens.load(kernel_id)

    def drop(self, kernel_id: str, reason: str) -> None:
        """A guest's end is told: its clients hear ``reason``."""
        self._state.records.pop(kernel_id, None)
        self._kernels.drop_guest(kernel_id, reason)

    async def check_missing(self, ids: set[str]) -> bool:
        """
        Of the guests missing from Redis's ``ids``: put back those whose owner is gone (Redis lost them),
        drop those missing for long whose owner lives. Whether Redis lost any.
        """
        lost = False
        now = self._clock.seconds()
        for kernel_id, record in list(self._state.records.items()):
            if kernel_id in ids or not self._kernels.is_guest(kernel_id):
                self._missing.pop(kernel_id, None)
            elif not self._state.owner_alive(record.owner):
                # Redis lost it (it restarted empty) and its owner is gone too: put it back as this relay
                # knows it, so that it is adopted (or found dead) like any kernel of a gone relay. Not at
                # once: a live owner that reconnects later than this relay renews its lease meanwhile.
                if now - self._missing.setdefault(kernel_id, now) <= self.grace:
                    continue
                self._missing.pop(kernel_id, None)
                lost = True
                await self._restore(kernel_id, record)
                ids.add(kernel_id)
            elif now - self._missing.setdefault(kernel_id, now) > 2 * self._state.lease:
                # Gone without a word (its end was told while this relay could not hear), and not
                # registered again by its owner (as it would be had Redis only lost it).
                self._missing.pop(kernel_id, None)
                self.drop(kernel_id, "shutdown")
        return lost

    async def _restore(self, kernel_id: str, record: KernelRecord) -> None:
        """Register a guest again as this relay last read it, with the tokens it knows (Redis lost them)."""
        log.warn(
            "Kernel {kernel} of relay {owner} was missing from the fleet's Redis and its owner is gone: "
            "registering it again",
            kernel=kernel_id,
            owner=record.owner,
        )
        await self._store.put_record(kernel_id, record)
        await self._tokens.restore(kernel_id)

    async def recover(self, ids: set[str]) -> bool:
        """
        The kernels of this machine that Redis lost (missing from ``ids``) and that no live relay manages:
        registered again, to be adopted; forgotten when their process is gone. Whether any was registered.
        """
        lost = False
        now = self._clock.seconds()
        known = _Known(ids, self._kernels)
        unlisted = self._ledger.entries(known)
        self._unlisted = {k: since for k, since in self._unlisted.items() if k in unlisted}
        for kernel_id, record in unlisted.items():
            if record.owner == self._state.relay_id or self._state.owner_alive(record.owner):
                continue  # a live owner registers its kernels again itself
            if not self._ledger.runs(kernel_id, record.about):
                self._ledger.remove(kernel_id)
                continue
            if now - self._unlisted.setdefault(kernel_id, now) <= self.grace:
                continue  # as for a guest: its owner may only be slower to see Redis back
            log.warn(
                "Kernel {kernel} of relay {owner}, gone, was missing from the fleet's Redis: registering it "
                "again from this machine's list",
                kernel=kernel_id,
                owner=record.owner,
            )
            await self._store.put_record(kernel_id, record)
            ids.add(kernel_id)
            lost = True
        return lost

    # -- adopting -----------------------------------------------------------------------------------------

    def orphans(self, ids: Iterable[str] | None = None) -> list[tuple[str, str]]:
        """The guests (of ``ids``, or all) this relay may adopt whose owner is not alive, with their owner."""
        return [
            (kernel_id, record.owner)
            for kernel_id, record in list(self._state.records.items())
            if (ids is None or kernel_id in ids)
            and self._kernels.is_guest(kernel_id)
            and not self._state.owner_alive(record.owner)
            and record.adoptable_here
        ]

    def adoptions(self) -> list[Deferred[None]]:
        """The adoptions under way."""
        return list(self._adoptions.values())

    def adopt(self, kernel_id: str, owner: str, *, force: bool = False) -> Deferred[None]:
        """
        Take over a guest whose owner's lease has expired, unless another relay is first; ``force``: whose
        owner is known dead (a relay of this machine whose process is gone), lease or not.
        """
        if kernel_id in self._adoptions:
            return self._adoptions[kernel_id]
        if self._state.stop_prepared:
            return succeed(
                None
            )  # its kernels are counted: one adopted now would run on with no relay
        d = Deferred.fromCoroutine(self._adopt(kernel_id, owner, force))
        if not d.called:
            self._adoptions[kernel_id] = d

            def settled(result: object) -> object:
                self._adoptions.pop(kernel_id, None)
                return result

            d.addBoth(settled)
        return d

    async def _adopt(self, kernel_id: str, owner: str, force: bool) -> None:
        claim = self._store.take_over if force else self._store.claim
        won = await claim(kernel_id, owner, self._state.relay_id)
        # The record as it is now (a restart since this relay read it names another process).
        current = await self._store.record(kernel_id)
        if not won:
            # Another relay was first (or the record is gone: the sync drops a guest missing for long).
            if current is not None and kernel_id in self._state.records:
                self._state.records[kernel_id] = current
            return
        log.warn(
            "Relay {owner} is gone: adopting its kernel {kernel}", owner=owner, kernel=kernel_id
        )
        record = current or self._state.records.get(kernel_id) or KernelRecord(owner=owner)
        self._state.records[kernel_id] = record
        # A restart here launches within this relay's policy, whatever the record says.
        env = kernel_env(record.env, self.env_allowed) if record.env else None
        try:
            await self._kernels.adopt(kernel_id, record.about, env)
        except KernelGone as gone:
            await self._died(kernel_id, f"died: {gone}")
            return
        except Exception as error:
            # It runs but cannot be managed from here (no such kernelspec here, say): give the claim back,
            # so that a relay that can manage it does, and keep serving it as a guest.
            log.warn(
                "Could not adopt kernel {kernel}, left to another relay: {error}",
                kernel=kernel_id,
                error=error,
            )
            await self._store.set_owner(kernel_id, owner).addErrback(lambda f: None)
            return
        await self._adopted(kernel_id, record)

    async def _adopted(self, kernel_id: str, record: KernelRecord) -> None:
        self.adopted += 1
        self._state.registered.add(kernel_id)
        mine = record.owned_by(self._state.relay_id)
        self._state.records[kernel_id] = mine
        about = await self._kernels.describe(kernel_id)
        self._ledger.write(kernel_id, mine.describing(about))
        await self._store.put_record(kernel_id, mine.describing(about))

    async def _died(self, kernel_id: str, reason: str) -> None:
        """Its process is gone (it died with its relay, or since): its clients are told it died."""
        log.warn("Could not adopt kernel {kernel}: {error}", kernel=kernel_id, error=reason)
        await self._forget(kernel_id, reason)

    async def stop_left(self) -> None:
        """
        This relay stops last on its machine, its own kernels stopped: the kernels of the machine's list that
        no live relay manages (handed to it too late, or a dead relay's that Redis, full, did not let it
        take over) are stopped from there, not adopted, and their end told as Redis allows.
        """
        for kernel_id, record in self._ledger.entries().items():
            if record.owner != self._state.relay_id and self._state.owner_alive(record.owner):
                continue
            if self._ledger.stop(kernel_id, record.about):
                log.warn(
                    "Stopped kernel {kernel} of relay {owner}: no relay of this machine is left to "
                    "manage it",
                    kernel=kernel_id,
                    owner=record.owner,
                )
            await self._forget(kernel_id, "shutdown")

    async def _forget(self, kernel_id: str, reason: str) -> None:
        """A kernel's process is gone: forgotten here, in the machine's list and in Redis; the relays told."""
        self._ledger.remove(kernel_id)
        self.drop(kernel_id, reason)
        message: dict[str, Any] = {"type": "gone", "id": kernel_id, "reason": reason}
        try:
            await self._store.unregister(kernel_id)
        except Exception:
            return
        self._mailbox.broadcast(message, self._state.lease * 2, self._state.others)


class _Known:
    """The kernels Redis lists or this relay serves (without copying either)."""

    def __init__(self, ids: set[str], kernels: KernelRegistry) -> None:
        self._ids = ids
        self._kernels = kernels

    def __contains__(self, kernel_id: object) -> bool:
        return kernel_id in self._ids or kernel_id in self._kernels


__all__ = ["FleetGuests"]

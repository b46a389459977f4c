# -*- test-case-name: tests.fleet.test_fleet -*-
"""
This relay's own kernels in the fleet: registered before they are used (every relay whose lease runs is told,
and answers once it serves the kernel, for :data:`KNOWN_TIMEOUT` at most), their record kept naming their
process, unregistered when they end, registered again when Redis lost them, and served as guests from the
moment another relay adopted them (this relay's lease lapsed meanwhile: a pause, a partition).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from twisted.internet.defer import Deferred, DeferredList
from twisted.logger import Logger

from ..kernels import Kernel, KernelRegistry
from .ledger import Ledger
from .mailbox import Mailbox
from .marks import FleetMarks
from .records import KernelRecord, now_iso
from .state import FleetState
from .store import FleetStore
from .tokens import TokenSharing

log = Logger()

#: How long a spawn waits for the other relays to say they serve the new kernel (a frozen one is not waited
#: for longer: it reads the kernel from Redis when it wakes).
KNOWN_TIMEOUT: Final = 2.0


class OwnKernels:
    """Keeps this relay's kernels in the fleet's registry; a ``KernelObserver``."""

    def __init__(
        self,
        store: FleetStore,
        kernels: KernelRegistry,
        state: FleetState,
        tokens: TokenSharing,
        marks: FleetMarks,
        mailbox: Mailbox,
        ledger: Ledger,
    ) -> None:
        self._store = store
        self._ledger = ledger
        self._kernels = kernels
        self._state = state
        self._tokens = tokens
        self._marks = marks
        self._mailbox = mailbox
        self.unregistering: set[Deferred[Any]] = set()
        """Ends of kernels being written to Redis: the relay leaves only once they are."""
        kernels.add_observer(self)

    def register(
        self, kernel: Kernel, reservation: str, env: Mapping[str, str] | None = None
    ) -> Deferred[None]:
        """Put a kernel this relay started in the registry, and tell the other relays."""
        return Deferred.fromCoroutine(self._register(kernel, reservation, env))

    async def _register(
        self, kernel: Kernel, reservation: str, env: Mapping[str, str] | None
    ) -> None:
        about = await self._kernels.describe(kernel.id)
        record = KernelRecord(
            owner=self._state.relay_id,
            spec=kernel.spec_name,
            created=now_iso(),
            about=about,
            env=dict(env) if env else None,
        )
        self._state.records[kernel.id] = record
        # Before the write: should its answer be lost, the kernel's stop still unregisters it.
        self._state.registered.add(kernel.id)
        self._ledger.write(kernel.id, record)
        await self._store.put_record(kernel.id, record, reservation)
        await self._tell_known(kernel.id)

    async def _tell_known(self, kernel_id: str) -> None:
        """
        Tell the other relays of a new kernel, and wait until each serves it. The relays are read after the
        kernel is registered: one whose lease is written later reads the kernel when it joins.
        """
        try:
            relays = await self._store.relays()
        except Exception:
            return  # registered: the others read it at their next sync
        message = {"type": "kernel", "id": kernel_id}
        ttl = self._state.lease * 2
        waits = [
            self._mailbox.request(relay, message, KNOWN_TIMEOUT, ttl)
            for relay in relays
            if relay != self._state.relay_id
        ]
        await DeferredList(waits, consumeErrors=True)

    def lost(self, ids: set[str]) -> bool:
        """Whether Redis lost any of this relay's kernels (it restarted empty)."""
        return any(
            k.id in self._state.registered and k.id not in ids for k in self._kernels.owned()
        )

    async def check(self, ids: set[str]) -> None:
        """Register again the kernels Redis lost, and demote those another relay took over."""
        for kernel in self._kernels.owned():
            if kernel.id not in self._state.registered:
                continue
            if kernel.id not in ids:
                await self._register_again(kernel)
                continue
            owner = await self._store.owner(kernel.id)
            if owner is None:
                # Not written by a relay (forged, logged): this relay still owns it, and says so again.
                await self._store.set_owner(kernel.id, self._state.relay_id)
            elif owner != self._state.relay_id:
                self._demote(kernel.id, owner)

    def _demote(self, kernel_id: str, owner: str) -> None:
        """This relay's lease lapsed and another adopted the kernel: one manager only, this one serves it."""
        log.warn(
            "Relay {owner} took kernel {kernel} over while this relay's lease lapsed",
            owner=owner,
            kernel=kernel_id,
        )
        self._state.registered.discard(kernel_id)
        record = self._state.records.get(kernel_id) or KernelRecord(owner=owner)
        self._state.records[kernel_id] = record.owned_by(owner)
        self._kernels.demote(kernel_id)

    async def _register_again(self, kernel: Kernel) -> None:
        """Redis lost this relay's kernel (it restarted empty): put it back, with its tokens."""
        log.warn(
            "Kernel {kernel} was missing from the fleet's Redis: registering it again",
            kernel=kernel.id,
        )
        self._state.registered.discard(kernel.id)
        record = self._state.records.get(kernel.id)
        await self._register(kernel, "", record.env if record is not None else None)
        self._tokens.share_again(kernel.id)

    # -- KernelObserver ---------------------------------------------------------------------------------

    def kernel_started(self, kernel: Kernel) -> None:
        pass

    def kernel_stopped(self, kernel: Kernel, reason: str) -> None:
        self._state.records.pop(kernel.id, None)
        self._marks.forget(kernel.id)
        if kernel.id not in self._state.registered:
            return
        self._state.registered.discard(kernel.id)
        self._ledger.remove(kernel.id)
        # The relay leaves Redis only once the ends of its kernels are written there.
        d = Deferred.fromCoroutine(self._unregister(kernel.id, reason))
        if not d.called:
            self.unregistering.add(d)
            d.addBoth(lambda _: self.unregistering.discard(d))

    async def _unregister(self, kernel_id: str, reason: str) -> None:
        try:
            await self._store.unregister(kernel_id)
        except Exception as error:
            log.warn(
                "Kernel {kernel} ended but Redis could not be told: {error}",
                kernel=kernel_id,
                error=error,
            )
            return
        message = {"type": "gone", "id": kernel_id, "reason": reason}
        self._mailbox.broadcast(message, self._state.lease * 2, self._state.others)

    def kernel_restarting(self, kernel: Kernel) -> None:
        pass

    def kernel_restarted(self, kernel: Kernel) -> None:
        """A restart runs a new process: the record must name it, or whoever adopts the kernel finds it gone."""
        if kernel.id in self._state.registered and self._kernels.owns(kernel.id):
            Deferred.fromCoroutine(self._describe_again(kernel))

    async def _describe_again(self, kernel: Kernel) -> None:
        record = self._state.records.get(kernel.id) or KernelRecord(
            owner=self._state.relay_id, spec=kernel.spec_name
        )
        try:
            record = record.describing(await self._kernels.describe(kernel.id))
            self._state.records[kernel.id] = record
            self._ledger.write(kernel.id, record)
            await self._store.put_record(kernel.id, record)
        except Exception as error:
            log.warn(
                "Kernel {kernel} restarted but its record in Redis still names the old process: {error}",
                kernel=kernel.id,
                error=error,
            )

    def kernel_ready(self, kernel: Kernel) -> None:
        pass


__all__ = ["KNOWN_TIMEOUT", "OwnKernels"]

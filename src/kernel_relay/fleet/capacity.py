# -*- test-case-name: tests.fleet.test_fleet -*-
"""
The fleet's share in each start of a kernel (``FleetCapacity``): a place in ``--max-kernels`` counted over
every relay, asked only of a relay that has joined its fleet (a spawn asked while it joins waits for it, for
:data:`JOIN_WAIT` at most), and the new kernel registered before it is used.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IReactorTime

from ..kernels import Kernel
from .owned import OwnKernels
from .state import FleetState, Membership
from .store import FleetStore, FleetUnavailable

#: How long a reserved place in ``--max-kernels`` is held for a kernel that is starting.
RESERVATION_SECONDS: Final = 300.0
#: How long a spawn asked of a relay that is joining its fleet waits for it to have joined.
JOIN_WAIT: Final = 10.0


class FleetSpawning:
    """Places in ``--max-kernels`` and registration of new kernels; see the module docstring."""

    def __init__(
        self, store: FleetStore, state: FleetState, own: OwnKernels, clock: IReactorTime
    ) -> None:
        self._store = store
        self._state = state
        self._own = own
        self._clock = clock
        self._joining: list[Deferred[None]] = []
        """Spawns waiting for this relay to have joined."""

    @property
    def ready(self) -> bool:
        """Whether this relay has joined the fleet (and is not leaving it)."""
        return self._state.membership is Membership.JOINED

    def reserve(self, reservation: str, max_kernels: int | None) -> Deferred[bool]:
        """A place in ``--max-kernels``; a spawn asked while this relay joins waits for it to have joined."""
        return Deferred.fromCoroutine(self._reserve(reservation, max_kernels))

    async def _reserve(self, reservation: str, max_kernels: int | None) -> bool:
        await self.when_joined()
        return await self._store.reserve(reservation, max_kernels, RESERVATION_SECONDS)

    def unreserve(self, reservation: str) -> None:
        self._store.unreserve(reservation).addErrback(lambda f: None)

    def register(
        self, kernel: Kernel, reservation: str, env: Mapping[str, str] | None = None
    ) -> Deferred[None]:
        return self._own.register(kernel, reservation, env)

    def joined(self) -> None:
        """The relay has joined: the spawns waiting for it go on."""
        waiting, self._joining = self._joining, []
        for waiter in waiting:
            waiter.callback(None)

    def leaving(self) -> None:
        """The relay leaves: the spawns waiting for it fail."""
        waiting, self._joining = self._joining, []
        for waiter in waiting:
            waiter.errback(FleetUnavailable("this relay is leaving the fleet"))

    def when_joined(self, within: float = JOIN_WAIT) -> Deferred[None]:
        """Fires once this relay has joined; fails with FleetUnavailable after ``within`` seconds, or as it leaves."""
        if self._state.membership is Membership.JOINED:
            return succeed(None)
        if self._state.stopping:
            return fail(FleetUnavailable("this relay is leaving the fleet"))
        waiter: Deferred[None] = Deferred()

        def too_long() -> None:
            if waiter in self._joining:
                self._joining.remove(waiter)
                waiter.errback(
                    FleetUnavailable(
                        f"this relay has not joined its fleet within {within:g}s (is Redis at "
                        f"{self._store.url} up?): it starts kernels once it has"
                    )
                )

        timer = self._clock.callLater(within, too_long)
        self._joining.append(waiter)

        def settled(result: object) -> object:
            if timer.active():
                timer.cancel()
            return result

        return waiter.addBoth(settled)


__all__ = ["JOIN_WAIT", "RESERVATION_SECONDS", "FleetSpawning"]

# -*- test-case-name: tests.fleet.test_numbering -*-
"""
The numbers a relay gave a kernel's messages alone (Redis away, out of memory, or too slow to number them),
registered with the fleet as soon as Redis can be written (see :mod:`.numbering`): each ``msg_id`` with its
number, so that other relays' submissions of those messages get the same numbers, and the fleet's count past
them. Sent as soon as Redis is back, or within :data:`CATCH_UP` seconds (the kernel's last message, an idle,
may have been numbered alone); the kernel's next submissions wait for its answer (txredisapi may send a call
made on a reconnect after later ones).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Final

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from .store import FleetStore

log = Logger()

#: How often a relay that numbered alone looks whether Redis is back, to register those numbers with it.
CATCH_UP: Final = 0.5
#: The most numbers given alone a relay registers with the fleet, per kernel (the latest).
KEPT: Final = 4096


class AloneNumbers:
    """The kernels whose numbering this relay has moved past the fleet's, and the numbers it gave them."""

    def __init__(
        self,
        store: FleetStore,
        clock: IReactorTime,
        last: Callable[[str], int | None],
        owns: Callable[[str], bool],
        then: Callable[[], None],
    ) -> None:
        self._store = store
        self._clock = clock
        self._last = last
        """A kernel's last number on this relay (None: forgotten)."""
        self._owns = owns
        self._then = then
        """Called once a registration is answered: the kernel's submissions may go on."""
        self._ahead: set[str] = set()
        self._given: dict[str, deque[tuple[str, int]]] = {}
        self._polling: set[str] = set()
        self._resting: set[str] = set()
        """Kernels whose registration failed, or waits for the owner: asked again at the next poll."""
        self._sending: set[str] = set()

    def gave(self, kernel_id: str, msg_id: str, number: int) -> None:
        """This relay numbered a message alone."""
        self._ahead.add(kernel_id)
        self._given.setdefault(kernel_id, deque(maxlen=KEPT)).append((msg_id, number))

    def ahead(self, kernel_id: str) -> None:
        """The fleet's numbering is behind this relay's (it answered at or below a number given here)."""
        self._ahead.add(kernel_id)

    def sending(self, kernel_id: str) -> bool:
        """Whether a registration is on its way: the kernel's next submission waits for it."""
        return kernel_id in self._sending

    def catch_up(self, kernel_id: str) -> None:
        """Register what was given alone and move the fleet's count past it, once Redis can be written."""
        last = self._last(kernel_id)
        if kernel_id not in self._ahead or kernel_id in self._resting or last is None:
            return
        if not self._store.up or self._store.full:
            self._poll(kernel_id)
            return
        self._ahead.discard(kernel_id)
        self._sending.add(kernel_id)
        given = list(self._given.get(kernel_id, ()))
        d = self._store.bump(kernel_id, last, given, self._owns(kernel_id), self._clock.seconds())
        d.addCallbacks(
            self._bumped, self._failed, (kernel_id, last, given), errbackArgs=(kernel_id,)
        )

    def forget(self, kernel_id: str) -> None:
        self._ahead.discard(kernel_id)
        self._given.pop(kernel_id, None)
        self._sending.discard(kernel_id)

    def _bumped(self, seq: int, kernel_id: str, last: int, given: list[tuple[str, int]]) -> None:
        if not seq:  # Redis lost the kernel's numbering: its owner starts it again first
            self._failed(None, kernel_id)
            return
        self._sending.discard(kernel_id)
        kept = self._given.get(kernel_id)
        while kept and given and kept[0][1] <= given[-1][1]:
            kept.popleft()
        log.info(
            "The fleet's numbering of kernel {kernel} moves past {last}, given by this relay alone",
            kernel=kernel_id,
            last=last,
        )
        self._then()

    def _failed(self, failure: object, kernel_id: str) -> None:
        self._sending.discard(kernel_id)
        if self._last(kernel_id) is not None:
            self._ahead.add(kernel_id)
            self._resting.add(kernel_id)
            self._poll(kernel_id)
        self._then()

    def _poll(self, kernel_id: str) -> None:
        if kernel_id not in self._polling:
            self._polling.add(kernel_id)
            self._clock.callLater(CATCH_UP, self._polled, kernel_id)

    def _polled(self, kernel_id: str) -> None:
        self._polling.discard(kernel_id)
        self._resting.discard(kernel_id)
        self.catch_up(kernel_id)


__all__ = ["CATCH_UP", "KEPT", "AloneNumbers"]

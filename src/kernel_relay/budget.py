"""
The relay's bound on the bytes waiting to go out to all its clients together (``--max-total-buffered-bytes``),
one for every front: each connection that buffers for a client (an Engine.IO session, a Jupyter channels
WebSocket) reports its backlog after it is handed bytes, replays included. Over the bound, the connections with
the most waiting are shed (closed as slow clients) until the rest fit.

A leaf: it knows no protocol, transport or relay module, so that both ``kernel_relay.engineio`` (which must not
know the relay) and the fronts can be given the same one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol


class Holder(Protocol):
    """A connection that holds bytes for a client."""

    @property
    def buffered_bytes(self) -> int:
        """What waits to go out to the client now."""
        ...

    def shed(self, limit: int) -> None:
        """Close at once as a slow client: all connections together hold more than ``limit`` bytes."""
        ...


class BufferBudget:
    """
    The backlogs of every holder, as last reported, against ``limit`` (None: counted, never shed). A holder is
    counted from its first report with bytes waiting until it reports none or is forgotten.
    """

    def __init__(self, limit: int | None) -> None:
        if limit is not None and limit <= 0:
            raise ValueError("the total buffer bound must be positive (or None)")
        self.limit = limit
        self._counted: dict[Holder, int] = {}
        self._total = 0
        self._shedding = False
        #: Told how many counted bytes were let go when a holder is forgotten or shed (to give memory back).
        self.on_released: Callable[[int], None] | None = None

    @property
    def total(self) -> int:
        """The bytes waiting for every holder together, as last reported."""
        return self._total

    def report(self, holder: Holder, buffered: int) -> None:
        """``holder`` has ``buffered`` bytes waiting now; over the limit, shed the largest backlogs."""
        counted = self._counted
        if buffered:
            self._total += buffered - counted.get(holder, 0)
            counted[holder] = buffered
        elif holder in counted:
            self._total -= counted.pop(holder)
        limit = self.limit
        if limit is not None and self._total > limit and not self._shedding:
            self._shed(limit)

    def forget(self, holder: Holder) -> None:
        """``holder`` is closed: what it held is no longer counted."""
        held = self._counted.pop(holder, 0)
        if held:
            self._total -= held
            if self.on_released is not None:
                self.on_released(held)

    def measure(self) -> int:
        """Count every holder's backlog again now (they drain without telling) and return the total."""
        counted = self._counted
        total = 0
        for holder in list(counted):
            buffered = holder.buffered_bytes
            if buffered:
                counted[holder] = buffered
                total += buffered
            else:
                del counted[holder]
        self._total = total
        return total

    def _shed(self, limit: int) -> None:
        if self.measure() <= limit:
            return
        self._shedding = True
        try:
            largest = sorted(self._counted.items(), key=lambda item: item[1], reverse=True)
            for holder, buffered in largest:
                if self._total <= limit:
                    break
                if self._counted.pop(holder, None) is None:
                    continue  # shed already, with another
                self._total -= buffered
                holder.shed(limit)
                if self.on_released is not None:
                    self.on_released(buffered)
        finally:
            self._shedding = False

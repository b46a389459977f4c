"""Giving freed client buffers back to the system: when, and how often."""

from __future__ import annotations

from twisted.internet.task import Clock

from kernel_relay.budget import BufferBudget
from kernel_relay.memory import TRIM_INTERVAL, WORTH_TRIMMING, MemoryGiveBack, _malloc_trim


def test_a_large_release_trims_once_a_moment_later() -> None:
    """Once enough was let go the allocator is trimmed after TRIM_INTERVAL, once for a burst of releases."""
    clock = Clock()
    trims: list[float] = []
    give_back = MemoryGiveBack(clock, lambda: trims.append(clock.seconds()))
    give_back.released(WORTH_TRIMMING // 2)
    clock.advance(TRIM_INTERVAL * 2)
    assert trims == []
    for _ in range(10):
        give_back.released(WORTH_TRIMMING)
    clock.advance(TRIM_INTERVAL)
    assert trims == [TRIM_INTERVAL * 3]
    clock.advance(TRIM_INTERVAL * 5)
    assert len(trims) == 1


def test_the_budget_reports_what_closed_and_shed_holders_held() -> None:
    """Forgetting or shedding a holder tells on_released how many counted bytes were let go."""

    class Holder:
        buffered_bytes = 0

        def shed(self, limit: int) -> None:
            budget.forget(self)

    budget = BufferBudget(1000)
    released: list[int] = []
    budget.on_released = released.append
    first, second = Holder(), Holder()
    first.buffered_bytes = 300
    budget.report(first, 300)
    budget.forget(first)
    second.buffered_bytes = 1200
    budget.report(second, 1200)
    assert released == [300, 1200]


def test_glibc_trim_is_found_here() -> None:
    """On this (glibc) system malloc_trim is found and can be called."""
    trim = _malloc_trim()
    assert trim is not None
    trim()

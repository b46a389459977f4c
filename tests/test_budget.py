"""The relay-wide buffer budget: what it counts, whom it sheds, what it forgets."""

from __future__ import annotations

import pytest

from kernel_relay.budget import BufferBudget


class Holder:
    """A connection with a backlog the test sets; shed records the limit it was shed for."""

    def __init__(self, budget: BufferBudget, name: str) -> None:
        self.budget = budget
        self.name = name
        self.buffered_bytes = 0
        self.shed_for: int | None = None

    def hand(self, size: int) -> None:
        self.buffered_bytes += size
        self.budget.report(self, self.buffered_bytes)

    def shed(self, limit: int) -> None:
        self.shed_for = limit
        self.buffered_bytes = 0
        self.budget.forget(self)


def test_over_the_limit_the_largest_backlogs_are_shed_until_the_rest_fit() -> None:
    """Past the limit the holders with the most waiting are shed, largest first, no more than needed."""
    budget = BufferBudget(10_000)
    small, large, middle = (Holder(budget, name) for name in ("small", "large", "middle"))
    small.hand(1_000)
    large.hand(6_000)
    middle.hand(2_500)
    assert budget.total == 9_500 and large.shed_for is None
    small.hand(1_000)
    assert large.shed_for == 10_000
    assert small.shed_for is None and middle.shed_for is None
    assert budget.total == 4_500


def test_drained_backlogs_are_counted_again_before_anyone_is_shed() -> None:
    """A holder that drained without telling is not shed for bytes it no longer holds."""
    budget = BufferBudget(10_000)
    first, second = Holder(budget, "first"), Holder(budget, "second")
    first.hand(8_000)
    first.buffered_bytes = 0  # it drained
    second.hand(5_000)
    assert first.shed_for is None and second.shed_for is None
    assert budget.total == 5_000


def test_forgotten_and_empty_holders_are_not_kept() -> None:
    """A holder that reports nothing waiting, or is forgotten, no longer counts (nor is referenced)."""
    budget = BufferBudget(None)
    first, second = Holder(budget, "first"), Holder(budget, "second")
    first.hand(100)
    second.hand(200)
    budget.report(first, 0)
    budget.forget(second)
    assert budget.total == 0 and budget.measure() == 0
    assert not budget._counted


def test_without_a_limit_nothing_is_shed_but_all_is_measured() -> None:
    """With no limit the budget only counts, for the gauge; measure counts every backlog afresh."""
    budget = BufferBudget(None)
    holders = [Holder(budget, str(n)) for n in range(3)]
    for holder in holders:
        holder.hand(10**9)
    holders[0].buffered_bytes = 5
    assert budget.measure() == 2 * 10**9 + 5
    assert all(holder.shed_for is None for holder in holders)


def test_a_bound_must_be_positive() -> None:
    """A zero or negative overall bound is refused."""
    with pytest.raises(ValueError, match="positive"):
        BufferBudget(0)

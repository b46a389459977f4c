"""Operations per kernel whose outcome every caller who asked meanwhile shares."""

from __future__ import annotations

from kernel_relay.kernels._waiters import OperationWaiters
from tests.fakes import failure_of, result_of


def test_the_first_caller_begins_and_all_share_the_result() -> None:
    """Only the first caller is told to begin; every caller gets the one result, and then none is under way."""
    waiters: OperationWaiters[str] = OperationWaiters()
    first, begins = waiters.join("k")
    second, also_begins = waiters.join("k")
    other, other_begins = waiters.join("other")
    assert begins and not also_begins and other_begins and "k" in waiters
    waiters.succeed("k", "done")
    assert result_of(first) == result_of(second) == "done"
    assert "k" not in waiters and not other.called


def test_a_failure_reaches_every_caller() -> None:
    """A failed operation fails every caller's Deferred, and a new one may begin afterwards."""
    waiters: OperationWaiters[None] = OperationWaiters()
    first, _ = waiters.join("k")
    second, _ = waiters.join("k")
    waiters.fail("k", RuntimeError("no"))
    failure_of(first, RuntimeError)
    failure_of(second, RuntimeError)
    assert waiters.join("k")[1]

"""A Jupyter session's mark asked of the fleet while Redis restarts: asked again, never guessed from an old visit."""

from __future__ import annotations

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock

from kernel_relay.fleet.mark_store import MarksUnsure
from kernel_relay.fleet.marks import LOAD_RETRY, FleetMarks
from kernel_relay.fleet.store import FleetUnavailable
from tests.fakes import result_of


class Marks:
    """A store whose ``mark`` fails as the test says, then answers."""

    def __init__(self, *failures: Exception) -> None:
        self.failures = list(failures)
        self.asked = 0

    def mark(self, kernel_id: str, session_id: str) -> Deferred[str | None]:
        self.asked += 1
        if self.failures:
            return fail(self.failures.pop(0))
        return succeed("42 parent-id")


def test_a_mark_redis_cannot_give_yet_is_asked_again_until_it_can() -> None:
    """The chaos run's 9 s Jupyter repeat: Redis restarting as a session came back to a relay it had used before,
    which went by its own older mark; now the relay waits for the fleet's (the front gives up after 2 s)."""
    clock = Clock()
    store = Marks(
        FleetUnavailable("Redis cannot be reached"), MarksUnsure("Redis restarted lately")
    )
    loaded = FleetMarks(store, clock).load("k", "session", patient=True)  # type: ignore[arg-type]
    assert not loaded.called
    clock.advance(LOAD_RETRY)
    clock.advance(LOAD_RETRY)
    assert result_of(loaded) == (42, "parent-id") and store.asked == 3


def test_a_caller_that_gives_up_stops_the_asking() -> None:
    """Redis away for good: the front's timeout cancels, and nothing is asked after."""
    clock = Clock()
    store = Marks(*[FleetUnavailable("away")] * 100)
    loaded = FleetMarks(store, clock).load("k", "session", patient=True)  # type: ignore[arg-type]
    clock.advance(LOAD_RETRY)
    loaded.cancel()
    loaded.addErrback(lambda f: None)
    asked = store.asked
    clock.advance(LOAD_RETRY * 10)
    assert store.asked == asked and not clock.getDelayedCalls()

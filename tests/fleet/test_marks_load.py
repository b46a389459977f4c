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


class Settling:
    """A store whose Redis settles for good: each mark it has is unsure, the ones given in turn, then the last."""

    def __init__(self, *found: str) -> None:
        self.found = list(found)

    def mark(self, kernel_id: str, session_id: str) -> Deferred[str | None]:
        found = self.found.pop(0) if len(self.found) > 1 else self.found[0]
        return fail(MarksUnsure("Redis restarted lately", found))


def test_a_mark_found_while_redis_settles_is_asked_again_even_by_a_relay_new_to_it() -> None:
    """A mark Redis has while the relays save theirs again may be older than one yet to come back: asked again."""
    clock = Clock()
    store = Settling("5 older", "30 fresher", "5 older")
    loaded = FleetMarks(store, clock).load("k", "session", wait=2.0)  # type: ignore[arg-type]
    clock.advance(LOAD_RETRY * 5)
    assert not loaded.called


def test_the_freshest_mark_found_is_the_answer_when_the_wait_runs_out() -> None:
    """A relay of the fleet gone before it saved its marks again: the freshest mark found is resumed from (some
    output sent again at worst), not none (the session told output is missing, or sent everything)."""
    clock = Clock()
    store = Settling("5 older", "30 fresher", "5 older")
    loaded = FleetMarks(store, clock).load("k", "session", wait=2.0)  # type: ignore[arg-type]
    clock.advance(1.0)
    clock.advance(1.0)
    assert result_of(loaded) == (30, "fresher") and not clock.getDelayedCalls()

"""LogLimit: a few lines per client per window, and one line telling how many were held back."""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.logger import LogEvent, globalLogPublisher

from kernel_relay.relay.lograte import LogLimit


def test_a_burst_is_logged_then_counted_and_told_once_per_window() -> None:
    """Past ``burst`` lines a client's lines are held back, counted, and told in one line when the window ends."""
    clock = Clock()
    limit = LogLimit(clock, "refused messages", burst=3, window=10)
    events: list[LogEvent] = []
    globalLogPublisher.addObserver(events.append)
    try:
        allowed = [limit.allow("10.0.0.1") for _ in range(1000)]
        assert allowed.count(True) == 3 and allowed[:3] == [True] * 3
        assert limit.allow("10.0.0.2"), "another client has its own window"
        clock.advance(10)
        told = [e for e in events if e.get("what") == "refused messages"]
        assert [(e["key"], e["count"]) for e in told] == [("10.0.0.1", 997)]
        assert limit.allow("10.0.0.1"), "a new window begins"
        assert len(clock.getDelayedCalls()) == 1, "one timer per client with a window open"
    finally:
        globalLogPublisher.removeObserver(events.append)

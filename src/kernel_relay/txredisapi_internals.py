# -*- test-case-name: tests.test_txredisapi_internals -*-
"""
Every use the relay makes of txredisapi's internals, each behind a function named for what it does.

txredisapi's connection handler has no public way to tell whether it is connected now (its calls wait for a
connection instead, which a relay must not do while Redis is away), nor to set its reconnection back-off.
Both live on the handler's factory (``ConnectionHandler._factory``, a ``RedisFactory``, which is a
``ReconnectingClientFactory``). That is an implementation detail a release may change without notice, so it
is reached here and nowhere else.

``tests/test_txredisapi_internals.py`` checks each against the installed txredisapi and a real Redis, so a
release that moves one fails there, loudly, rather than as a fleet that never notices Redis is back. This
module knows txredisapi's ``ConnectionHandler`` only, and imports nothing of kernel_relay.
"""

from __future__ import annotations

from typing import Any


def set_reconnect_delays(handler: Any, initial: float, maximum: float) -> None:
    """Retry a lost connection after ``initial`` seconds, backing off to at most ``maximum``."""
    factory = handler._factory
    factory.initialDelay = initial
    factory.maxDelay = maximum


def connected(handler: Any) -> bool:
    """Whether ``handler`` holds an open connection now (a call would be sent at once, not wait)."""
    return bool(handler._factory.pool)

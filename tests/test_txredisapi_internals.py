"""
kernel_relay.txredisapi_internals against the installed txredisapi and a real redis-server (loopback), so
that a txredisapi release that moves what the fleet's store relies on (the handler's factory, its pool, its
reconnection delays) fails here.
"""

from __future__ import annotations

from pathlib import Path

import pytest_twisted
import txredisapi

from kernel_relay.txredisapi_internals import connected, set_reconnect_delays
from tests.redis_server import RedisServer, require_redis
from tests.test_internals import until


@pytest_twisted.ensureDeferred
async def test_connected_follows_the_connection_and_it_comes_back_soon(tmp_path: Path) -> None:
    """connected() is False before the connection, True once made, False when Redis goes, True again after."""
    require_redis()
    server = RedisServer(tmp_path / "redis")
    handler = txredisapi.lazyConnection(host="127.0.0.1", port=server.port, convertNumbers=False)
    try:
        set_reconnect_delays(handler, 0.05, 0.2)
        assert (handler._factory.initialDelay, handler._factory.maxDelay) == (0.05, 0.2)
        await until(lambda: connected(handler))
        assert await handler.ping() == "PONG"
        server.stop()
        await until(lambda: not connected(handler))
        server = server.restart()
        # Found again within the back-off set above, not txredisapi's default (up to 10 s, then more).
        await until(lambda: connected(handler), timeout=5.0)
        assert await handler.ping() == "PONG"
    finally:
        await handler.disconnect()
        server.stop()


def test_a_handler_never_connected_is_not_connected() -> None:
    """A lazy connection to a port where nothing listens holds no connection."""
    handler = txredisapi.lazyConnection(host="127.0.0.1", port=1, convertNumbers=False)
    try:
        assert connected(handler) is False
    finally:
        handler.disconnect()

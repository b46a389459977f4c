# -*- test-case-name: tests.fleet.test_store -*-
"""
The connection to the fleet's Redis, below the store: where Redis is (:class:`RedisURL`), the connections
(reconnecting on their own), and calls that fail at once with :class:`FleetUnavailable` while no connection
is up, instead of waiting in a queue to run, out of order, when Redis returns.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import unquote, urlsplit

import txredisapi
from twisted.internet.defer import Deferred, DeferredList, fail
from twisted.python.failure import Failure

from ..txredisapi_internals import connected, set_reconnect_delays

PREFIX: Final = "kernel-relay:"
#: How long one Redis call may take before the fleet counts Redis as gone.
REPLY_TIMEOUT: Final = 5
#: The longest wait between two attempts to reconnect to Redis.
MAX_RETRY_DELAY: Final = 2.0


class FleetUnavailable(Exception):
    """Redis cannot be reached (or did not answer): what needs the fleet cannot be done now."""


class RedisFull(FleetUnavailable):
    """Redis refused a write for want of memory (its ``maxmemory``, with ``noeviction``): it answers reads."""


@dataclass(frozen=True)
class RedisURL:
    """Where the fleet's Redis is: ``redis://[[user]:password@]host[:port][/db]``, or ``rediss://`` for TLS."""

    host: str
    port: int = 6379
    db: int = 0
    password: str | None = None
    username: str | None = None
    tls: bool = False

    @classmethod
    def parse(cls, text: str) -> RedisURL:
        """The URL's parts; ValueError says what is wrong with it."""
        parts = urlsplit(text.strip())
        if parts.scheme not in ("redis", "rediss"):
            raise ValueError(f"{text!r} is not a redis:// or rediss:// URL")
        if not parts.hostname:
            raise ValueError(f"{text!r} names no host")
        try:
            port = parts.port or 6379
        except ValueError:
            raise ValueError(f"{text!r} has an invalid port") from None
        path = parts.path.strip("/")
        if path and not path.isdigit():
            raise ValueError(f"{text!r}: the path is a database number, not {path!r}")
        return cls(
            host=parts.hostname,
            port=port,
            db=int(path or 0),
            password=unquote(parts.password) if parts.password else None,
            username=unquote(parts.username) if parts.username else None,
            tls=parts.scheme == "rediss",
        )

    def __str__(self) -> str:
        """The URL without its password, for logs."""
        scheme = "rediss" if self.tls else "redis"
        secret = ":***@" if self.password else ""
        return f"{scheme}://{self.username or ''}{secret}{self.host}:{self.port}/{self.db}"


def key(*parts: str) -> str:
    return PREFIX + ":".join(parts)


def text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def as_bytes(value: Any) -> bytes:
    return value.encode("utf-8") if isinstance(value, str) else bytes(value)


def field_pairs(reply: Any) -> list[tuple[Any, Any]]:
    """A hash's fields and values as ``HGETALL`` answers them (a dict, or a flat list), in pairs."""
    if isinstance(reply, dict):
        return list(reply.items())
    flat = list(reply or ())
    return [(flat[i], flat[i + 1]) for i in range(0, len(flat) - 1, 2)]


class RedisConnection:
    """One connection for calls, one for this relay's mailbox (a blocking read)."""

    def __init__(self, url: RedisURL) -> None:
        self.url = url
        self._calls: Any = None
        self._mailbox: Any = None
        self.full = False
        """Whether Redis refused a write for want of memory lately (cleared by the fleet's lease keeper)."""
        self.memory_refusals = 0
        """How many writes Redis refused for want of memory."""

    def connect(self) -> None:
        """Start connecting (and reconnecting whenever a connection is lost)."""
        self._calls = self._connection(REPLY_TIMEOUT)
        # Its reads block for a second at most: a connection silent for longer is dead.
        self._mailbox = self._connection(REPLY_TIMEOUT + 1)

    def _connection(self, reply_timeout: float | None) -> Any:
        tls: Any = False
        if self.url.tls:
            from twisted.internet.ssl import optionsForClientTLS

            tls = optionsForClientTLS(self.url.host)
        handler = txredisapi.lazyConnection(
            host=self.url.host,
            port=self.url.port,
            dbid=self.url.db or None,
            password=self.url.password,
            username=self.url.username,
            ssl_context_factory=tls,
            connectTimeout=REPLY_TIMEOUT,
            replyTimeout=reply_timeout,
            convertNumbers=False,
        )
        set_reconnect_delays(handler, 0.2, MAX_RETRY_DELAY)
        return handler

    def disconnect(self) -> Deferred[Any]:
        handlers = [h for h in (self._calls, self._mailbox) if h is not None]
        self._calls = self._mailbox = None
        return DeferredList([h.disconnect() for h in handlers], consumeErrors=True)

    @property
    def up(self) -> bool:
        """Whether the connection for calls is open now."""
        return self._calls is not None and connected(self._calls)

    def _call(self, *command: Any, handler: Any = None) -> Deferred[Any]:
        handler = handler or self._calls
        if handler is None or not connected(handler):
            return fail(FleetUnavailable(f"Redis at {self.url} cannot be reached"))
        d: Deferred[Any] = handler.execute_command(*command)
        return d.addErrback(self._unavailable)

    def _script(self, script: str, keys: Sequence[str], args: Sequence[Any]) -> Deferred[Any]:
        if self._calls is None or not connected(self._calls):
            return fail(FleetUnavailable(f"Redis at {self.url} cannot be reached"))
        d: Deferred[Any] = self._calls.eval(script, list(keys), list(args))
        return d.addErrback(self._unavailable)

    def _unavailable(self, failure: Failure) -> Failure:
        if failure.check(txredisapi.ConnectionError, txredisapi.TimeoutError):  # type: ignore[no-untyped-call]
            raise FleetUnavailable(f"Redis at {self.url}: {failure.value}")
        if failure.check(txredisapi.ResponseError):  # type: ignore[no-untyped-call]
            if str(failure.value).startswith("OOM"):
                self.full = True
                self.memory_refusals += 1
                raise RedisFull(f"Redis at {self.url} is out of memory: {failure.value}")
            raise FleetUnavailable(f"Redis at {self.url} refused a command: {failure.value}")
        return failure


__all__ = [
    "PREFIX",
    "FleetUnavailable",
    "RedisConnection",
    "RedisFull",
    "RedisURL",
    "as_bytes",
    "field_pairs",
    "key",
    "text",
]

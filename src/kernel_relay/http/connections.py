"""
The relay's connections as file descriptors: how many it may hold, which it drops first, and how long a
client may take to send a request.

A client needs no token to open a TCP connection, and each connection costs a file descriptor. Without a
bound, connections that never authenticate (or that trickle a request header one byte at a time) take every
descriptor, and the relay can then no longer spawn a kernel or accept anyone.

- :func:`raise_open_file_limit` raises the process's soft ``RLIMIT_NOFILE`` to its hard limit, as servers
  do, and :meth:`ConnectionBounds.from_file_limit` derives the bounds from the limit in force.
- :class:`ConnectionLimiter` keeps account of the site's open connections by peer address: it refuses one
  more from an address that holds its share, and when every slot is taken it evicts the oldest connection
  not marked trusted (:meth:`~ConnectionLimiter.trust`) to make room. Only if all are trusted is the
  newcomer refused.
- :class:`RequestDeadlineChannel` is the site's HTTP channel: a request's line and headers must arrive within
  ``header_timeout`` seconds and its body within ``body_timeout``; requests being answered (a held long-poll,
  a WebSocket) are never timed out.
- :class:`ConnectionEvents` logs refusals, evictions and timeouts at most once per address and interval, and
  reports every one to a callback (the relay's error counter).

This module knows transports (TCP, TLS, UNIX sockets), peer addresses and HTTP/1.1 request framing. It must
not know tokens, kernels, Engine.IO or socket.io, nor import the rest of the relay: what makes a connection
trusted is its callers' decision. It takes its clock as an argument and never imports the global reactor.
What it needs of Twisted's transports beyond their interfaces (the moment a transport closes, whether it is
closing) it has from :mod:`kernel_relay.twisted_internals`, whose tests fail if a Twisted release changes it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any, Final

from twisted.internet.address import UNIXAddress
from twisted.internet.interfaces import IAddress, IDelayedCall, IReactorTime, ITransport
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure
from twisted.web.http import HTTPChannel
from twisted.web.iweb import IRequest

from ..twisted_internals import abort_connection, closing, hook_connection_lost

log = Logger()

#: The soft open-file limit :func:`raise_open_file_limit` sets when the hard limit is unlimited (or higher).
MAX_OPEN_FILES: Final = 1_048_576
#: What :func:`raise_open_file_limit` reports when it cannot read the limit at all.
FALLBACK_OPEN_FILES: Final = 1024
#: Descriptors :meth:`ConnectionBounds.from_file_limit` keeps back from connections, at least.
MIN_RESERVE: Final = 256
MIN_CONNECTIONS: Final = 16
MIN_PER_ADDRESS: Final = 16

#: Seconds a client has to send a request's line and headers, and then its body.
HEADER_TIMEOUT: Final = 10.0
BODY_TIMEOUT: Final = 60.0
#: Seconds a keep-alive connection may sit idle between requests (Twisted's default is 12 hours).
IDLE_TIMEOUT: Final = 75.0
#: Seconds a timed-out connection gets to close after its 408 before it is aborted.
ABORT_GRACE: Final = 5.0
#: Seconds between two log lines of one kind of event for one address.
LOG_INTERVAL: Final = 10.0
#: Addresses :class:`ConnectionEvents` remembers; beyond it, new addresses share one rate limit.
MAX_TRACKED_ADDRESSES: Final = 4096

#: The address every UNIX socket client counts as.
UNIX_HOST: Final = "unix"
UNKNOWN_HOST: Final = "unknown"
_UNTRACKED: Final = "*"


def _ignore(kind: str) -> None:
    pass


def raise_open_file_limit(cap: int = MAX_OPEN_FILES) -> int:
    """
    Raise the soft ``RLIMIT_NOFILE`` to the hard limit (at most ``cap``) and return the soft limit now in
    force. Never raises: a failure is logged and the limit as it was is returned (or
    :data:`FALLBACK_OPEN_FILES` where it cannot be read). Kernels the relay starts inherit the new limit.
    """
    try:
        import resource
    except ImportError:  # not POSIX
        return FALLBACK_OPEN_FILES
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (OSError, ValueError) as error:
        log.warn("Could not read the open file limit: {error}", error=str(error))
        return FALLBACK_OPEN_FILES
    target = cap if hard == resource.RLIM_INFINITY else min(hard, cap)
    if soft != resource.RLIM_INFINITY and soft >= target:
        return soft
    if soft == resource.RLIM_INFINITY:
        return cap
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (OSError, ValueError) as error:
        log.warn(
            "Could not raise the open file limit from {soft} to {target}: {error}",
            soft=soft,
            target=target,
            error=str(error),
        )
        return soft
    log.info("Raised the open file limit from {soft} to {target}", soft=soft, target=target)
    return target


@dataclass(frozen=True)
class ConnectionBounds:
    """How many connections the site holds at once, in all and from one peer address."""

    max_connections: int
    max_per_address: int

    def __post_init__(self) -> None:
        if self.max_connections < 1 or self.max_per_address < 1:
            raise ValueError(f"connection bounds must be positive: {self}")

    @classmethod
    def from_file_limit(cls, nofile: int) -> ConnectionBounds:
        """
        Bounds that leave file descriptors for authenticated work out of ``nofile`` (the open file limit).

        A kernel spawn takes a dozen descriptors or more (its ZeroMQ sockets, pipes, the connection file),
        and the relay has files of its own, so a reserve of ``max(256, nofile // 4)`` is kept back:
        ``max_connections = nofile - reserve``, but never below 16. One address may hold a quarter of
        that, ``max_per_address = max(16, max_connections // 4)``. So 1024 gives 768 connections, 192 per
        address; 1,048,576 gives 786,432 and 196,608; 256 or less gives 16 and 16.
        """
        reserve = max(MIN_RESERVE, nofile // 4)
        max_connections = max(MIN_CONNECTIONS, nofile - reserve)
        return cls(max_connections, max(MIN_PER_ADDRESS, max_connections // 4))


def peer_host(address: IAddress | None) -> str:
    """The address a connection counts against: its host, :data:`UNIX_HOST` for a UNIX socket."""
    if isinstance(address, UNIXAddress):
        return UNIX_HOST
    host = getattr(address, "host", None)
    return host if isinstance(host, str) and host else UNKNOWN_HOST


class ConnectionEvents:
    """
    Refusals, evictions and timeouts: each reported to ``on_event(kind)`` (a counter), and logged at most
    once per ``interval`` seconds per kind and peer address; the next line logged says how many were not.
    """

    def __init__(
        self,
        clock: IReactorTime,
        on_event: Callable[[str], None] = _ignore,
        interval: float = LOG_INTERVAL,
    ) -> None:
        self._clock = clock
        self._on_event = on_event
        self._interval = interval
        # (kind, host) -> [time of the last line logged, events not logged since]
        self._recent: dict[tuple[str, str], list[float]] = {}
        self._pruned_at = float("-inf")

    def report(
        self, kind: str, host: str, level: LogLevel, log_format: str, **fields: object
    ) -> None:
        """Count one event of ``kind`` from ``host``, and log ``log_format`` unless it was just logged."""
        self._on_event(kind)
        now = self._clock.seconds()
        key = self._key(kind, host, now)
        recent = self._recent.get(key)
        if recent is not None and now - recent[0] < self._interval:
            recent[1] += 1
            return
        suppressed = int(recent[1]) if recent is not None else 0
        self._recent[key] = [now, 0]
        if suppressed:
            log_format += (
                " ({suppressed} more like it from this address not logged)"
                if key[1] != _UNTRACKED
                else " ({suppressed} more like it from other addresses not logged)"
            )
        log.emit(level, log_format, address=host, suppressed=suppressed, kind=kind, **fields)

    def _key(self, kind: str, host: str, now: float) -> tuple[str, str]:
        key = (kind, host)
        if key in self._recent or len(self._recent) < MAX_TRACKED_ADDRESSES:
            return key
        if now - self._pruned_at >= self._interval:
            self._pruned_at = now
            self._recent = {
                known: recent
                for known, recent in self._recent.items()
                if now - recent[0] < self._interval
            }
            if len(self._recent) < MAX_TRACKED_ADDRESSES:
                return key
        # A flood from more addresses than are tracked: the newest share one limit.
        return (kind, _UNTRACKED)


@dataclass(slots=True)
class _Connection:
    transport: ITransport
    host: str
    since: float


class ConnectionLimiter:
    """
    Bookkeeping of a site's open connections by peer address, enforcing ``bounds``:

    - :meth:`admit` refuses a connection from an address that holds ``max_per_address`` already;
    - when ``max_connections`` are open, it evicts (aborts) the oldest connection that is not trusted to
      make room, and refuses the newcomer if every open connection is trusted;
    - :meth:`connected` registers an admitted connection's transport and releases its slot when it closes;
      an evicted connection's slot is free at once.

    A connection becomes trusted through :meth:`trust`, once a request on it presented a valid token or it
    carries a session that joined a kernel. Refusals and evictions are reported through ``on_event`` as
    ``"connection_refused"`` and ``"connection_evicted"``.
    """

    def __init__(
        self,
        bounds: ConnectionBounds,
        *,
        clock: IReactorTime,
        on_event: Callable[[str], None] = _ignore,
    ) -> None:
        self.bounds = bounds
        self.events = ConnectionEvents(clock, on_event)
        self._clock = clock
        # Keyed by id(): a transport's own equality is no concern of this bookkeeping. Dicts keep insertion
        # order, so the first untrusted connection is the oldest.
        self._untrusted: dict[int, _Connection] = {}
        self._trusted: dict[int, _Connection] = {}
        self._by_address: dict[str, int] = {}

    @property
    def open_connections(self) -> int:
        return len(self._untrusted) + len(self._trusted)

    def open_by_address(self, host: str) -> int:
        return self._by_address.get(host, 0)

    def is_trusted(self, transport: object) -> bool:
        return id(transport) in self._trusted

    def admit(self, host: str) -> bool:
        """Whether a new connection from ``host`` may open; evicts the oldest untrusted one if need be."""
        held = self._by_address.get(host, 0)
        if held >= self.bounds.max_per_address:
            self._refused(
                host, "{held} connections from this address are open, the most allowed", held
            )
            return False
        if self.open_connections < self.bounds.max_connections:
            return True
        if not self._untrusted:
            self._refused(
                host, "all {held} open connections are trusted", self.bounds.max_connections
            )
            return False
        self._evict(next(iter(self._untrusted.values())))
        return True

    def connected(self, transport: ITransport, host: str) -> None:
        """Count ``transport``'s connection (just admitted) against ``host`` until it closes."""
        key = id(transport)
        if not hook_connection_lost(transport, lambda: self._release(key)):
            log.warn(
                "Cannot tell when a {transport} closes: its connection is not counted",
                transport=type(transport).__name__,
            )
            return
        self._untrusted[key] = _Connection(transport, host, self._clock.seconds())
        self._by_address[host] = self._by_address.get(host, 0) + 1

    def trust(self, transport: object) -> None:
        """Never evict ``transport``'s connection. Idempotent; a no-op for a transport not counted."""
        connection = self._untrusted.pop(id(transport), None)
        if connection is not None:
            self._trusted[id(transport)] = connection

    def _release(self, key: int) -> None:
        connection = self._untrusted.pop(key, None) or self._trusted.pop(key, None)
        if connection is None:
            return  # evicted: released already
        count = self._by_address[connection.host] - 1
        if count:
            self._by_address[connection.host] = count
        else:
            del self._by_address[connection.host]

    def _evict(self, connection: _Connection) -> None:
        self._release(id(connection.transport))
        self.events.report(
            "connection_evicted",
            connection.host,
            LogLevel.warn,
            "Dropped the oldest untrusted connection, from {address} (open {age:.0f} s): all "
            "{limit} connection slots are taken",
            age=self._clock.seconds() - connection.since,
            limit=self.bounds.max_connections,
        )
        abort_connection(connection.transport)

    def _refused(self, host: str, reason: str, held: int) -> None:
        self.events.report(
            "connection_refused",
            host,
            LogLevel.warn,
            "Refused a connection from {address}: " + reason,
            held=held,
        )


class Refusal(Protocol):
    """
    A protocol that aborts the connection it is given: how a site refuses a connection. (A factory may
    return None instead for a plain TCP or UNIX port, but under TLS, ``TLSMemoryBIOFactory`` wraps that None
    and fails, leaving the connection open.)
    """

    def makeConnection(self, transport: ITransport) -> None:
        abort_connection(transport)


class _Phase(Enum):
    """What a channel is doing: between requests, receiving a request's head or body, answering it, or
    closing (after a timeout, or closed)."""

    IDLE = "idle"
    HEADER = "header"
    BODY = "body"
    ANSWERING = "answering"
    CLOSING = "closing"


class RequestDeadlineChannel(HTTPChannel):
    """
    An HTTP channel with deadlines on receiving each request: its line and headers must all arrive within
    ``header_timeout`` seconds of its first byte (of the connection being made, for the first request), and
    its body within ``body_timeout`` seconds of the end of the headers.

    Twisted's own idle timeout restarts at every byte, so a client trickling a header never reaches it.
    Past a deadline the client gets 408 (unless it was answered already), the connection is closed, and
    aborted if it has not closed after :data:`ABORT_GRACE` seconds. A request being answered is not timed
    out: the deadlines cover receiving only. It costs one timer per connection, reset (not replaced) at
    each request and body, and nothing per byte. Timers use the channel's ``callLater``, which the site sets
    to its reactor's.
    """

    def __init__(
        self, header_timeout: float, body_timeout: float, events: ConnectionEvents
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self._header_timeout = header_timeout
        self._body_timeout = body_timeout
        self._events = events
        self._phase = _Phase.IDLE
        self._deadline: IDelayedCall | None = None

    def connectionMade(self) -> None:
        super().connectionMade()  # type: ignore[no-untyped-call]
        self._receive()

    def dataReceived(self, data: bytes) -> None:
        if self._phase is _Phase.IDLE:
            self._receive()
        elif self._phase is _Phase.CLOSING:
            return  # timed out: nothing more is read
        super().dataReceived(data)  # type: ignore[no-untyped-call]

    def allHeadersReceived(self) -> None:
        super().allHeadersReceived()  # type: ignore[no-untyped-call]
        if self._phase is _Phase.HEADER and self.length != 0:
            self._phase = _Phase.BODY
            self._arm(self._body_timeout)

    def allContentReceived(self) -> None:
        # Before the request is dispatched: it may be answered at once, and the next one begin. The timer
        # stays: if it fires while the request is answered, it does nothing.
        if self._phase is not _Phase.CLOSING:
            self._phase = _Phase.ANSWERING
        super().allContentReceived()  # type: ignore[no-untyped-call]

    def requestDone(self, request: Any) -> None:
        if self._phase is _Phase.ANSWERING:
            self._phase = _Phase.IDLE
        super().requestDone(request)  # type: ignore[no-untyped-call]

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._phase = _Phase.CLOSING
        self._cancel()
        super().connectionLost(reason)  # type: ignore[no-untyped-call]

    def _receive(self) -> None:
        self._phase = _Phase.HEADER
        self._arm(self._header_timeout)

    def _arm(self, seconds: float) -> None:
        # A pending timer is moved rather than replaced: resetting it later is cheap, so requests in quick
        # succession on one connection share one timer.
        deadline = self._deadline
        if deadline is not None and deadline.active():
            deadline.reset(seconds)
        else:
            self._deadline = self.callLater(seconds, self._timed_out)  # type: ignore[no-untyped-call]

    def _cancel(self) -> None:
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        self._deadline = None

    def _timed_out(self) -> None:
        self._deadline = None
        phase = self._phase
        if phase is not _Phase.HEADER and phase is not _Phase.BODY:
            return  # it is being answered, or between requests
        self._phase = _Phase.CLOSING
        transport = self.transport
        if transport is None or getattr(transport, "negotiatedProtocol", None) == b"h2":
            return  # taken over: by a WebSocket, or by Twisted's HTTP/2 channel (ALPN "h2")
        limit = self._header_timeout if phase is _Phase.HEADER else self._body_timeout
        self._events.report(
            "request_timeout",
            peer_host(transport.getPeer()),
            LogLevel.info,
            "Timed out a request from {address}: its {phase} took over {limit:g} s to arrive",
            phase=phase.value,
            limit=limit,
        )
        if not closing(transport):  # nothing answered it yet
            transport.write(_request_timeout_answer(phase.value, limit))
            self.loseConnection()  # type: ignore[no-untyped-call]
        self._deadline = self.callLater(ABORT_GRACE, self._abort)  # type: ignore[no-untyped-call]

    def _abort(self) -> None:
        self._deadline = None
        if self.transport is not None:
            abort_connection(self.transport)


def _request_timeout_answer(phase: str, limit: float) -> bytes:
    body = json.dumps(
        {"error": f"Request timeout: the request {phase} must arrive within {limit:g} seconds"}
    ).encode()
    return (
        b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
        b"connection: close\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)
    )


def trust_request_connection(request: IRequest) -> None:
    """Mark the connection ``request`` came on trusted, if its site has a :class:`ConnectionLimiter`."""
    channel = getattr(request, "channel", None)
    limiter = getattr(getattr(channel, "site", None), "limiter", None)
    transport = getattr(channel, "transport", None)
    if isinstance(limiter, ConnectionLimiter) and transport is not None:
        limiter.trust(transport)

"""
Admission: which connections the site holds, and which it drops first. A client needs no token to open a
TCP connection, and each connection costs a file descriptor. Without a bound, connections that never
authenticate take every descriptor, and the relay can then no longer spawn a kernel or accept anyone. The
bounds come from the open-file limit (:mod:`.file_limit`); how long a request may take is
:mod:`.deadlines`'.

- :class:`ConnectionLimiter` keeps account of the site's open connections by client address: when every
  slot is taken it evicts the oldest connection not marked trusted (:meth:`~ConnectionLimiter.trust`: it
  presented a valid token) to make room, and refuses the newcomer only if all are trusted. One more from an
  address that holds its share is let in *on probation*: it is dropped unless it presents a valid token
  within :data:`PROBATION_TIMEOUT` seconds, and if it does, the oldest connection of its address that never
  did is evicted for it. So users who share an address with an attacker (behind a NAT or a reverse proxy)
  still get in, and the attacker's connections do not outnumber the address's share.
- Behind a reverse proxy, a connection from one of the operator's trusted proxies counts against the client
  its forwarding header names (:mod:`.forwarded`), request by request, and each request's client address
  (:meth:`~twisted.web.iweb.IRequest.getClientAddress`, so every log) is that client's.
- :class:`ConnectionEvents` logs refusals, evictions and timeouts at most once per address and interval, and
  reports every one to a callback (the relay's error counter).

This module knows transports (TCP, TLS, UNIX sockets) and peer addresses. It must not know tokens, kernels,
Engine.IO or socket.io, nor import the rest of the relay: what makes a connection trusted is its callers'
decision. It takes its clock as an argument and never imports the global reactor. What it needs of
Twisted's transports beyond their interfaces (the moment a transport closes) it has from
:mod:`kernel_relay.twisted_internals`, whose tests fail if a Twisted release changes it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.interfaces import IAddress, IDelayedCall, IReactorTime, ITransport
from twisted.internet.protocol import Protocol
from twisted.logger import Logger, LogLevel
from twisted.web.iweb import IRequest

from ..twisted_internals import abort_connection, hook_connection_lost
from .file_limit import ConnectionBounds
from .forwarded import TrustedProxies, parse_address

log = Logger()

#: Seconds a connection on probation has to present a valid token (a socket.io client: to join a kernel).
PROBATION_TIMEOUT: Final = 5.0
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


def client_address(host: str) -> IPv4Address | IPv6Address:
    """A forwarded client's address (``host`` is an IP address) as a request's ``getClientAddress()``."""
    address = parse_address(host)
    if address is not None and address.version == 6:
        return IPv6Address("TCP", host, 0)
    return IPv4Address("TCP", host, 0)


@dataclass(slots=True)
class _Connection:
    transport: ITransport
    host: str
    since: float
    #: When a connection on probation is dropped.
    deadline: IDelayedCall | None = None


class ConnectionLimiter:
    """
    Bookkeeping of a site's open connections by client address, enforcing ``bounds``:

    - :meth:`admit` refuses a connection only when ``max_connections`` are open and every one is trusted;
      when they are open and some are not, it evicts (aborts) the oldest untrusted one to make room;
    - :meth:`connected` registers an admitted connection's transport and releases its slot when it closes;
      an evicted connection's slot is free at once. A connection from an address that holds
      ``max_per_address`` already is put on probation instead: at most ``max_probation`` at once (the
      oldest is dropped for a newer one), each dropped after :data:`PROBATION_TIMEOUT` seconds unless
      trusted by then, and closed after its first request if that request did not make it trusted;
    - :meth:`trust` marks a connection trusted, once a request on it presented a valid token or it carries
      a session that joined a kernel. A connection on probation then takes the place of the oldest
      untrusted connection of its address (evicted), or is refused if its address has none.

    ``proxies`` are the trusted reverse proxies: their connections are not bound by their own address, and
    :meth:`identify` counts each against the client its requests come from. Refusals and evictions are
    reported through ``on_event`` as ``"connection_refused"`` and ``"connection_evicted"``.
    """

    def __init__(
        self,
        bounds: ConnectionBounds,
        *,
        clock: IReactorTime,
        on_event: Callable[[str], None] = _ignore,
        proxies: TrustedProxies | None = None,
    ) -> None:
        self.bounds = bounds
        self.events = ConnectionEvents(clock, on_event)
        self.proxies = proxies if proxies is not None else TrustedProxies()
        self._clock = clock
        # Keyed by id(): a transport's own equality is no concern of this bookkeeping. Dicts keep insertion
        # order, so the first untrusted connection is the oldest (of all, and of its address).
        self._untrusted: dict[int, _Connection] = {}
        self._untrusted_by_address: dict[str, dict[int, _Connection]] = {}
        self._trusted: dict[int, _Connection] = {}
        self._probation: dict[int, _Connection] = {}
        # Untrusted and trusted connections by address (not those on probation).
        self._by_address: dict[str, int] = {}

    @property
    def open_connections(self) -> int:
        return len(self._untrusted) + len(self._trusted) + len(self._probation)

    @property
    def on_probation(self) -> int:
        return len(self._probation)

    def open_by_address(self, host: str) -> int:
        return self._by_address.get(host, 0)

    def is_trusted(self, transport: object) -> bool:
        return id(transport) in self._trusted

    def is_on_probation(self, transport: object) -> bool:
        return id(transport) in self._probation

    def admit(self, host: str) -> bool:
        """Whether a new connection from ``host`` may open; evicts the oldest untrusted one if need be."""
        if self._over_share(host):
            return True  # on probation: see connected()
        if self._counted < self.bounds.max_connections:
            return True
        if not self._untrusted:
            self._refused(
                host, "all {held} open connections are trusted", self.bounds.max_connections
            )
            return False
        self._evict(
            next(iter(self._untrusted.values())),
            "all {limit} connection slots are taken",
            self.bounds.max_connections,
        )
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
        self._place(_Connection(transport, host, self._clock.seconds()))

    def identify(self, transport: object, host: str) -> None:
        """
        Count ``transport``'s connection (from a trusted proxy) against ``host``, the client of the request
        it carries now. A new client on it has presented no token yet: the connection is untrusted again
        (or on probation, if ``host`` holds its share).
        """
        key = id(transport)
        waiting = self._probation.get(key)
        if waiting is not None:
            waiting.host = host  # counted against it if it is trusted in time
            return
        connection = self._untrusted.get(key) or self._trusted.get(key)
        if connection is None or connection.host == host:
            return
        self._forget(key)
        connection.host = host
        self._place(connection)

    def trust(self, transport: object) -> None:
        """Never evict ``transport``'s connection. Idempotent; a no-op for a transport not counted."""
        key = id(transport)
        connection = self._untrusted.pop(key, None)
        if connection is not None:
            self._unlist_untrusted(key, connection.host)
            self._trusted[key] = connection
            return
        connection = self._probation.pop(key, None)
        if connection is None:
            return
        self._cancel(connection)
        if self._make_room(connection.host):
            self._count(connection, trusted=True)
            return
        self._refused(
            connection.host,
            "it presented a valid token, but all {held} connections from this address are trusted",
            self._by_address.get(connection.host, 0),
        )
        abort_connection(connection.transport)

    @property
    def _counted(self) -> int:
        return len(self._untrusted) + len(self._trusted)

    def _over_share(self, host: str) -> bool:
        held = self._by_address.get(host, 0)
        return held >= self.bounds.max_per_address and not self.proxies.trusts(host)

    def _place(self, connection: _Connection) -> None:
        """Count a new (or newly identified) connection, or put it on probation if there is no room."""
        if self._over_share(connection.host) or self._counted >= self.bounds.max_connections:
            self._put_on_probation(connection)
        else:
            self._count(connection, trusted=False)

    def _count(self, connection: _Connection, *, trusted: bool) -> None:
        key = id(connection.transport)
        host = connection.host
        if trusted:
            self._trusted[key] = connection
        else:
            self._untrusted[key] = connection
            self._untrusted_by_address.setdefault(host, {})[key] = connection
        self._by_address[host] = self._by_address.get(host, 0) + 1

    def _forget(self, key: int) -> _Connection | None:
        """Stop counting the connection ``key`` (untrusted or trusted); it, or None."""
        connection = self._untrusted.pop(key, None)
        if connection is not None:
            self._unlist_untrusted(key, connection.host)
        else:
            connection = self._trusted.pop(key, None)
        if connection is None:
            return None
        count = self._by_address[connection.host] - 1
        if count:
            self._by_address[connection.host] = count
        else:
            del self._by_address[connection.host]
        return connection

    def _unlist_untrusted(self, key: int, host: str) -> None:
        of_address = self._untrusted_by_address[host]
        del of_address[key]
        if not of_address:
            del self._untrusted_by_address[host]

    def _put_on_probation(self, connection: _Connection) -> None:
        if len(self._probation) >= self.bounds.max_probation:
            oldest = next(iter(self._probation.values()))
            self._end_probation(id(oldest.transport), "newer connections took its place")
        key = id(connection.transport)
        connection.deadline = self._clock.callLater(
            PROBATION_TIMEOUT, self._end_probation, key, "it presented no valid token in time"
        )
        self._probation[key] = connection

    def _end_probation(self, key: int, why: str) -> None:
        connection = self._probation.pop(key, None)
        if connection is None:
            return
        self._cancel(connection)
        self._refused(
            connection.host,
            "no room for it without a valid token ({held} open from this address), and " + why,
            self._by_address.get(connection.host, 0),
        )
        abort_connection(connection.transport)

    def _make_room(self, host: str) -> bool:
        """Evict what a trusted newcomer from ``host`` needs evicted; whether it now has room."""
        if self._over_share(host):
            of_address = self._untrusted_by_address.get(host)
            if not of_address:
                return False
            self._evict(
                next(iter(of_address.values())),
                "{limit} connections from this address are open and a newcomer presented a token",
                self.bounds.max_per_address,
            )
        if self._counted >= self.bounds.max_connections:
            if not self._untrusted:
                return False
            self._evict(
                next(iter(self._untrusted.values())),
                "all {limit} connection slots are taken and a newcomer presented a token",
                self.bounds.max_connections,
            )
        return True

    @staticmethod
    def _cancel(connection: _Connection) -> None:
        if connection.deadline is not None and connection.deadline.active():
            connection.deadline.cancel()
        connection.deadline = None

    def _release(self, key: int) -> None:
        on_probation = self._probation.pop(key, None)
        if on_probation is not None:
            self._cancel(on_probation)
            return
        self._forget(key)  # None if evicted: released already

    def _evict(self, connection: _Connection, reason: str, limit: int) -> None:
        self._forget(id(connection.transport))
        self.events.report(
            "connection_evicted",
            connection.host,
            LogLevel.warn,
            "Dropped the oldest connection without a valid token, from {address} (open {age:.0f} s): "
            + reason,
            age=self._clock.seconds() - connection.since,
            limit=limit,
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


def trust_request_connection(request: IRequest) -> None:
    """Mark the connection ``request`` came on trusted, if its site has a :class:`ConnectionLimiter`."""
    channel = getattr(request, "channel", None)
    limiter = getattr(getattr(channel, "site", None), "limiter", None)
    transport = getattr(channel, "transport", None)
    if isinstance(limiter, ConnectionLimiter) and transport is not None:
        limiter.trust(transport)

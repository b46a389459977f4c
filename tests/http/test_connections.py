"""
The site's connection bounds and request deadlines: which connections are refused or evicted, which
requests are cut off, and (over real loopback, UNIX and TLS connections) that a closing connection frees
its slot. How a closing transport is seen at all is kernel_relay.twisted_internals's, tested in
tests/test_internals.py.
"""

from __future__ import annotations

import gc
import types
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.address import IPv4Address, UNIXAddress
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol, serverFromString
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import ITransport
from twisted.internet.protocol import Protocol
from twisted.internet.task import deferLater
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import LogEvent, capturedLogs, formatEvent
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from kernel_relay.auth import TokenAuth
from kernel_relay.http.connections import (
    PROBATION_TIMEOUT,
    UNIX_HOST,
    ConnectionLimiter,
    Refusal,
    peer_host,
)
from kernel_relay.http.deadlines import ABORT_GRACE, IDLE_TIMEOUT
from kernel_relay.http.file_limit import ConnectionBounds, raise_open_file_limit
from kernel_relay.http.forwarded import TrustedProxies
from kernel_relay.http.guards import AuthGuard
from kernel_relay.http.site import RelaySite
from tests.test_internals import (
    KINDS,
    UPGRADE,
    Client,
    client_endpoint,
    scratch_directory,  # noqa: F401  (the "scratch" fixture)
    server_description,
    until,
)

# -- in-process helpers --------------------------------------------------------------------------------


class ClosingTransport(StringTransport):
    """A StringTransport with what a server transport has besides: a connectionLost the reactor calls."""

    def __init__(self, host: str = "192.0.2.1") -> None:
        super().__init__(peerAddress=IPv4Address("TCP", host, 50000))
        self.protocol: Protocol | None = None
        self.aborted = False
        self.lost = 0

    def abortConnection(self) -> None:
        self.aborted = True
        super().abortConnection()

    def connectionLost(self, reason: Failure) -> None:
        self.lost += 1
        if self.protocol is not None:
            self.protocol.connectionLost(reason)


def closed() -> Failure:
    return Failure(ConnectionDone("closed"))


class Limited:
    """A limiter on a fake clock, with the events it reported."""

    def __init__(
        self,
        max_connections: int,
        max_per_address: int,
        max_probation: int = 16,
        proxies: TrustedProxies | None = None,
    ) -> None:
        self.clock = MemoryReactorClock()
        self.events: list[str] = []
        self.limiter = ConnectionLimiter(
            ConnectionBounds(max_connections, max_per_address, max_probation),
            clock=self.clock,
            on_event=self.events.append,
            proxies=proxies,
        )

    def open(self, host: str = "192.0.2.1") -> ClosingTransport | None:
        """A connection from ``host`` as a site opens it: admitted, then counted; None if refused."""
        if not self.limiter.admit(host):
            return None
        transport = ClosingTransport(host)
        self.limiter.connected(transport, host)
        return transport


def messages(events: list[LogEvent]) -> list[str]:
    return [
        formatEvent(event)
        for event in events
        if event.get("log_namespace") == "kernel_relay.http.connections"
    ]


class Held(Resource):
    """Holds requests to /held open (a long-poll) and answers any other request at once."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.held: list[Request] = []

    def render(self, request: Request) -> bytes | int:
        if request.path == b"/held":
            self.held.append(request)
            return NOT_DONE_YET
        return b"ok"


class Served:
    """A RelaySite on a fake clock with one connection, fed by hand."""

    def __init__(
        self,
        resource: Resource | None = None,
        host: str = "192.0.2.1",
        bounds: ConnectionBounds | None = None,
        proxies: TrustedProxies | None = None,
    ) -> None:
        self.clock = MemoryReactorClock()
        self.events: list[str] = []
        self.resource = resource if resource is not None else Held()
        self.limiter = ConnectionLimiter(
            bounds or ConnectionBounds(100, 100),
            clock=self.clock,
            on_event=self.events.append,
            proxies=proxies,
        )
        self.site = RelaySite(self.resource, reactor=self.clock, limiter=self.limiter)
        self.site.max_body = 1000
        self.transport = self.connect(host)

    def connect(self, host: str) -> ClosingTransport:
        protocol = self.site.buildProtocol(IPv4Address("TCP", host, 50000))
        assert protocol is not None
        transport = ClosingTransport(host)
        transport.protocol = protocol
        protocol.makeConnection(transport)
        return transport

    def send(self, data: bytes, transport: ClosingTransport | None = None) -> None:
        target = transport or self.transport
        assert target.protocol is not None
        target.protocol.dataReceived(data)

    def trickle(self, data: bytes, every: float) -> None:
        """Send ``data`` one byte at a time, ``every`` seconds apart."""
        for byte in data:
            self.send(bytes([byte]))
            self.clock.advance(every)


GET = b"GET /x HTTP/1.1\r\nHost: relay\r\n\r\n"


# -- bounds --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("nofile", "max_connections", "max_per_address", "max_probation"),
    [
        (1024, 768, 192, 16),
        (4096, 3072, 768, 48),
        (1_048_576, 786_432, 196_608, 12_288),
        (300, 44, 16, 16),
        (256, 16, 16, 16),
        (20, 16, 16, 16),
    ],
)
def test_bounds_from_the_file_limit_leave_a_reserve(
    nofile: int, max_connections: int, max_per_address: int, max_probation: int
) -> None:
    """The bounds keep max(256, a quarter) of the descriptors back, never allow under 16 connections, give one address a quarter and probation a 64th."""
    assert ConnectionBounds.from_file_limit(nofile) == ConnectionBounds(
        max_connections, max_per_address, max_probation
    )


def test_bounds_must_be_positive() -> None:
    """A bound of zero is refused."""
    with pytest.raises(ValueError):
        ConnectionBounds(0, 1)


def test_the_open_file_limit_is_raised_to_the_hard_limit() -> None:
    """raise_open_file_limit returns the soft limit now in force, which is the hard limit (or the cap)."""
    import resource

    limit = raise_open_file_limit()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert limit == soft
    assert soft == (1_048_576 if hard == resource.RLIM_INFINITY else min(hard, 1_048_576))


def test_peer_hosts_count_unix_sockets_as_one_address() -> None:
    """A TCP peer counts as its host, every UNIX socket peer as one address."""
    assert peer_host(IPv4Address("TCP", "198.51.100.7", 1234)) == "198.51.100.7"
    assert peer_host(UNIXAddress(None)) == peer_host(UNIXAddress(b"/run/x.sock")) == UNIX_HOST
    assert peer_host(None) == "unknown"


# -- the limiter ---------------------------------------------------------------------------------------


def test_an_address_holding_its_share_gets_in_on_probation_and_is_dropped_without_a_token() -> None:
    """A third connection from an address allowed two waits on probation, uncounted, and is dropped after 5 s."""
    limited = Limited(10, 2)
    assert limited.open("a") and limited.open("a")
    third = limited.open("a")
    assert third is not None and limited.limiter.is_on_probation(third)
    assert limited.limiter.open_by_address("a") == 2
    assert limited.open("b") is not None
    assert limited.limiter.open_connections == 4
    limited.clock.advance(PROBATION_TIMEOUT)
    assert third.aborted and not limited.limiter.is_on_probation(third)
    assert limited.events == ["connection_refused"]
    assert limited.limiter.open_connections == 3


def test_the_oldest_untrusted_connection_is_evicted_for_a_newcomer() -> None:
    """When every slot is taken, the oldest untrusted connection is aborted and its slot is free at once."""
    limited = Limited(3, 3)
    first, second, third = limited.open("a"), limited.open("b"), limited.open("c")
    assert first and second and third
    limited.limiter.trust(first)
    newcomer = limited.open("d")
    assert newcomer is not None
    assert second.aborted and not first.aborted and not third.aborted
    assert limited.events == ["connection_evicted"]
    # Freed before the evicted connection's connectionLost comes.
    assert second.lost == 0
    assert limited.limiter.open_connections == 3
    assert limited.limiter.open_by_address("b") == 0


def test_an_evicted_connection_closing_later_frees_nothing_more() -> None:
    """The evicted connection's own connectionLost, when it comes, does not free a second slot."""
    limited = Limited(2, 2)
    first, second = limited.open("a"), limited.open("b")
    assert first and second
    assert limited.open("c") is not None
    first.connectionLost(closed())
    assert limited.limiter.open_connections == 2
    assert limited.limiter.open_by_address("b") == 1


def test_trusted_connections_are_never_evicted_and_the_newcomer_is_refused() -> None:
    """With every open connection trusted, a newcomer is refused and nothing is aborted."""
    limited = Limited(2, 2)
    first, second = limited.open("a"), limited.open("b")
    assert first and second
    limited.limiter.trust(first)
    limited.limiter.trust(second)
    assert limited.open("c") is None
    assert not first.aborted and not second.aborted
    assert limited.events == ["connection_refused"]
    assert limited.limiter.open_connections == 2


def test_closing_connections_free_their_slots_and_unhook() -> None:
    """A connection that closes frees its slot, and the hook on its transport is gone."""
    limited = Limited(2, 2)
    transport = limited.open("a")
    assert transport is not None
    assert "connectionLost" in vars(transport)
    transport.connectionLost(closed())
    assert transport.lost == 1
    assert limited.limiter.open_connections == 0
    assert limited.limiter.open_by_address("a") == 0
    assert "connectionLost" not in vars(transport)


def test_trust_is_idempotent_and_ignores_unknown_transports() -> None:
    """Trusting twice keeps one trusted connection, and trusting a transport never counted changes nothing."""
    limited = Limited(2, 2)
    transport = limited.open("a")
    assert transport is not None
    limited.limiter.trust(transport)
    limited.limiter.trust(transport)
    stranger = ClosingTransport("b")
    limited.limiter.trust(stranger)
    assert limited.limiter.is_trusted(transport) and not limited.limiter.is_trusted(stranger)
    assert limited.limiter.open_connections == 1
    transport.connectionLost(closed())
    assert limited.limiter.open_connections == 0 and not limited.limiter.is_trusted(transport)


def test_a_transport_that_cannot_report_closing_is_not_counted() -> None:
    """A transport without connectionLost is left uncounted rather than holding a slot forever."""
    limited = Limited(2, 2)
    with capturedLogs() as events:
        limited.limiter.connected(StringTransport(), "a")
    assert limited.limiter.open_connections == 0
    assert any("is not counted" in line for line in messages(events))


def test_refusals_are_logged_once_per_address_per_interval() -> None:
    """Refusals from one address log one line per 10 s, the next one saying how many were not logged, while all are counted."""
    limited = Limited(2, 10)
    first, second = limited.open("a"), limited.open("b")
    assert first and second
    limited.limiter.trust(first)
    limited.limiter.trust(second)
    with capturedLogs() as events:
        for _ in range(5):
            limited.open("a")
        limited.open("b")
        limited.clock.advance(10)
        limited.open("a")
    lines = messages(events)
    assert len(lines) == 3, lines
    assert "from a" in lines[0] and "from b" in lines[1]
    assert "from a" in lines[2] and "4 more like it" in lines[2]
    assert limited.events == ["connection_refused"] * 7


# -- the site ------------------------------------------------------------------------------------------


def test_the_site_refuses_what_the_limiter_refuses() -> None:
    """A connection the limiter refuses gets a protocol that aborts it at once, and is not counted."""
    served = Served()
    served.limiter.bounds = ConnectionBounds(1, 100)
    served.limiter.trust(served.transport)
    protocol = served.site.buildProtocol(IPv4Address("TCP", "192.0.2.1", 50001))
    assert isinstance(protocol, Refusal)
    transport = ClosingTransport()
    protocol.makeConnection(transport)
    assert transport.aborted
    assert served.limiter.open_connections == 1
    assert served.events == ["connection_refused"]


def test_a_connection_taken_over_is_released_when_its_transport_closes() -> None:
    """After a WebSocket takes the transport over, its slot is still freed when the transport closes."""
    served = Served()
    assert served.limiter.open_connections == 1
    served.transport.protocol = Protocol()  # what Autobahn's WebSocketResource does
    served.transport.connectionLost(closed())
    assert served.limiter.open_connections == 0


def test_the_connection_hook_leaves_no_reference_cycle(no_cyclic_gc: None) -> None:
    """A counted connection, once closed, leaves no cycle through the site's or the limiter's functions."""
    served = Served()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        served.send(GET)
        served.transport.connectionLost(closed())
        del served
        gc.collect()
        functions = [
            o.__qualname__
            for o in gc.garbage
            if isinstance(o, types.FunctionType)
            and o.__module__.startswith(
                (
                    "kernel_relay.tap",
                    "kernel_relay.http.connections",
                    "kernel_relay.http.deadlines",
                    "kernel_relay.twisted_internals",
                )
            )
        ]
        assert functions == []
    finally:
        gc.set_debug(0)
        gc.garbage.clear()


def test_a_valid_token_marks_the_connection_trusted() -> None:
    """A request with the relay's token or a kernel's token trusts its connection; one without a token does not."""
    auth = TokenAuth("s3cret")
    kernel_token = auth.scoped.issue("k1", "full")
    served = Served(AuthGuard(Held(), auth))
    without = served.connect("192.0.2.2")
    kernel = served.connect("192.0.2.3")
    served.send(b"GET /x HTTP/1.1\r\nHost: relay\r\nAuthorization: Bearer s3cret\r\n\r\n")
    served.send(GET, without)
    served.send(
        b"GET /shutdown/k1?token=%s HTTP/1.1\r\nHost: r\r\n\r\n" % kernel_token.encode(), kernel
    )
    assert served.transport.value().startswith(b"HTTP/1.1 200")
    assert without.value().startswith(b"HTTP/1.1 401")
    assert kernel.value().startswith(b"HTTP/1.1 200")
    assert served.limiter.is_trusted(served.transport) and served.limiter.is_trusted(kernel)
    assert not served.limiter.is_trusted(without)


def test_a_token_on_a_site_without_a_limiter_is_served() -> None:
    """Marking trust is a no-op on a site without a limiter."""
    site = RelaySite(AuthGuard(Held(), TokenAuth("s3cret")), reactor=MemoryReactorClock())
    protocol = site.buildProtocol(None)
    assert protocol is not None
    transport = StringTransport()
    protocol.makeConnection(transport)
    protocol.dataReceived(b"GET /x HTTP/1.1\r\nHost: r\r\nAuthorization: Bearer s3cret\r\n\r\n")
    assert transport.value().startswith(b"HTTP/1.1 200")


# -- users behind one address -------------------------------------------------------------------------


def test_a_trusted_newcomer_takes_the_place_of_its_addresss_oldest_untrusted_connection() -> None:
    """Over its address's share, a newcomer that presents a token evicts that address's oldest untrusted connection, then the next, never a trusted one nor another address's."""
    limited = Limited(100, 3)
    elsewhere = limited.open("b")
    first, second, third = limited.open("a"), limited.open("a"), limited.open("a")
    assert elsewhere and first and second and third
    limited.limiter.trust(second)
    newcomer = limited.open("a")
    assert newcomer is not None and limited.limiter.is_on_probation(newcomer)
    limited.limiter.trust(newcomer)
    assert first.aborted and not (second.aborted or third.aborted or elsewhere.aborted)
    assert limited.limiter.is_trusted(newcomer) and not limited.limiter.is_on_probation(newcomer)
    assert limited.limiter.open_by_address("a") == 3
    another = limited.open("a")
    assert another is not None
    limited.limiter.trust(another)
    assert third.aborted and not second.aborted
    assert limited.events == ["connection_evicted", "connection_evicted"]
    # Every connection of the address is trusted now: a further trusted newcomer has no one to replace.
    last = limited.open("a")
    assert last is not None
    limited.limiter.trust(last)
    assert last.aborted and limited.events[-1] == "connection_refused"
    assert limited.limiter.open_by_address("a") == 3
    # A trusted newcomer's deadline is gone with its probation.
    limited.clock.advance(PROBATION_TIMEOUT)
    assert not newcomer.aborted and not another.aborted


def test_probation_holds_a_bounded_number_and_lets_the_oldest_go() -> None:
    """At most max_probation connections wait on probation: a newer one takes the oldest one's place."""
    limited = Limited(100, 1, max_probation=2)
    assert limited.open("a")
    waiting = [limited.open("a") for _ in range(3)]
    assert all(waiting)
    assert waiting[0] is not None and waiting[0].aborted
    assert not any(t.aborted for t in waiting[1:] if t is not None)
    assert limited.limiter.on_probation == 2
    assert limited.events == ["connection_refused"]


def test_a_full_relay_puts_a_newcomer_on_probation_when_its_address_is_full() -> None:
    """When every slot is taken and the newcomer's address holds its share, it waits on probation and, trusted, evicts its address's oldest untrusted connection."""
    limited = Limited(2, 1)
    a, b = limited.open("a"), limited.open("b")
    assert a and b
    newcomer = limited.open("a")
    assert newcomer is not None and limited.limiter.is_on_probation(newcomer)
    limited.limiter.trust(newcomer)
    assert a.aborted and not b.aborted
    assert limited.limiter.open_connections == 2


def test_a_trusted_proxy_is_not_bound_by_its_own_address_and_counts_its_clients() -> None:
    """Connections from a trusted proxy go past its address's share; identified, each counts against its client."""
    limited = Limited(100, 1, proxies=TrustedProxies.from_options(["10.0.0.5"]))
    connections = [limited.open("10.0.0.5") for _ in range(3)]
    assert all(c is not None and not limited.limiter.is_on_probation(c) for c in connections)
    first, second, third = connections
    assert first and second and third
    limited.limiter.identify(first, "198.51.100.1")
    limited.limiter.identify(second, "198.51.100.2")
    assert limited.limiter.open_by_address("198.51.100.1") == 1
    assert limited.limiter.open_by_address("10.0.0.5") == 1
    limited.limiter.identify(third, "198.51.100.1")
    assert limited.limiter.is_on_probation(third)
    limited.limiter.trust(third)
    assert first.aborted and limited.limiter.is_trusted(third)
    # A kept-alive proxy connection that now carries another client's request is untrusted again.
    limited.limiter.identify(third, "198.51.100.3")
    assert not limited.limiter.is_trusted(third)
    assert limited.limiter.open_by_address("198.51.100.1") == 0
    assert limited.limiter.open_by_address("198.51.100.3") == 1


class ClientAddress(Resource):
    """Answers every request with the client address the request reports."""

    isLeaf = True

    def render(self, request: Request) -> bytes:
        return str(request.getClientAddress().host).encode()


def body_of(transport: ClosingTransport) -> bytes:
    return transport.value().split(b"\r\n\r\n", 1)[1]


def test_a_tokenless_request_on_probation_is_answered_and_its_connection_closed() -> None:
    """Over the share, a request without a token gets its answer and the connection is then closed; one with a token is served on a kept connection."""
    auth = TokenAuth("s3cret")
    served = Served(AuthGuard(Held(), auth), bounds=ConnectionBounds(100, 1))
    tokenless = served.connect("192.0.2.1")
    served.send(GET, tokenless)
    assert tokenless.value().startswith(b"HTTP/1.1 401") and tokenless.disconnecting
    with_token = served.connect("192.0.2.1")
    served.send(b"GET /x HTTP/1.1\r\nHost: r\r\nAuthorization: Bearer s3cret\r\n\r\n", with_token)
    assert with_token.value().startswith(b"HTTP/1.1 200") and not with_token.disconnecting
    assert served.transport.aborted  # the first connection, which never presented a token
    assert served.limiter.is_trusted(with_token)


def test_behind_a_trusted_proxy_bounds_and_addresses_are_the_forwarded_clients() -> None:
    """Through a trusted proxy each forwarded client has its own share and is the request's client address."""
    served = Served(
        ClientAddress(),
        host="10.0.0.5",
        bounds=ConnectionBounds(100, 1),
        proxies=TrustedProxies.from_options(["10.0.0.5"]),
    )
    forwarded = b"GET /x HTTP/1.1\r\nHost: r\r\nX-Forwarded-For: 6.6.6.6, %s\r\n\r\n"
    served.send(forwarded % b"198.51.100.1")
    assert body_of(served.transport) == b"198.51.100.1"
    other = served.connect("10.0.0.5")
    served.send(forwarded % b"198.51.100.2", other)
    assert body_of(other) == b"198.51.100.2" and not other.disconnecting
    assert served.limiter.open_by_address("198.51.100.1") == 1
    assert served.limiter.open_by_address("198.51.100.2") == 1
    assert served.limiter.open_by_address("10.0.0.5") == 0
    # The same client again is over its share: answered, then closed.
    again = served.connect("10.0.0.5")
    served.send(forwarded % b"198.51.100.1", again)
    assert body_of(again) == b"198.51.100.1" and again.disconnecting


def test_an_untrusted_peers_forwarded_header_is_ignored() -> None:
    """A peer that is no trusted proxy stays the client, whatever X-Forwarded-For it sends."""
    served = Served(
        ClientAddress(), host="192.0.2.9", proxies=TrustedProxies.from_options(["10.0.0.5"])
    )
    served.send(b"GET /x HTTP/1.1\r\nHost: r\r\nX-Forwarded-For: 198.51.100.1\r\n\r\n")
    assert body_of(served.transport) == b"192.0.2.9"
    assert served.limiter.open_by_address("192.0.2.9") == 1
    assert served.limiter.open_by_address("198.51.100.1") == 0


# -- request deadlines ---------------------------------------------------------------------------------


def test_a_trickled_header_is_cut_at_the_deadline() -> None:
    """A header sent a byte a second is answered 408 ten seconds after the connection was made, then aborted after the grace."""
    served = Served()
    with capturedLogs() as events:
        served.trickle(b"GET /x HTTP/", every=1.0)  # 12 bytes: the last one at 11 s
    answer = served.transport.value()
    assert answer.startswith(b"HTTP/1.1 408 Request Timeout\r\n"), answer
    assert b"the request header must arrive within 10 seconds" in answer
    assert served.transport.disconnecting and not served.transport.aborted
    assert served.events == ["request_timeout"]
    assert any("192.0.2.1" in line and "header" in line for line in messages(events))
    served.clock.advance(ABORT_GRACE)
    assert served.transport.aborted


def test_the_header_deadline_does_not_move_with_each_byte() -> None:
    """Bytes arriving every half second until 9 s do not delay the header deadline at 10 s."""
    served = Served()
    served.trickle(b"GET /x HTTP/1.1\r\nH", every=0.5)  # 18 bytes, from 0 to 8.5 s
    served.send(b"o")  # at 9 s
    served.clock.advance(0.5)
    assert served.transport.value() == b""
    served.clock.advance(0.5)
    assert served.transport.value().startswith(b"HTTP/1.1 408")


def test_a_silent_connection_is_cut_at_the_header_deadline() -> None:
    """A connection that sends nothing gets 408 once the header deadline passes."""
    served = Served()
    served.clock.advance(9.9)
    assert served.transport.value() == b""
    served.clock.advance(0.1)
    assert served.transport.value().startswith(b"HTTP/1.1 408")


def test_a_trickled_body_is_cut_at_its_deadline() -> None:
    """A body still arriving 60 s after its headers is answered 408, and the header deadline no longer applies."""
    served = Served()
    served.clock.advance(5)
    served.send(b"POST /x HTTP/1.1\r\nHost: relay\r\nContent-Length: 500\r\n\r\n")
    served.trickle(b"x" * 59, every=1.0)  # at 64 s
    assert served.transport.value() == b""
    served.clock.advance(1)
    answer = served.transport.value()
    assert answer.startswith(b"HTTP/1.1 408"), answer
    assert b"the request body must arrive within 60 seconds" in answer


def test_a_held_long_poll_is_not_timed_out() -> None:
    """A request held open by its resource is never cut, and answers normally when it is finished."""
    resource = Held()
    served = Served(resource)
    served.send(b"GET /held HTTP/1.1\r\nHost: relay\r\n\r\n")
    served.clock.advance(1000)
    assert served.transport.value() == b"" and not served.transport.disconnecting
    resource.held[0].write(b"late")
    resource.held[0].finish()
    assert served.transport.value().startswith(b"HTTP/1.1 200")
    assert served.events == []


def test_the_next_request_has_its_own_deadline_from_its_first_byte() -> None:
    """On a keep-alive connection, the next request's header deadline starts at its first byte, not before."""
    served = Served()
    served.send(GET)
    served.transport.clear()
    served.clock.advance(30)
    served.send(b"G")
    served.clock.advance(9.9)
    assert served.transport.value() == b""
    served.clock.advance(0.1)
    assert served.transport.value().startswith(b"HTTP/1.1 408")


def test_a_next_request_soon_after_gets_its_full_deadline() -> None:
    """A request starting 5 s after the previous one gets its full 10 s, not what was left of the first timer."""
    served = Served()
    served.send(GET)
    served.transport.clear()
    served.clock.advance(5)
    served.send(b"G")
    served.clock.advance(9.5)
    assert served.transport.value() == b""
    served.clock.advance(0.5)
    assert served.transport.value().startswith(b"HTTP/1.1 408")


def test_idle_keep_alive_connections_close_after_75_seconds() -> None:
    """A keep-alive connection idle after its answer is closed after 75 s, without a 408."""
    served = Served()
    assert served.site.timeOut == IDLE_TIMEOUT == 75
    served.send(GET)
    served.transport.clear()
    served.clock.advance(74)
    assert not served.transport.disconnecting
    served.clock.advance(1)
    assert served.transport.disconnecting and served.transport.value() == b""


def test_an_answered_request_gets_no_408_when_its_deadline_passes() -> None:
    """A request refused with 413 while it arrives gets no 408 on top, but is aborted if it does not close."""
    served = Served()
    served.send(b"POST /x HTTP/1.1\r\nHost: relay\r\nContent-Length: 5000\r\n\r\n")
    assert served.transport.value().startswith(b"HTTP/1.1 413")
    served.clock.advance(60)
    assert served.transport.value().count(b"HTTP/1.1 ") == 1
    assert not served.transport.aborted
    served.clock.advance(ABORT_GRACE)
    assert served.transport.aborted


def test_deadlines_take_no_timer_per_byte() -> None:
    """Receiving a header byte by byte schedules no timer beyond the one set at its first byte."""
    served = Served()
    scheduled = len(served.clock.getDelayedCalls())
    served.trickle(b"GET /x HTTP/1.1\r\nHost: relay\r\n", every=0.01)
    assert len(served.clock.getDelayedCalls()) == scheduled


# -- real connections (the loopback helpers are tests/test_internals.py's) --------------------------------


def websocket_site(limiter: ConnectionLimiter) -> RelaySite:
    from autobahn.twisted.resource import WebSocketResource
    from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol

    factory = WebSocketServerFactory()
    factory.protocol = WebSocketServerProtocol
    root = Resource()
    root.putChild(b"ws", WebSocketResource(factory))
    return RelaySite(root, reactor=reactor, limiter=limiter)


@pytest.mark.parametrize("kind", ["tcp", "tls"])
@pytest_twisted.ensureDeferred
async def test_a_websocket_autobahn_took_over_frees_its_slot_when_it_closes(
    kind: str, scratch: Path
) -> None:
    """A real WebSocket upgraded by Autobahn's resource counts until the client closes it, then frees its slot."""
    limiter = ConnectionLimiter(ConnectionBounds(16, 16), clock=reactor)
    port = await serverFromString(reactor, server_description(kind, scratch)).listen(
        websocket_site(limiter)
    )
    try:
        client = Client()
        await connectProtocol(client_endpoint(kind, port, scratch), client)
        client.transport.write(UPGRADE)  # type: ignore[union-attr]
        await until(lambda: b"\r\n\r\n" in client.received)
        assert client.received.startswith(b"HTTP/1.1 101")
        await deferLater(reactor, 0.2, lambda: None)  # nothing times the WebSocket out
        assert limiter.open_connections == 1
        client.transport.loseConnection()  # type: ignore[union-attr]
        await until(lambda: limiter.open_connections == 0)
    finally:
        await port.stopListening()


@pytest.mark.parametrize("kind", KINDS)
@pytest_twisted.ensureDeferred
async def test_a_refused_real_connection_is_closed_at_once(kind: str, scratch: Path) -> None:
    """Over TCP, UNIX and TLS, a connection over the per-address bound is closed by the relay without an error logged."""
    limiter = ConnectionLimiter(ConnectionBounds(16, 1), clock=reactor)
    port = await serverFromString(reactor, server_description(kind, scratch)).listen(
        RelaySite(Held(), reactor=reactor, limiter=limiter)
    )
    try:
        first = Client()
        await connectProtocol(client_endpoint(kind, port, scratch), first)
        await until(lambda: limiter.open_connections == 1)
        with capturedLogs() as events:
            second = Client()
            await connectProtocol(client_endpoint(kind, port, scratch), second)
            await until(lambda: second.closed.called, timeout=5)
        assert not [event for event in events if "log_failure" in event or event.get("isError")]
        assert second.received == b""
        assert limiter.open_connections == 1
        first.transport.loseConnection()  # type: ignore[union-attr]
        await until(lambda: limiter.open_connections == 0)
    finally:
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_a_real_trickled_header_is_answered_408_and_closed() -> None:
    """Over a real loopback connection, a header not finished within the deadline gets 408 and the connection closes."""
    limiter = ConnectionLimiter(ConnectionBounds(16, 16), clock=reactor)
    site = RelaySite(Held(), reactor=reactor, limiter=limiter)
    site.header_timeout = 0.3
    port = await serverFromString(reactor, "tcp:0:interface=127.0.0.1").listen(site)
    try:
        client = Client()
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port)  # type: ignore[attr-defined]
        await connectProtocol(endpoint, client)
        transport: ITransport = client.transport  # type: ignore[assignment]
        transport.write(b"GET / HTTP/1.1\r\n")
        await client.closed
        assert client.received.startswith(b"HTTP/1.1 408 Request Timeout\r\n")
        await until(lambda: limiter.open_connections == 0)
    finally:
        await port.stopListening()

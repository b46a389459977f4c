"""
kernel_relay.twisted_internals against the real thing: each function is checked on real Twisted connections
over loopback (TCP, UNIX sockets, TLS) and on a real Autobahn WebSocket, so that a Twisted or Autobahn
release that changes an internal the relay relies on fails here.

Also the loopback helpers that the site's tests over real connections share (tests/http/test_connections.py).
"""

from __future__ import annotations

import fcntl
import shutil
import struct
import sys
import tempfile
import termios
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from twisted.application.internet import StreamServerEndpointService
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import (
    SSL4ClientEndpoint,
    TCP4ClientEndpoint,
    TCP4ServerEndpoint,
    UNIXClientEndpoint,
    connectProtocol,
    serverFromString,
)
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort, IPushProducer, IStreamClientEndpoint
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.internet.ssl import CertificateOptions
from twisted.internet.task import deferLater
from twisted.internet.testing import StringTransport
from twisted.logger import capturedLogs
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.python.failure import Failure
from twisted.web.http import HTTPChannel
from twisted.web.resource import Resource
from twisted.web.server import Site
from zope.interface import implementer

from kernel_relay.twisted_internals import (
    HTTPChannelProtocol,
    abort_connection,
    closing,
    fail_at_start,
    failed_for_peer_fault,
    hook_connection_lost,
    negotiating_http_protocol,
    replace_producer,
    set_send_limit,
    unsent_bytes,
    websocket_closed,
    websocket_open,
    websocket_reader_idle,
    write_through,
)
from tests.e2e.test_tls_relay import self_signed
from tests.engineio.test_engineio_frames import client_frame

# -- loopback connections ------------------------------------------------------------------------------


@pytest.fixture(name="scratch", scope="module")
def scratch_directory() -> Iterator[Path]:
    """A short directory (UNIX socket paths are short) holding a key and self-signed certificate."""
    path = Path(tempfile.mkdtemp(prefix="kr-", dir="/tmp"))
    self_signed(path)
    try:
        yield path
    finally:
        shutil.rmtree(path)


KINDS = ("tcp", "unix", "tls")


def server_description(kind: str, scratch: Path) -> str:
    key, cert = scratch / "key.pem", scratch / "cert.pem"
    return {
        "tcp": "tcp:0:interface=127.0.0.1",
        "unix": f"unix:{scratch / 'relay.sock'}",
        "tls": f"ssl:0:interface=127.0.0.1:privateKey={key}:certKey={cert}",
    }[kind]


def client_endpoint(kind: str, port: IListeningPort, scratch: Path) -> IStreamClientEndpoint:
    if kind == "unix":
        return UNIXClientEndpoint(reactor, str(scratch / "relay.sock"))
    number = port.getHost().port  # type: ignore[attr-defined]
    if kind == "tls":
        return SSL4ClientEndpoint(reactor, "127.0.0.1", number, CertificateOptions())
    return TCP4ClientEndpoint(reactor, "127.0.0.1", number)


class Client(Protocol):
    """Collects what the other end sends; ``closed`` fires when the connection is gone."""

    def __init__(self) -> None:
        self.received = bytearray()
        self.closed: Deferred[None] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.closed.callback(None)


async def until(condition: Callable[[], object], timeout: float = 10.0) -> None:
    waited = 0.0
    while not condition():
        assert waited < timeout, "timed out waiting"
        await deferLater(reactor, 0.01, lambda: None)
        waited += 0.01


@asynccontextmanager
async def loopback(
    kind: str, scratch: Path, server: Callable[[], Client] = Client
) -> AsyncIterator[tuple[Any, Client, Client]]:
    """
    A connection of ``kind`` over loopback, its handshake done: the server's transport, the server's
    protocol (made by ``server``) and the client's; both ends are closed afterwards.
    """
    servers: list[Client] = []

    def build() -> Client:
        servers.append(server())
        return servers[-1]

    port = await serverFromString(reactor, server_description(kind, scratch)).listen(
        Factory.forProtocol(build)
    )
    client = Client()
    try:
        await connectProtocol(client_endpoint(kind, port, scratch), client)
        client.transport.write(b"ping")  # type: ignore[union-attr]  # under TLS: the handshake is done
        await until(lambda: servers and servers[0].received == b"ping")
        servers[0].received.clear()
        yield servers[0].transport, servers[0], client
    finally:
        if client.transport is not None and not client.closed.called:
            client.transport.abortConnection()  # type: ignore[attr-defined]
        await port.stopListening()


def kernel_queue(socket_owner: Any, request: int) -> int:
    """The bytes in a socket's send queue (``TIOCOUTQ``) or receive queue (``FIONREAD``)."""
    answer = fcntl.ioctl(socket_owner.fileno(), request, struct.pack("i", 0))
    return int(struct.unpack("i", answer)[0])


linux_only = pytest.mark.skipif(
    sys.platform != "linux", reason="counts the kernel's socket queues with Linux ioctls"
)

# -- unsent_bytes, set_send_limit ----------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["tcp", "unix"])
@pytest_twisted.ensureDeferred
async def test_unsent_bytes_count_both_of_twisteds_buffers_and_the_send_limit_holds(
    kind: str, scratch: Path
) -> None:
    """
    What a write leaves with Twisted counts as unsent until a send takes it, sends take at most the send
    limit, and later writes count while an earlier one is being sent.
    """
    async with loopback(kind, scratch) as (transport, _, client):
        assert unsent_bytes(transport) == 0
        assert set_send_limit(transport, 1000)
        client.transport.pauseProducing()  # type: ignore[union-attr]
        transport.write(b"a" * 5000)
        assert unsent_bytes(transport) == 5000, "a write waits for the socket to be writable"
        transport.doWrite()  # what the reactor does once the socket is writable
        assert unsent_bytes(transport) == 4000, "one send takes the send limit"
        transport.write(b"b" * 300)
        assert unsent_bytes(transport) == 4300, "a write while another is being sent"
        if kind == "tcp":
            # The reactor does not run meanwhile, so what the client's socket gets is that one send.
            deadline = time.monotonic() + 5
            while kernel_queue(client.transport, termios.FIONREAD) < 1000:
                assert time.monotonic() < deadline
            assert kernel_queue(client.transport, termios.FIONREAD) == 1000
        client.transport.resumeProducing()  # type: ignore[union-attr]
        await until(lambda: len(client.received) == 5300)
        assert client.received == b"a" * 5000 + b"b" * 300
        assert unsent_bytes(transport) == 0


@linux_only
@pytest_twisted.ensureDeferred
async def test_unsent_bytes_are_all_that_the_kernel_has_not_been_given(scratch: Path) -> None:
    """
    After writing far more than a client that does not read can take, what Twisted holds is exactly what
    neither socket holds: written = unsent_bytes + the server's send queue + the client's receive queue.
    """
    total = 32 * 1024 * 1024
    async with loopback("tcp", scratch) as (transport, _, client):
        client.transport.pauseProducing()  # type: ignore[union-attr]
        transport.write(b"\x5a" * total)

        def accounted() -> bool:
            held = unsent_bytes(transport)
            assert held is not None
            sent = kernel_queue(transport, termios.TIOCOUTQ) + kernel_queue(
                client.transport, termios.FIONREAD
            )
            return held > 0 and held + sent + len(client.received) == total

        await until(accounted)
        client.transport.resumeProducing()  # type: ignore[union-attr]
        await until(lambda: len(client.received) == total, timeout=60)
        assert unsent_bytes(transport) == 0


@pytest_twisted.ensureDeferred
async def test_under_tls_unsent_bytes_are_the_ciphertext_the_tcp_connection_holds(
    scratch: Path,
) -> None:
    """A TLS transport shows the buffer of the TCP connection beneath it, which drains as the client reads."""
    async with loopback("tls", scratch) as (transport, _, client):
        beneath = transport.transport
        assert unsent_bytes(transport) == unsent_bytes(beneath) == 0
        client.transport.pauseProducing()  # type: ignore[union-attr]
        transport.write(b"\x01" * (8 * 1024 * 1024))
        await until(lambda: (unsent_bytes(beneath) or 0) > 0)
        assert unsent_bytes(transport) == unsent_bytes(beneath)
        client.transport.resumeProducing()  # type: ignore[union-attr]
        await until(lambda: len(client.received) == 8 * 1024 * 1024, timeout=60)
        assert unsent_bytes(transport) == 0


@pytest_twisted.ensureDeferred
async def test_the_send_limit_is_left_alone_under_tls(scratch: Path) -> None:
    """
    A TLS wrapper shows the TCP connection's limit but keeps what is set through it to itself: it is left
    alone; a transport without the limit is too.
    """
    async with loopback("tls", scratch) as (transport, _, _client):
        assert hasattr(transport, "SEND_LIMIT"), "the wrapper passes the attribute on"
        before = transport.transport.SEND_LIMIT
        assert not set_send_limit(transport, 1)
        assert transport.transport.SEND_LIMIT == before and "SEND_LIMIT" not in vars(transport)
    assert not set_send_limit(StringTransport(), 1)


def test_unsent_bytes_of_a_transport_that_shows_no_buffer_are_unknown() -> None:
    """A transport without Twisted's buffer fields (here an in-memory one) shows nothing: None."""
    assert unsent_bytes(StringTransport()) is None


# -- write_through, closing ----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["tcp", "unix"])
@pytest_twisted.ensureDeferred
async def test_a_write_through_goes_to_the_socket_at_once_and_never_overtakes(
    kind: str, scratch: Path
) -> None:
    """
    On an idle connection the bytes are on the socket before the call returns (Twisted holds none);
    while Twisted holds bytes nothing is sent directly, so the client gets everything in order.
    """
    async with loopback(kind, scratch) as (transport, _, client):
        assert write_through(transport, b"hello") == 5
        assert unsent_bytes(transport) == 0, "nothing was left for a later turn"
        assert write_through(transport, memoryview(bytearray(b"view!"))) == 5
        transport.write(b"queued")
        assert write_through(transport, b"later") == 0, (
            "Twisted holds bytes: nothing overtakes them"
        )
        await until(lambda: unsent_bytes(transport) == 0)
        assert write_through(transport, b"after") == 5
        await until(lambda: len(client.received) == 21)
        assert client.received == b"hello" + b"view!" + b"queued" + b"after"


@pytest_twisted.ensureDeferred
async def test_a_write_through_sends_what_the_socket_takes_and_stops(scratch: Path) -> None:
    """A payload bigger than the socket takes is sent in part; the rest, written as usual, follows it."""
    payload = bytes(range(256)) * (32 * 1024 * 1024 // 256)
    async with loopback("tcp", scratch) as (transport, _, client):
        client.transport.pauseProducing()  # type: ignore[union-attr]
        sent = write_through(transport, memoryview(payload))
        assert 0 < sent < len(payload)
        transport.write(payload[sent:])
        client.transport.resumeProducing()  # type: ignore[union-attr]
        await until(lambda: len(client.received) == len(payload), timeout=60)
        assert client.received == payload


@pytest_twisted.ensureDeferred
async def test_a_wrapped_transport_such_as_tls_is_never_written_to_directly(scratch: Path) -> None:
    """
    A protocol wrapper (TLS is one) passes unknown attributes on to the TCP connection beneath it: sending
    there directly would bypass the wrapper (plain text on an encrypted connection).
    """
    async with loopback("tcp", scratch) as (transport, _, client):
        wrapper = ProtocolWrapper(WrappingFactory(Factory()), Protocol())
        wrapper.makeConnection(transport)
        assert wrapper.writeSomeData == transport.writeSomeData, "the attribute is passed on"
        assert write_through(wrapper, b"secret") == 0
        assert write_through(transport, b"plain") == 5
        await until(lambda: client.received == b"plain")
    async with loopback("tls", scratch) as (transport, _, client):
        assert transport.writeSomeData == transport.transport.writeSomeData
        assert write_through(transport, b"secret") == 0


@pytest_twisted.ensureDeferred
async def test_a_closing_connection_is_not_written_to_directly(scratch: Path) -> None:
    """Once asked to close, a connection is closing until it is gone, and takes no direct sends."""
    async with loopback("tcp", scratch) as (transport, _, client):
        assert not closing(transport)
        client.transport.pauseProducing()  # type: ignore[union-attr]
        transport.write(b"x" * (32 * 1024 * 1024))  # so that the close waits for the buffer
        transport.loseConnection()
        assert closing(transport)
        assert write_through(transport, b"late") == 0
        client.transport.resumeProducing()  # type: ignore[union-attr]
        await client.closed
        assert b"late" not in client.received


# -- abort_connection, hook_connection_lost ------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
@pytest_twisted.ensureDeferred
async def test_an_aborted_connection_drops_what_it_held(kind: str, scratch: Path) -> None:
    """abort_connection closes at once, without sending what Twisted still holds."""
    async with loopback(kind, scratch) as (transport, _, client):
        client.transport.pauseProducing()  # type: ignore[union-attr]
        transport.write(b"x" * (32 * 1024 * 1024))
        abort_connection(transport)
        client.transport.resumeProducing()  # type: ignore[union-attr]
        await client.closed
        assert len(client.received) < 32 * 1024 * 1024


def test_a_transport_that_cannot_be_aborted_is_closed() -> None:
    """Without abortConnection, abort_connection closes the connection."""

    class Closable:
        closed = False

        def loseConnection(self) -> None:
            self.closed = True

    transport = Closable()
    abort_connection(transport)  # type: ignore[arg-type]
    assert transport.closed


class TakenOver(Protocol):
    """What a WebSocket protocol is to the transport it took over: told when the connection is lost."""

    lost = False

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.lost = True


class Hooking(Protocol):
    """Hooks its transport's close, then hands the transport to another protocol, as Autobahn does."""

    def __init__(self, servers: list[Hooking]) -> None:
        servers.append(self)
        self.hooked = False
        self.released = 0
        self.successor = TakenOver()

    def connectionMade(self) -> None:
        transport = self.transport
        assert transport is not None
        self.hooked = hook_connection_lost(transport, self.release)
        if isinstance(transport, ProtocolWrapper):  # TLS
            transport.wrappedProtocol = self.successor
        else:
            transport.protocol = self.successor  # type: ignore[attr-defined]

    def release(self) -> None:
        self.released += 1


@pytest.mark.parametrize("closer", ["client", "server"])
@pytest.mark.parametrize("kind", KINDS)
@pytest_twisted.ensureDeferred
async def test_the_close_of_a_real_transport_is_seen_after_a_takeover(
    kind: str, closer: str, scratch: Path
) -> None:
    """Over real TCP, UNIX and TLS connections, closed by either side, the hook fires once, after the new protocol heard of it, and then removes itself."""
    servers: list[Hooking] = []
    port = await serverFromString(reactor, server_description(kind, scratch)).listen(
        Factory.forProtocol(lambda: Hooking(servers))
    )
    try:
        client = Client()
        await connectProtocol(client_endpoint(kind, port, scratch), client)
        if kind == "tls":
            client.transport.write(b"x")  # type: ignore[union-attr]  # completes the handshake
        await until(lambda: servers)
        server = servers[0]
        transport = server.transport
        assert server.hooked and "connectionLost" in vars(transport)
        if closer == "client":
            client.transport.loseConnection()  # type: ignore[union-attr]
        else:
            transport.abortConnection()  # type: ignore[union-attr]
        await until(lambda: server.released)
        await client.closed
        await deferLater(reactor, 0.05, lambda: None)
        assert server.released == 1
        assert server.successor.lost
        assert "connectionLost" not in vars(transport)
    finally:
        await port.stopListening()


def test_a_transport_that_cannot_report_its_close_is_not_hooked() -> None:
    """A transport without connectionLost (an in-memory one) cannot be hooked: False, and nothing changed."""
    transport = StringTransport()
    assert not hook_connection_lost(transport, lambda: None)
    assert "connectionLost" not in vars(transport)


# -- replace_producer ----------------------------------------------------------------------------------


@implementer(IPushProducer)
class Pressure:
    """A streaming producer that counts how often it was paused and resumed."""

    def __init__(self) -> None:
        self.paused = 0
        self.resumed = 0

    def pauseProducing(self) -> None:
        self.paused += 1

    def resumeProducing(self) -> None:
        self.resumed += 1

    def stopProducing(self) -> None:
        pass


class Registered(Client):
    """Registers itself as its transport's producer, as twisted.web's HTTP channel does."""

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.registerProducer(Pressure(), True)  # type: ignore[attr-defined]


@pytest.mark.parametrize("kind", KINDS)
@pytest_twisted.ensureDeferred
async def test_a_replaced_producer_is_paused_when_the_buffer_is_full_and_resumed_once_drained(
    kind: str, scratch: Path
) -> None:
    """The producer put in place of the one registered hears of a full write buffer, then of its draining."""
    async with loopback(kind, scratch, Registered) as (transport, _, client):
        pressure = Pressure()
        replace_producer(transport, pressure)
        client.transport.pauseProducing()  # type: ignore[union-attr]
        total = 0
        while not pressure.paused:
            transport.write(b"\x00" * 65536)
            total += 65536
            assert total < 256 * 1024 * 1024
        assert pressure.resumed == 0
        client.transport.resumeProducing()  # type: ignore[union-attr]
        await until(lambda: pressure.resumed)
        await until(lambda: len(client.received) == total, timeout=60)


# -- negotiating_http_protocol, fail_at_start ----------------------------------------------------------


class Recording(HTTPChannel):
    """An HTTP channel that counts the requests it receives."""

    requests = 0

    def allHeadersReceived(self) -> None:
        Recording.requests += 1
        super().allHeadersReceived()


class Hello(Resource):
    isLeaf = True

    def render_GET(self, request: Any) -> bytes:
        return b"hello"


class RecordingSite(Site):
    def protocol(self) -> HTTPChannelProtocol:  # type: ignore[override]
        return negotiating_http_protocol(Recording())


@pytest_twisted.ensureDeferred
async def test_a_channel_in_twisteds_negotiating_protocol_serves_requests() -> None:
    """
    Twisted's own Site builds this protocol for its channels; a channel of ours inside it serves requests
    over a real connection.
    """
    assert isinstance(Site(Resource()).buildProtocol(None), HTTPChannelProtocol)
    Recording.requests = 0
    port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
        RecordingSite(Hello())
    )
    try:
        client = Client()
        await connectProtocol(
            TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port),  # type: ignore[attr-defined]
            client,
        )
        client.transport.write(b"GET /x HTTP/1.1\r\nHost: relay\r\n\r\n")  # type: ignore[union-attr]
        await until(lambda: client.received.endswith(b"hello"))
        assert client.received.startswith(b"HTTP/1.1 200 ")
        assert Recording.requests == 1
        client.transport.loseConnection()  # type: ignore[union-attr]
        await client.closed
    finally:
        await port.stopListening()


def test_a_service_made_to_fail_at_start_raises_for_a_port_in_use() -> None:
    """
    A port that is taken makes the service raise from privilegedStartService; a service left as Twisted
    makes it only logs the failure.
    """
    taken = reactor.listenTCP(0, Factory(), interface="127.0.0.1")  # type: ignore[attr-defined]
    try:
        number = taken.getHost().port

        def service() -> StreamServerEndpointService:
            endpoint = TCP4ServerEndpoint(reactor, number, interface="127.0.0.1")
            return StreamServerEndpointService(endpoint, Factory())

        strict = service()
        fail_at_start(strict)
        with pytest.raises(CannotListenError):
            strict.privilegedStartService()
        with capturedLogs() as events:
            service().privilegedStartService()
        assert [event for event in events if event.get("isError") or event.get("log_failure")]
    finally:
        taken.stopListening()


# -- Autobahn ------------------------------------------------------------------------------------------

UPGRADE = (
    b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


class Observed(WebSocketServerProtocol):  # type: ignore[misc]
    """An Autobahn server connection that keeps its messages and what the adapter said as it closed."""

    def __init__(self) -> None:
        super().__init__()
        self.opened = False
        self.messages: list[bytes] = []
        self.closed_for_fault: bool | None = None

    def onOpen(self) -> None:
        self.opened = True

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.messages.append(payload)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        self.closed_for_fault = failed_for_peer_fault(self)


@asynccontextmanager
async def websocket(max_message: int = 0) -> AsyncIterator[tuple[Observed, Client]]:
    """An open Autobahn WebSocket over loopback TCP: its server connection, and a client writing raw bytes."""
    servers: list[Observed] = []
    factory = WebSocketServerFactory(reactor=reactor)  # type: ignore[no-untyped-call]
    factory.setProtocolOptions(  # type: ignore[no-untyped-call]
        autoPingInterval=0, failByDrop=False, maxMessagePayloadSize=max_message
    )

    class Server(Observed):
        def __init__(self) -> None:
            super().__init__()
            servers.append(self)

    factory.protocol = Server
    port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(factory)
    client = Client()
    try:
        await connectProtocol(
            TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port),  # type: ignore[attr-defined]
            client,
        )
        client.transport.write(UPGRADE)  # type: ignore[union-attr]
        await until(lambda: servers and servers[0].opened)
        yield servers[0], client
    finally:
        if client.transport is not None and not client.closed.called:
            client.transport.abortConnection()  # type: ignore[attr-defined]
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_autobahns_state_and_reader_as_frames_and_a_close_arrive() -> None:
    """
    Open after the handshake, its reader idle between messages and busy inside a frame or a fragmented
    message, closed (not for a fault) after the client's close.
    """
    async with websocket() as (server, client):
        transport = client.transport
        assert transport is not None
        assert websocket_open(server) and not websocket_closed(server)
        assert websocket_reader_idle(server)
        frame = client_frame(0x81, b"hello")
        transport.write(frame[:4])
        await until(lambda: not websocket_reader_idle(server))
        assert server.messages == []
        transport.write(frame[4:])
        await until(lambda: server.messages == [b"hello"])
        assert websocket_reader_idle(server)
        transport.write(client_frame(0x01, b"hel"))  # a first fragment, not final
        await until(lambda: not websocket_reader_idle(server))
        transport.write(client_frame(0x80, b"lo"))  # the final continuation
        await until(lambda: server.messages == [b"hello", b"hello"])
        assert websocket_reader_idle(server)
        transport.write(client_frame(0x88, (1000).to_bytes(2, "big")))
        await until(lambda: websocket_closed(server))
        assert not websocket_open(server) and not websocket_reader_idle(server)
        assert server.closed_for_fault is False


@pytest.mark.parametrize(
    "frame",
    [
        client_frame(0x83, b"x"),  # a reserved opcode
        bytes((0x81, 5)) + b"hello",  # not masked
        client_frame(0x81, b"\xff\xfe"),  # invalid UTF-8
        client_frame(0x82, b"x" * 101),  # over the message limit
    ],
    ids=["reserved-opcode", "unmasked", "invalid-utf8", "too-big"],
)
@pytest_twisted.ensureDeferred
async def test_autobahn_fails_a_peer_that_breaks_the_protocol(frame: bytes) -> None:
    """A frame that breaks the protocol closes the connection for a fault of the peer."""
    async with websocket(max_message=100) as (server, client):
        client.transport.write(frame)  # type: ignore[union-attr]
        await until(lambda: server.closed_for_fault is not None)
        assert server.closed_for_fault is True
        assert websocket_closed(server)

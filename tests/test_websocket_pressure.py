"""
kernel_relay.websocket's side of a peer that sends and never reads: the connection stops reading it once it
holds more than READ_PAUSE_BYTES for it (Autobahn's own pongs included) and reads again once drained; and a
closed connection, its session and its transport are freed by reference counting alone.
"""

from __future__ import annotations

import base64
import os
import weakref
from typing import Any

import pytest
import pytest_twisted
from autobahn.twisted.websocket import WebSocketServerFactory
from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.task import Clock
from twisted.web.resource import Resource

from kernel_relay import twisted_internals
from kernel_relay.engineio import EngineIOOptions, EngineIOServer, EngineIOSession
from kernel_relay.http.site import RelaySite
from kernel_relay.websocket import READ_PAUSE_BYTES, FramedWebSocketProtocol, WriteBatcher
from tests.engineio.test_engineio_frames import DrainingTransport, client_frame
from tests.test_internals import Client, until


class ShowingTransport(DrainingTransport):
    """A DrainingTransport that shows all it holds, as Twisted's TCP connection does."""

    @property  # type: ignore[override]
    def shown(self) -> int:
        return self.pending


@pytest.fixture
def shown_buffers(monkeypatch: pytest.MonkeyPatch) -> None:
    """``unsent_bytes`` answered by the fake transports; no direct sends."""
    monkeypatch.setattr(
        twisted_internals, "unsent_bytes", lambda transport: getattr(transport, "shown", None)
    )
    monkeypatch.setattr(twisted_internals, "write_through", lambda transport, data: 0)


def websocket_request(path: str) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    return (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()


class Sink(FramedWebSocketProtocol):
    """A connection that takes every message and answers none."""

    def message_received(self, message: str | bytes) -> None:
        pass


def open_connection() -> tuple[FramedWebSocketProtocol, ShowingTransport]:
    """A connection opened by a real handshake on a ShowingTransport that holds nothing yet."""
    factory = WebSocketServerFactory()
    factory.max_payload = 0
    connection = Sink(WriteBatcher(Clock()))
    connection.factory = factory
    transport = ShowingTransport()
    connection.makeConnection(transport)
    connection.dataReceived(websocket_request("/"))
    assert twisted_internals.websocket_open(connection)
    transport.pending = 0
    return connection, transport


PING = client_frame(0x89, b"p" * 125)


def test_a_peer_that_does_not_read_its_pongs_is_no_longer_read(shown_buffers: None) -> None:
    """Pings whose pongs (Autobahn's) pile up past READ_PAUSE_BYTES pause the transport; a drain resumes it."""
    connection, transport = open_connection()
    rounds = 0
    while transport.producerState == "producing":
        connection.dataReceived(PING * 100)
        rounds += 1
        assert rounds < 100, "the connection kept reading"
    assert READ_PAUSE_BYTES < transport.pending <= READ_PAUSE_BYTES + 100 * 130
    transport.drain()
    assert transport.producerState == "producing"


def test_a_write_once_the_backlog_is_back_under_the_bound_resumes_reading(
    shown_buffers: None,
) -> None:
    """A paused connection reads again as soon as a write finds what it holds back under the bound."""
    connection, transport = open_connection()
    while transport.producerState == "producing":
        connection.dataReceived(PING * 100)
    transport.pending = 1000  # the peer read most of it; Twisted's buffer is not empty yet
    connection.write_frames([b"\x81\x024x"], 4)
    connection._batcher.clock.advance(0)
    assert transport.producerState == "producing"


def test_a_peer_whose_backlog_stays_under_the_bound_is_read() -> None:
    """Pongs under READ_PAUSE_BYTES, even with Twisted's buffer full, do not stop the reading."""
    connection, transport = open_connection()
    transport.pending = 70_000
    transport.producer.pauseProducing()
    connection.dataReceived(PING)
    assert transport.producerState == "producing"


# -- freed by reference counting ------------------------------------------------------------------------------


class Echo:
    def __init__(self, session: EngineIOSession) -> None:
        self.session = session

    def message_received(self, data: str | bytes) -> None:
        self.session.send(data)

    def session_closed(self, reason: str) -> None:
        pass


@pytest.mark.parametrize("closing", ["client", "server"])
@pytest_twisted.ensureDeferred
async def test_a_closed_connection_is_freed_by_reference_counting(
    no_cyclic_gc: None, closing: str
) -> None:
    """
    An Engine.IO WebSocket over loopback that was pinged and echoed, then closed by either side: with the
    cyclic collector off, its protocol, write-pressure producer and TCP transport are gone once it closed.
    """
    server = EngineIOServer(reactor, EngineIOOptions(), Echo)
    root = Resource()
    root.putChild(b"engine.io", server.resource())
    port = reactor.listenTCP(0, RelaySite(root), interface="127.0.0.1")  # type: ignore[attr-defined]
    client = Client()
    try:
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port)
        await connectProtocol(endpoint, client)
        client.transport.write(websocket_request("/engine.io/?EIO=4&transport=websocket"))  # type: ignore[union-attr]
        await until(lambda: server.sessions)
        (session,) = server.sessions.values()
        connection: Any = session.transport._connection  # type: ignore[attr-defined]
        # (Not the session: in a test process its log events are kept, log_source and all, until logging
        # begins; the relay begins logging at start.)
        kept = [weakref.ref(o) for o in (connection, connection._pressure, connection.transport)]
        del session
        client.transport.write(PING * 10 + client_frame(0x81, b"4hello"))  # type: ignore[union-attr]
        await until(lambda: b"hello" in client.received)
        if closing == "client":
            client.transport.loseConnection()  # type: ignore[union-attr]
        else:
            connection.lose()
        del connection
        await client.closed
        await until(lambda: not server.sessions)
        await until(lambda: all(ref() is None for ref in kept), timeout=2)
    finally:
        await port.stopListening()

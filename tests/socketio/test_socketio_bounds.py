"""What an untrusted socket.io client can make the server hold: attachments, queued packets, `/`."""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.task import Clock

from kernel_relay.engineio import HandshakeInfo
from kernel_relay.socketio import Socket, SocketIOServer
from kernel_relay.socketio.packet import Packet, PacketDecoder, PacketError, PacketType
from tests.socketio.test_socketio_server import FakeSession, joined, open_session


def test_attachments_of_one_packet_are_bounded_in_total() -> None:
    """A packet whose attachments together exceed the bound fails as soon as they do, not at its end."""
    decoder = PacketDecoder(max_attachment_bytes=100)
    assert decoder.feed('53-["x",{"_placeholder":true,"num":0}]') is None
    assert decoder.feed(b"a" * 60) is None
    with pytest.raises(PacketError, match="over 100 bytes"):
        decoder.feed(b"b" * 60)
    assert not decoder.awaiting_attachments


def test_attachments_within_the_bound_complete_the_packet() -> None:
    """Attachments that fit the bound together are put back in place as before."""
    decoder = PacketDecoder(max_attachment_bytes=100)
    decoder.feed('52-["x",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]')
    assert decoder.feed(b"a" * 50) is None
    assert decoder.feed(b"b" * 50) == Packet(PacketType.EVENT, "/", ["x", b"a" * 50, b"b" * 50])


def test_attachments_for_an_unwanted_namespace_are_dropped_as_they_arrive() -> None:
    """A binary packet for a namespace nobody joined keeps none of its attachments and completes as None."""
    decoder = PacketDecoder(wanted=lambda namespace: namespace == "/yes")
    decoder.feed('52-/no,["x",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]')
    assert decoder.feed(b"a" * 1000) is None
    assert decoder._attachments == []
    assert decoder.feed(b"b") is None
    assert not decoder.awaiting_attachments
    decoder.feed('51-/yes,["x",{"_placeholder":true,"num":0}]')
    assert decoder.feed(b"c") == Packet(PacketType.EVENT, "/yes", ["x", b"c"])


def test_attachment_bomb_closes_the_client(clock: Clock) -> None:
    """A client announcing many attachments is closed once they exceed max_payload together."""
    server = SocketIOServer(clock, connect_timeout=5.0)
    reported: list[str] = []
    server.on_event = reported.append
    session = open_session(server)
    session.receive('5999-["x"]')
    limit = server.engine.options.max_payload
    chunk = b"z" * (limit // 4)
    for _ in range(4):
        session.receive(chunk)
    assert not session.closed
    session.receive(chunk)
    assert session.closed and session.close_reason == "parse error"
    assert reported == ["malformed_packet"]


def test_binary_packets_before_a_pending_connect_are_bounded(clock: Clock) -> None:
    """Attachments queued for a namespace whose connect handler has not finished stay within max_payload."""
    from twisted.internet.defer import Deferred

    server = SocketIOServer(clock, connect_timeout=5.0)
    pending: Deferred[None] = Deferred()
    server.of("/slow").on_connect(lambda socket, auth: pending)
    session = open_session(server)
    session.receive("0/slow,")
    limit = server.engine.options.max_payload
    session.receive('51-/slow,["x",{"_placeholder":true,"num":0}]', b"a" * (limit // 2))
    assert not session.closed
    session.receive('51-/slow,["x",{"_placeholder":true,"num":0}]', b"b" * (limit // 2 + 1))
    assert session.closed and session.close_reason == "invalid state"


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def guarded(clock: Clock) -> SocketIOServer:
    server = SocketIOServer(clock, connect_timeout=5.0, main_namespace=False)
    server.of("/app")
    return server


def test_main_namespace_not_served_is_refused(guarded: SocketIOServer, clock: Clock) -> None:
    """Without the main namespace a CONNECT to / is an invalid namespace and does not stop the deadline."""
    session = open_session(guarded)
    session.receive("0")
    assert session.take() == ['4{"message":"Invalid namespace"}']
    clock.advance(5.0)
    assert session.closed and session.close_reason == "connect timeout"


def legacy(server: SocketIOServer) -> FakeSession:
    session = FakeSession()
    session.handshake = HandshakeInfo("127.0.0.1", {}, {}, False, "websocket", 3)
    session.handler = server.handle_session(session)
    return session


def test_legacy_session_is_not_joined_to_an_unserved_main_namespace(
    guarded: SocketIOServer, clock: Clock
) -> None:
    """An Engine.IO 3 session is not joined to an unserved / and is closed at the connect deadline."""
    session = legacy(guarded)
    assert session.take() == []
    assert not session.vouched
    clock.advance(5.0)
    assert session.closed and session.close_reason == "connect timeout"


def test_legacy_session_joining_a_namespace_is_kept(guarded: SocketIOServer, clock: Clock) -> None:
    """An Engine.IO 3 session that joins an application namespace is vouched for and outlives the deadline."""
    session = legacy(guarded)
    session.receive("0/app")
    assert session.take() == ["0/app,"]
    clock.advance(60.0)
    assert not session.closed and session.vouched


def test_joining_vouches_for_the_session(clock: Clock) -> None:
    """A session is vouched for once a connect handler accepted it, never on a refusal."""
    from kernel_relay.socketio import ConnectionRefused

    server = SocketIOServer(clock, connect_timeout=5.0)
    seen: list[Socket] = []

    def refuse(socket: Socket, auth: Any) -> None:
        raise ConnectionRefused("no")

    server.of("/closed").on_connect(refuse)
    server.of("/open").on_connect(lambda socket, auth: seen.append(socket))
    session = open_session(server)
    session.receive("0/closed,")
    assert session.take() == ['4/closed,{"message":"no"}']
    assert not session.vouched
    joined(session, "/open")
    assert session.vouched and len(seen) == 1

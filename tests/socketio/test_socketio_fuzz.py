"""Property tests: random and mutated socket.io packets against codec, session and server."""

from __future__ import annotations

import json
import socket as stdlib_socket
from collections.abc import Iterator
from typing import Any

import pytest
import websocket
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kernel_relay.socketio import SocketIOServer
from kernel_relay.socketio.packet import (
    RESERVED_EVENTS,
    Packet,
    PacketDecoder,
    PacketError,
    PacketType,
    encode_packet,
)
from tests.socketio.test_socketio_server import FakeSession, open_session
from tests.support import ServerProcess, conformance_server_argv, free_port, running

SAMPLES = [
    "0",
    '0{"token":"123"}',
    "0/custom,",
    '0/custom,{"token":"abc"}',
    "1",
    "1/custom,",
    '2["message",1,"2",{"3":[true]}]',
    '2456["message-with-ack",1,"2",{"3":[false]}]',
    '2/custom,7["message",null]',
    "30[]",
    '3/a,12["x",{"y":[1.5,-2e3]}]',
    '4{"message":"x"}',
    '52-["message",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]',
    '52-789["message-with-ack",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]',
    '61-/a,15[{"_placeholder":true,"num":0}]',
]

mutation = st.tuples(
    st.sampled_from(["insert", "delete", "replace", "truncate", "duplicate"]),
    st.integers(min_value=0, max_value=200),
    st.characters(codec="utf-8"),
)


@st.composite
def mutated_packets(draw: st.DrawFn) -> str:
    """A valid sample with a few random edits (or none)."""
    text = draw(st.sampled_from(SAMPLES))
    for operation, where, char in draw(st.lists(mutation, max_size=4)):
        where = where % (len(text) + 1)
        if operation == "insert":
            text = text[:where] + char + text[where:]
        elif operation == "delete":
            text = text[:where] + text[where + 1 :]
        elif operation == "replace":
            text = text[:where] + char + text[where + 1 :]
        elif operation == "truncate":
            text = text[:where]
        else:
            text = text[:where] + text[where:] + text[where:]
    return text


messages = st.one_of(
    mutated_packets(),
    st.text(max_size=50),
    st.binary(max_size=20),
    st.sampled_from(SAMPLES),
)

json_leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**53), max_value=2**53),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=10),
    st.binary(max_size=10),
)
json_values = st.recursive(
    json_leaves,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(st.text(max_size=5), children, max_size=4)
    ),
    max_leaves=15,
)


@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(messages, min_size=1, max_size=6))
def test_decoder_only_ever_raises_packet_error(sequence: list[str | bytes]) -> None:
    """Whatever arrives, the decoder returns a packet or None, or raises PacketError only."""
    decoder = PacketDecoder()
    for message in sequence:
        try:
            packet = decoder.feed(message)
        except PacketError:
            continue
        if packet is not None:
            assert isinstance(packet, Packet)
            assert packet.namespace.startswith("/")


@settings(max_examples=300)
@given(
    st.sampled_from([PacketType.EVENT, PacketType.ACK]),
    st.one_of(st.just("/"), st.from_regex(r"/[a-z0-9/_-]{1,12}", fullmatch=True)),
    st.one_of(st.none(), st.integers(min_value=0, max_value=2**53 - 1)),
    st.text(min_size=1, max_size=10).filter(lambda name: name not in RESERVED_EVENTS),
    st.lists(json_values, max_size=4),
)
def test_encode_then_decode_round_trips(
    kind: PacketType, namespace: str, ack_id: int | None, event: str, args: list[Any]
) -> None:
    """Any packet the encoder produces decodes back to the same packet."""
    if kind is PacketType.ACK:
        ack_id = ack_id or 0
        data: list[Any] = args
    else:
        data = [event, *args]
    original = Packet(kind, namespace, data, ack_id)
    decoder = PacketDecoder()
    results = [decoder.feed(message) for message in encode_packet(original)]
    assert all(result is None for result in results[:-1])
    assert results[-1] == original


@settings(max_examples=300, deadline=None)
@given(st.lists(messages, min_size=1, max_size=8))
def test_session_survives_any_input(sequence: list[str | bytes]) -> None:
    """Random input to one session never raises out of it, and a new session still works."""
    from twisted.internet.task import Clock

    server = SocketIOServer(Clock(), connect_timeout=5.0)
    group = server.of("/")
    group.on("message-with-ack", lambda socket, *args: args)
    server.of("/custom")
    victim = open_session(server)
    for message in sequence:
        victim.receive(message)
    fresh = FakeSession()
    fresh.handler = server.handle_session(fresh)
    fresh.receive("0", '21["message-with-ack","ok"]')
    sent = fresh.take()
    assert isinstance(sent[0], str) and sent[0].startswith("0{")
    assert sent[1:] == ['31["ok"]']


# --- live ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def live() -> Iterator[ServerProcess]:
    port = free_port()
    with running(conformance_server_argv(port), port) as server:
        yield server


def open_websocket(server: ServerProcess) -> websocket.WebSocket:
    """A raw WebSocket joined to the main namespace (handshake, CONNECT and auth event consumed)."""
    url = server.url.replace("http", "ws") + "/socket.io/?EIO=4&transport=websocket"
    ws = websocket.create_connection(url, timeout=5)
    assert ws.recv().startswith("0")
    ws.send("40")
    assert ws.recv().startswith("40")
    assert ws.recv() == '42["auth",{}]'
    return ws


def round_trip(ws: websocket.WebSocket, text: str) -> str:
    """Send a message event and return the next reply that is not a ping (answering pings)."""
    ws.send(f'42["message",{json.dumps(text)}]')
    while True:
        reply = ws.recv()
        if reply == "2":
            ws.send("3")
            continue
        assert isinstance(reply, str)
        return reply


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(st.lists(messages, min_size=1, max_size=5))
def test_live_server_refuses_garbage_cleanly(
    live: ServerProcess, sequence: list[str | bytes]
) -> None:
    """Mutated packets on a live WebSocket are refused or handled; another client keeps working."""
    ws = open_websocket(live)
    try:
        for message in sequence:
            try:
                if isinstance(message, bytes):
                    ws.send_binary(message)
                else:
                    ws.send("4" + message)
            except (websocket.WebSocketException, OSError):
                break  # the server closed this connection: a clean refusal
    finally:
        ws.close(timeout=1)
    bystander = open_websocket(live)
    try:
        assert round_trip(bystander, "alive") == '42["message-back","alive"]'
    finally:
        bystander.close(timeout=1)
    assert live.process.poll() is None
    with stdlib_socket.create_connection(("127.0.0.1", live.port), timeout=5):
        pass

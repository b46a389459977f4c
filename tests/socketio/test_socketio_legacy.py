"""socket.io protocol 4 (Engine.IO 3 sessions: socket.io-client 1.x/2.x) in the server layer, and the
RawJSON splice of the packet encoder."""

from __future__ import annotations

import json
import re
from types import MappingProxyType
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.task import Clock

from kernel_relay.engineio import HandshakeInfo
from kernel_relay.socketio import ConnectionRefused, RawJSON, Socket, SocketIOServer
from kernel_relay.socketio.packet import Packet, PacketType, encode_packet, split_namespace_query
from tests.socketio.test_socketio_server import FakeSession

DYNAMIC = re.compile(r"/shell/(?P<kernel>[a-z0-9]+)")


def legacy_session(server: SocketIOServer, **query: str) -> FakeSession:
    session = FakeSession()
    session.handshake = HandshakeInfo(
        "127.0.0.1",
        MappingProxyType({"EIO": "3", "transport": "polling", "t": "x", **query}),
        MappingProxyType({}),
        False,
        "polling",
        3,
    )
    session.handler = server.handle_session(session)
    return session


@pytest.fixture
def server() -> SocketIOServer:
    return SocketIOServer(Clock(), connect_timeout=5.0)


def test_legacy_client_is_joined_to_main_namespace_at_once(server: SocketIOServer) -> None:
    """A protocol 4 client gets "0" right away; "/" handlers see the handshake query as auth."""
    seen: list[tuple[Socket, Any]] = []
    server.of("/").on_connect(lambda socket, auth: seen.append((socket, auth)))
    session = legacy_session(server, token="abc")
    assert session.take() == ["0"]
    [(socket, auth)] = seen
    assert auth == {"token": "abc"}
    assert socket.id == session.sid and socket.connected


def test_legacy_connect_query_becomes_auth(server: SocketIOServer) -> None:
    """ "0/shell/k1?token=x," joins /shell/k1 with auth {"token": "x"}; the reply has no payload."""
    seen: list[tuple[str, Any, str]] = []
    server.of(DYNAMIC).on_connect(
        lambda socket, auth: seen.append((socket.namespace.name, auth, socket.id))
    )
    session = legacy_session(server)
    session.take()
    session.receive("0/shell/k1?token=x&b=%20,")
    assert session.take() == ["0/shell/k1,"]
    assert seen == [("/shell/k1", {"token": "x", "b": " "}, f"/shell/k1#{session.sid}")]


def test_legacy_connect_without_comma_or_query(server: SocketIOServer) -> None:
    """socket.io-client 1.x sends "0/nsp" with neither comma nor query: accepted, auth {}."""
    seen: list[Any] = []
    server.of(DYNAMIC).on_connect(lambda socket, auth: seen.append(auth))
    session = legacy_session(server)
    session.take()
    session.receive("0/shell/k2")
    assert session.take() == ["0/shell/k2,"]
    assert seen == [{}]


def test_legacy_refusal_is_an_error_packet_with_data_or_message(server: SocketIOServer) -> None:
    """A refused protocol 4 CONNECT gets ERROR with the refusal's data, else its message."""

    def refuse(socket: Socket, auth: Any) -> None:
        if auth.get("token") != "good":
            raise ConnectionRefused("Not authorized", {"hint": "token"} if auth else None)

    server.of(DYNAMIC).on_connect(refuse)
    session = legacy_session(server)
    session.take()
    session.receive("0/shell/k3?token=bad,")
    assert session.take() == ['4/shell/k3,{"hint":"token"}']
    session.receive("0/shell/k3")
    assert session.take() == ['4/shell/k3,"Not authorized"']
    session.receive("0/nowhere,")
    assert session.take() == ['4/nowhere,"Invalid namespace"']
    session.receive("0/shell/k3?token=good,")
    assert session.take() == ["0/shell/k3,"]
    assert not session.closed


def test_legacy_repeated_connect_is_ignored(server: SocketIOServer) -> None:
    """A second CONNECT to "/" (already joined) neither closes the client nor replies."""
    session = legacy_session(server)
    session.take()
    session.receive("0")
    assert session.take() == [] and not session.closed


def test_legacy_binary_event_and_ack(server: SocketIOServer) -> None:
    """BINARY_EVENT in, BINARY_ACK out, with attachments as separate binary messages."""
    server.of("/").on("echo", lambda socket, *args: args)
    session = legacy_session(server)
    session.take()
    session.receive('51-7["echo",{"_placeholder":true,"num":0}]', b"\x01\x02")
    assert session.take() == ['61-7[{"_placeholder":true,"num":0}]', b"\x01\x02"]


def test_v5_clients_are_unaffected(server: SocketIOServer) -> None:
    """A protocol 5 client is not joined implicitly and a "?" stays part of its namespace."""
    session = FakeSession()
    session.handler = server.handle_session(session)
    assert session.take() == []
    session.receive("0/a?b=c,")
    [reply] = session.take()
    assert reply == '4/a?b=c,{"message":"Invalid namespace"}'


def test_split_namespace_query() -> None:
    """The query after "?" is parsed into a dict; no "?" means no query."""
    assert split_namespace_query("/a") == ("/a", {})
    assert split_namespace_query("/a?x=1&y=&x=2") == ("/a", {"x": "2", "y": ""})


# -- RawJSON -----------------------------------------------------------------------------------


def test_raw_json_is_spliced_verbatim() -> None:
    """RawJSON values are written as the JSON they hold, anywhere in the payload."""
    data = ["msg", RawJSON('{"header": {"a": 1}}'), {"k": RawJSON("[1, 2]"), "s": "text"}]
    [message] = encode_packet(Packet(PacketType.EVENT, "/shell/x", data))
    assert message == '2/shell/x,["msg",{"header": {"a": 1}},{"k":[1, 2],"s":"text"}]'
    assert json.loads(str(message)[len("2/shell/x,") :])[1] == {"header": {"a": 1}}


def test_raw_json_with_attachments_and_ack() -> None:
    """RawJSON next to binary values: placeholders and attachments are as without it."""
    data = [RawJSON('"x"'), b"\x00"]
    assert encode_packet(Packet(PacketType.ACK, "/", data, 3)) == [
        '61-3["x",{"_placeholder":true,"num":0}]',
        b"\x00",
    ]


def test_raw_json_is_a_str() -> None:
    """RawJSON is a str, so code that does not know it still sees text."""
    raw = RawJSON("{}")
    assert isinstance(raw, str) and raw == "{}"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@given(json_values)
def test_raw_json_encodes_like_the_value_it_holds(value: Any) -> None:
    """Wrapping any part of a payload as RawJSON of its own JSON gives an identical packet."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    plain = encode_packet(Packet(PacketType.EVENT, "/", ["e", value, {"v": value}]))
    raw = encode_packet(Packet(PacketType.EVENT, "/", ["e", RawJSON(text), {"v": RawJSON(text)}]))
    assert json.loads(str(raw[0])[1:]) == json.loads(str(plain[0])[1:])

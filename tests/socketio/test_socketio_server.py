"""Unit tests of the socket.io server layer, driven through an in-memory fake Engine.IO session."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.logger import capturedLogs
from twisted.python.failure import Failure

from kernel_relay.engineio import HandshakeInfo
from kernel_relay.socketio import (
    AckTimeout,
    Client,
    ConnectionRefused,
    Disconnected,
    Socket,
    SocketIOServer,
)
from kernel_relay.socketio import namespace as namespace_module
from kernel_relay.socketio.socket import MAX_QUEUED_BEFORE_CONNECT


class FakeSession:
    """Stands in for an EngineIOSession: records what is sent, reports close to its handler once."""

    counter = 0

    def __init__(self) -> None:
        FakeSession.counter += 1
        self.sid = f"session{FakeSession.counter}"
        self.handshake = HandshakeInfo("127.0.0.1", {}, {}, False, "websocket", 4)
        self.sent: list[str | bytes] = []
        self.closed = False
        self.close_reason: str | None = None
        self.handler: Client | None = None
        self.buffered_bytes = 0
        self.vouched = False

    def vouch(self) -> None:
        self.vouched = True

    def send(self, *messages: str | bytes) -> None:
        if not self.closed:
            self.sent.extend(messages)

    def close(self, reason: str = "server close") -> None:
        if self.closed:
            return
        self.closed = True
        self.close_reason = reason
        if self.handler is not None:
            self.handler.session_closed(reason)

    def receive(self, *messages: str | bytes) -> None:
        """Deliver messages from the client, as the Engine.IO layer would."""
        for message in messages:
            assert self.handler is not None
            self.handler.message_received(message)

    def take(self) -> list[str | bytes]:
        sent, self.sent = self.sent, []
        return sent


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def server(clock: Clock) -> SocketIOServer:
    return SocketIOServer(clock, connect_timeout=5.0)


def open_session(server: SocketIOServer) -> FakeSession:
    session = FakeSession()
    session.handler = server.handle_session(session)
    return session


def text(message: str | bytes) -> str:
    """The message, which must be a text message."""
    assert isinstance(message, str), message
    return message


def joined(session: FakeSession, namespace: str = "/", auth: str = "") -> str:
    """Send CONNECT and return the socket id from the server's CONNECT reply."""
    prefix = "0" if namespace == "/" else f"0{namespace},"
    session.receive(prefix + auth)
    reply = session.take()
    assert reply and isinstance(reply[0], str) and reply[0].startswith(prefix), reply
    sid: str = json.loads(reply[0][len(prefix) :])["sid"]
    session.sent = reply[1:]
    return sid


# --- connecting -----------------------------------------------------------------------------------


def test_connect_to_main_namespace_replies_with_socket_id(server: SocketIOServer) -> None:
    """CONNECT to "/" is answered with a CONNECT carrying a socket id (not the session id)."""
    seen: list[tuple[Socket, Any]] = []
    server.of("/").on_connect(lambda socket, auth: seen.append((socket, auth)))
    session = open_session(server)
    sid = joined(session)
    [(socket, auth)] = seen
    assert socket.id == sid != session.sid
    assert auth == {}
    assert socket.connected
    namespace = server.namespace("/")
    assert namespace is not None and dict(namespace.sockets) == {sid: socket}


def test_connect_passes_the_auth_payload(server: SocketIOServer) -> None:
    """The CONNECT payload object reaches the connect handler and socket.auth."""
    seen: list[Any] = []
    server.of("/custom").on_connect(lambda socket, auth: seen.append((auth, socket.auth)))
    session = open_session(server)
    joined(session, "/custom", '{"token":"abc"}')
    assert seen == [({"token": "abc"}, {"token": "abc"})]


def test_unknown_namespace_is_refused(server: SocketIOServer) -> None:
    """CONNECT to an unregistered namespace gets the reference's "Invalid namespace" error."""
    session = open_session(server)
    session.receive("0/random")
    assert session.take() == ['4/random,{"message":"Invalid namespace"}']
    assert not session.closed


def test_connection_refused_with_data(server: SocketIOServer) -> None:
    """ConnectionRefused(message, data) answers CONNECT_ERROR with both keys; no socket remains."""

    def refuse(socket: Socket, auth: Any) -> None:
        raise ConnectionRefused("Not authorized", {"code": 7})

    server.of("/x").on_connect(refuse)
    session = open_session(server)
    session.receive("0/x,")
    assert session.take() == ['4/x,{"message":"Not authorized","data":{"code":7}}']
    namespace = server.namespace("/x")
    assert namespace is not None and not namespace.sockets


def test_connection_refused_without_data_has_no_data_key(server: SocketIOServer) -> None:
    """ConnectionRefused without data sends only the message key."""
    group = server.of("/x")
    group.on_connect(lambda socket, auth: Deferred.fromCoroutine(_refuse_later()))
    session = open_session(server)
    session.receive("0/x,")
    assert session.take() == ['4/x,{"message":"nope"}']


async def _refuse_later() -> None:
    raise ConnectionRefused("nope")


def test_connect_handler_crash_gives_generic_error(server: SocketIOServer) -> None:
    """Another exception from a connect handler is answered with a generic CONNECT_ERROR."""

    def crash(socket: Socket, auth: Any) -> None:
        raise RuntimeError("secret internals")

    server.of("/x").on_connect(crash)
    session = open_session(server)
    session.receive("0/x,")
    assert session.take() == ['4/x,{"message":"Internal server error"}']
    assert not session.closed


def test_async_connect_handler_is_awaited(server: SocketIOServer) -> None:
    """A coroutine connect handler is run to completion before the CONNECT reply."""
    gate: Deferred[None] = Deferred()

    async def handler(socket: Socket, auth: Any) -> None:
        await gate

    server.of("/").on_connect(handler)
    session = open_session(server)
    session.receive("0")
    assert session.take() == []
    gate.callback(None)
    assert text(session.take()[0]).startswith("0{")


def test_events_sent_while_connecting_are_queued(server: SocketIOServer) -> None:
    """Events the client sends before the CONNECT reply are handled after it, in order."""
    gate: Deferred[None] = Deferred()
    received: list[Any] = []
    group = server.of("/")
    group.on_connect(lambda socket, auth: gate)
    group.on("message", lambda socket, *args: received.append(args))
    session = open_session(server)
    session.receive("0", '2["message",1]', '21["message",2]')
    assert received == []
    assert session.take() == []
    gate.callback(None)
    assert received == [(1,), (2,)]
    sent = session.take()
    assert text(sent[0]).startswith("0{")
    assert sent[1:] == ["31[]"]


def test_emits_from_connect_handler_follow_the_connect_reply(server: SocketIOServer) -> None:
    """An emit made inside the connect handler reaches the client after the CONNECT packet."""
    server.of("/custom").on_connect(lambda socket, auth: socket.emit("auth", auth))
    session = open_session(server)
    session.receive('0/custom,{"token":"abc"}')
    sent = session.take()
    assert text(sent[0]).startswith("0/custom,{")
    assert sent[1:] == ['2/custom,["auth",{"token":"abc"}]']


def test_client_disconnect_while_connecting_abandons_the_socket(server: SocketIOServer) -> None:
    """A DISCONNECT before the connect handler finished cancels the join, with no handlers run."""
    gate: Deferred[None] = Deferred()
    left: list[str] = []
    group = server.of("/")
    group.on_connect(lambda socket, auth: gate)
    group.on_disconnect(lambda socket, reason: left.append(reason))
    session = open_session(server)
    session.receive("0", "1")
    gate.callback(None)
    assert session.take() == []
    assert left == []
    namespace = server.namespace("/")
    assert namespace is not None and not namespace.sockets


def test_too_many_packets_before_connect_close_the_session(server: SocketIOServer) -> None:
    """A client flooding a namespace that is still connecting is disconnected."""
    server.of("/").on_connect(lambda socket, auth: Deferred())
    session = open_session(server)
    session.receive("0")
    for _ in range(MAX_QUEUED_BEFORE_CONNECT):
        session.receive('2["x"]')
    assert not session.closed
    session.receive('2["x"]')
    assert session.closed


def test_second_connect_to_same_namespace_closes(server: SocketIOServer) -> None:
    """A CONNECT for a namespace the client already joined is a protocol violation."""
    session = open_session(server)
    joined(session)
    session.receive("0")
    assert session.closed


def test_connect_error_from_client_closes(server: SocketIOServer) -> None:
    """Clients never send CONNECT_ERROR; one that does is disconnected."""
    session = open_session(server)
    joined(session)
    session.receive('4{"message":"x"}')
    assert session.closed and session.close_reason == "invalid state"


def test_sockets_of_one_session_share_a_client(server: SocketIOServer) -> None:
    """Two namespaces joined over one session report the same Client object."""
    sockets: list[Socket] = []
    server.of("/").on_connect(lambda socket, auth: sockets.append(socket))
    server.of("/b").on_connect(lambda socket, auth: sockets.append(socket))
    session = open_session(server)
    joined(session)
    joined(session, "/b")
    first, second = sockets
    assert first.client is second.client
    assert first.client.sid == session.sid
    assert first.id != second.id
    assert set(first.client.sockets) == {"/", "/b"}


def test_pattern_namespace_has_params_and_lives_while_joined(server: SocketIOServer) -> None:
    """A pattern namespace exposes its named groups and disappears when its last socket leaves."""
    params: list[dict[str, str]] = []
    group = server.of(re.compile(r"/shell/(?P<kernel_id>[^/]+)"))
    group.on_connect(lambda socket, auth: params.append(socket.namespace.params))
    session = open_session(server)
    assert server.namespace("/shell/k1") is None
    joined(session, "/shell/k1")
    assert params == [{"kernel_id": "k1"}]
    assert server.namespace("/shell/k1") is not None
    session.receive("1/shell/k1,")
    assert server.namespace("/shell/k1") is None
    session.receive("0/shell/a/b")
    assert session.take() == ['4/shell/a/b,{"message":"Invalid namespace"}']


def test_exact_name_wins_over_pattern(server: SocketIOServer) -> None:
    """When an exact namespace and a pattern both match, the exact group's handlers run."""
    calls: list[str] = []
    server.of(re.compile(r"/x.*")).on_connect(lambda socket, auth: calls.append("pattern"))
    server.of("/xy").on_connect(lambda socket, auth: calls.append("exact"))
    session = open_session(server)
    joined(session, "/xy")
    joined(session, "/xz")
    assert calls == ["exact", "pattern"]


def test_of_returns_the_same_group_and_checks_names(server: SocketIOServer) -> None:
    """of() is idempotent for a name or pattern and refuses names without a leading slash."""
    pattern = re.compile(r"/p/\d+")
    assert server.of("/a") is server.of("/a")
    assert server.of(pattern) is server.of(pattern)
    for bad in ("a", "", "/a,b"):
        with pytest.raises(ValueError):
            server.of(bad)


# --- events and acks ------------------------------------------------------------------------------


def test_event_handler_results_become_acks(server: SocketIOServer) -> None:
    """None acks with no args, a tuple with its items, any other value with one arg."""
    group = server.of("/")
    group.on("none", lambda socket, *args: None)
    group.on("tuple", lambda socket, *args: (1, "2"))
    group.on("value", lambda socket, *args: {"a": [1]})
    group.on("echo", lambda socket, *args: args)
    session = open_session(server)
    joined(session)
    session.receive('21["none"]', '22["tuple"]', '23["value"]', '24["echo",1,"2",{"3":[false]}]')
    assert session.take() == ["31[]", '32[1,"2"]', '33[{"a":[1]}]', '34[1,"2",{"3":[false]}]']


def test_decorator_registration(server: SocketIOServer) -> None:
    """@group.on("event") registers the decorated function and returns it unchanged."""
    group = server.of("/")

    @group.on("hello")
    def hello(socket: Socket, name: str) -> str:
        return f"hi {name}"

    assert hello(None, "x") == "hi x"  # type: ignore[arg-type]
    session = open_session(server)
    joined(session)
    session.receive('27["hello","bob"]')
    assert session.take() == ['37["hi bob"]']


def test_deferred_event_result_is_acked_later(server: SocketIOServer) -> None:
    """A handler returning a Deferred gets its ack sent when the Deferred fires."""
    later: Deferred[str] = Deferred()
    server.of("/").on("slow", lambda socket: later)
    session = open_session(server)
    joined(session)
    session.receive('25["slow"]')
    assert session.take() == []
    later.callback("done")
    assert session.take() == ['35["done"]']


def test_coroutine_and_failure_results_are_handled_like_deferreds(server: SocketIOServer) -> None:
    """A coroutine handler is awaited for its ack; a returned Failure sends no ack, like a raise."""
    later: Deferred[str] = Deferred()

    async def waits(socket: Socket) -> str:
        return await later

    group = server.of("/")
    group.on("waits", waits)
    group.on("fails", lambda socket: Failure(ValueError("returned, not raised")))
    session = open_session(server)
    joined(session)
    with capturedLogs() as events:
        session.receive('26["waits"]', '27["fails"]')
    assert session.take() == []
    later.callback("awaited")
    assert session.take() == ['36["awaited"]']
    assert not session.closed
    failures = [event["log_failure"].value for event in events if "log_failure" in event]
    assert [str(error) for error in failures] == ["returned, not raised"]


def test_handler_exception_sends_no_ack_and_keeps_the_session(server: SocketIOServer) -> None:
    """An exception in an event handler is logged, no ack is sent and later events still work."""

    def broken(socket: Socket, *args: Any) -> None:
        raise ValueError("bug")

    group = server.of("/")
    group.on("broken", broken)
    group.on("ok", lambda socket: "fine")
    session = open_session(server)
    joined(session)
    session.receive('21["broken"]', '22["ok"]')
    assert session.take() == ['32["fine"]']
    assert not session.closed


def test_unserializable_ack_is_logged_not_fatal(server: SocketIOServer) -> None:
    """An ack value JSON cannot encode sends no ack and leaves the session open."""
    server.of("/").on("bad", lambda socket: object())
    session = open_session(server)
    joined(session)
    session.receive('21["bad"]')
    assert session.take() == []
    assert not session.closed


def test_event_without_handler_is_ignored(server: SocketIOServer) -> None:
    """An event nobody handles gets no ack and does not disturb the session."""
    session = open_session(server)
    joined(session)
    session.receive('21["nobody"]')
    assert session.take() == []
    assert not session.closed


def test_binary_event_and_binary_ack(server: SocketIOServer) -> None:
    """Received attachments arrive as bytes; bytes in the ack value go out as a BINARY_ACK."""
    seen: list[Any] = []

    def handler(socket: Socket, *args: Any) -> tuple[Any, ...]:
        seen.append(args)
        return args

    server.of("/").on("message-with-ack", handler)
    session = open_session(server)
    joined(session)
    session.receive(
        '52-789["message-with-ack",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]',
        b"\x01\x02\x03",
        b"\x04\x05\x06",
    )
    assert seen == [(b"\x01\x02\x03", b"\x04\x05\x06")]
    assert session.take() == [
        '62-789[{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]',
        b"\x01\x02\x03",
        b"\x04\x05\x06",
    ]


def test_socket_emit_with_binary(server: SocketIOServer) -> None:
    """Socket.emit sends bytes nested anywhere as attachments after the text packet."""
    sockets: list[Socket] = []
    server.of("/n").on_connect(lambda socket, auth: sockets.append(socket))
    session = open_session(server)
    joined(session, "/n")
    sockets[0].emit("data", {"buffers": [b"ab", memoryview(b"c")]})
    assert session.take() == [
        '52-/n,["data",{"buffers":[{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]}]',
        b"ab",
        b"c",
    ]


def test_emit_refuses_reserved_or_non_string_events(server: SocketIOServer) -> None:
    """Emitting a reserved or non-string event name is a programming error raised at once."""
    sockets: list[Socket] = []
    server.of("/").on_connect(lambda socket, auth: sockets.append(socket))
    session = open_session(server)
    joined(session)
    with pytest.raises(ValueError):
        sockets[0].emit("disconnect")
    with pytest.raises(TypeError):
        sockets[0].emit(1)  # type: ignore[arg-type]


def test_server_call_resolves_with_the_client_ack(server: SocketIOServer) -> None:
    """Socket.call sends an event with an ack id and fires with the matching ACK's arguments."""
    sockets: list[Socket] = []
    server.of("/n").on_connect(lambda socket, auth: sockets.append(socket))
    session = open_session(server)
    joined(session, "/n")
    results: list[Any] = []
    sockets[0].call("question", 1).addCallback(results.append)
    sockets[0].call("second").addCallback(results.append)
    assert session.take() == ['2/n,0["question",1]', '2/n,1["second"]']
    session.receive('3/n,1["b"]')
    session.receive('61-/n,0["a",{"_placeholder":true,"num":0}]', b"\x00")
    assert results == [["b"], ["a", b"\x00"]]
    session.receive('3/n,0["late"]')  # unknown ack ids are ignored
    assert not session.closed


def test_server_call_times_out(server: SocketIOServer, clock: Clock) -> None:
    """Without an ack in time the call fails with AckTimeout, and a late ack is ignored."""
    sockets: list[Socket] = []
    server.of("/").on_connect(lambda socket, auth: sockets.append(socket))
    session = open_session(server)
    joined(session)
    failures: list[Any] = []
    sockets[0].call("q", timeout=2.0).addErrback(failures.append)
    clock.advance(1.9)
    assert failures == []
    clock.advance(0.2)
    assert len(failures) == 1 and failures[0].check(AckTimeout)
    session.receive("30[]")
    assert not session.closed


def test_server_call_fails_on_disconnect(server: SocketIOServer) -> None:
    """A pending call fails with Disconnected when the client leaves; later calls fail too."""
    sockets: list[Socket] = []
    server.of("/").on_connect(lambda socket, auth: sockets.append(socket))
    session = open_session(server)
    joined(session)
    failures: list[Any] = []
    sockets[0].call("q").addErrback(failures.append)
    session.receive("1")
    sockets[0].call("q").addErrback(failures.append)
    assert [failure.check(Disconnected) for failure in failures] == [Disconnected, Disconnected]


def test_cancelled_call_forgets_its_ack(server: SocketIOServer, clock: Clock) -> None:
    """Cancelling a call's Deferred drops its bookkeeping and its timer."""
    sockets: list[Socket] = []
    server.of("/").on_connect(lambda socket, auth: sockets.append(socket))
    session = open_session(server)
    joined(session)
    call = sockets[0].call("q", timeout=10.0)
    call.addErrback(lambda failure: None)
    call.cancel()
    assert clock.getDelayedCalls() == []
    session.receive('30["late"]')
    assert not session.closed


# --- disconnecting --------------------------------------------------------------------------------


def test_client_namespace_disconnect_keeps_the_session(server: SocketIOServer) -> None:
    """A client DISCONNECT runs disconnect handlers and keeps the session and other namespaces."""
    reasons: list[str] = []
    received: list[Any] = []
    group = server.of("/")
    group.on("message", lambda socket, *args: received.append(args))
    server.of("/custom").on_disconnect(lambda socket, reason: reasons.append(reason))
    session = open_session(server)
    joined(session)
    joined(session, "/custom")
    session.receive("1/custom", '2["message","main"]')
    assert reasons == ["client namespace disconnect"]
    assert received == [("main",)]
    assert not session.closed
    namespace = server.namespace("/custom")
    assert namespace is not None and not namespace.sockets


def test_packets_for_a_namespace_not_joined_are_ignored(server: SocketIOServer) -> None:
    """Events for a namespace the client is not in are dropped without closing the session."""
    received: list[Any] = []
    server.of("/custom").on("message", lambda socket, *args: received.append(args))
    session = open_session(server)
    joined(session)
    session.receive('2/custom,["message"]', "1/custom,", '3/custom,1["x"]')
    assert received == []
    assert not session.closed


def test_server_socket_disconnect_tells_the_client(server: SocketIOServer) -> None:
    """Socket.disconnect sends DISCONNECT for the namespace and runs the disconnect handlers."""
    sockets: list[Socket] = []
    reasons: list[str] = []
    group = server.of("/n")
    group.on_connect(lambda socket, auth: sockets.append(socket))
    group.on_disconnect(lambda socket, reason: reasons.append(reason))
    session = open_session(server)
    joined(session, "/n")
    sockets[0].disconnect()
    sockets[0].disconnect()
    assert session.take() == ["1/n,"]
    assert reasons == ["server namespace disconnect"]
    assert not sockets[0].connected
    assert not session.closed
    sockets[0].emit("after")
    assert session.take() == []


def test_disconnect_inside_connect_handler_refuses(server: SocketIOServer) -> None:
    """A socket disconnected by its own connect handler gets a CONNECT_ERROR, never a CONNECT."""
    server.of("/").on_connect(lambda socket, auth: socket.disconnect())
    session = open_session(server)
    session.receive("0")
    assert session.take() == ['4{"message":"Connection refused"}']


def test_namespace_disconnect_all(server: SocketIOServer) -> None:
    """disconnect_all sends DISCONNECT to every socket and passes the reason to the handlers."""
    reasons: list[str] = []
    server.of("/n").on_disconnect(lambda socket, reason: reasons.append(reason))
    sessions = [open_session(server) for _ in range(3)]
    for session in sessions:
        joined(session, "/n")
    namespace = server.namespace("/n")
    assert namespace is not None
    namespace.disconnect_all("kernel died")
    assert [session.take() for session in sessions] == [["1/n,"]] * 3
    assert reasons == ["kernel died"] * 3
    assert not namespace.sockets


def test_session_close_reason_reaches_disconnect_handlers(server: SocketIOServer) -> None:
    """When the Engine.IO session ends, every socket's disconnect handlers get its reason."""
    reasons: list[tuple[str, str]] = []
    server.of("/").on_disconnect(lambda socket, reason: reasons.append(("/", reason)))
    server.of("/b").on_disconnect(lambda socket, reason: reasons.append(("/b", reason)))
    session = open_session(server)
    joined(session)
    joined(session, "/b")
    assert session.handler is not None
    session.handler.session_closed("ping timeout")
    assert sorted(reasons) == [("/", "ping timeout"), ("/b", "ping timeout")]
    assert session.sid not in server.clients


def test_failing_disconnect_handler_does_not_stop_others(server: SocketIOServer) -> None:
    """A disconnect handler that raises is logged and the next one still runs."""
    calls: list[str] = []

    def broken(socket: Socket, reason: str) -> None:
        raise RuntimeError("bug")

    group = server.of("/")
    group.on_disconnect(broken)
    group.on_disconnect(lambda socket, reason: calls.append(reason))
    session = open_session(server)
    joined(session)
    session.receive("1")
    assert calls == ["client namespace disconnect"]


def test_server_close_disconnects_everyone(server: SocketIOServer) -> None:
    """close() sends DISCONNECT for each joined namespace, then closes each session."""
    reasons: list[str] = []
    server.of("/").on_disconnect(lambda socket, reason: reasons.append(reason))
    sessions = [open_session(server) for _ in range(2)]
    for session in sessions:
        joined(session)
    server.close("bye")
    assert [session.take() for session in sessions] == [["1"], ["1"]]
    assert all(session.closed for session in sessions)
    assert reasons == ["bye", "bye"]
    assert not server.clients


# --- timeouts and malformed input -----------------------------------------------------------------


def test_connect_timeout_closes_idle_sessions(server: SocketIOServer, clock: Clock) -> None:
    """A session joining no namespace within connect_timeout is closed; one that joined is kept."""
    idle = open_session(server)
    active = open_session(server)
    joined(active)
    clock.advance(4.9)
    assert not idle.closed
    clock.advance(0.2)
    assert idle.closed and idle.close_reason == "connect timeout"
    assert not active.closed
    assert clock.getDelayedCalls() == []


def test_refused_client_is_still_subject_to_connect_timeout(
    server: SocketIOServer, clock: Clock
) -> None:
    """Being refused does not count as joining: the session is closed at the connect timeout."""
    session = open_session(server)
    session.receive("0/random,")
    clock.advance(5.0)
    assert session.closed


@pytest.mark.parametrize(
    "messages",
    [
        ["abc"],
        ["2{}"],
        ['2abc["message-with-ack",1]'],
        ["2[1]"],
        ['2["connect"]'],
        ["3[]"],
        [b"\x00"],
        ['51-["x",{"_placeholder":true,"num":0}]', '2["x"]'],
        ['51-["x",{"_placeholder":true,"num":3}]', b"a"],
        ["9"],
    ],
)
def test_malformed_packets_close_only_that_session(
    server: SocketIOServer, messages: list[str | bytes]
) -> None:
    """A malformed packet closes its session with "parse error"; another session is unaffected."""
    reasons: list[str] = []
    server.of("/").on_disconnect(lambda socket, reason: reasons.append(reason))
    server.of("/").on("ping", lambda socket: "pong")
    victim = open_session(server)
    bystander = open_session(server)
    joined(victim)
    joined(bystander)
    victim.receive(*messages)
    assert victim.closed and victim.close_reason == "parse error"
    assert reasons == ["parse error"]
    bystander.receive('21["ping"]')
    assert bystander.take() == ['31["pong"]']


def test_internal_error_closes_only_that_client(
    server: SocketIOServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug while dispatching a packet closes that client alone instead of escaping."""
    victim = open_session(server)
    bystander = open_session(server)
    joined(victim)
    joined(bystander)

    def broken(self: Socket, packet: Any) -> None:
        raise RuntimeError("bug")

    monkeypatch.setattr(Socket, "receive", broken)
    victim.receive('2["x"]')
    assert victim.closed and victim.close_reason == "internal error"
    assert not bystander.closed


def test_messages_after_close_are_ignored(server: SocketIOServer) -> None:
    """A message delivered after the client closed is dropped without error."""
    received: list[Any] = []
    server.of("/").on("x", lambda socket: received.append(1))
    session = open_session(server)
    joined(session)
    session.receive("abc")
    assert session.handler is not None
    session.handler.message_received('2["x"]')
    assert received == []


# --- broadcast ------------------------------------------------------------------------------------


def test_namespace_emit_encodes_once_for_all_sockets(
    server: SocketIOServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Namespace.emit encodes the packet once, however many sockets receive it."""
    server.of("/iopub")
    sessions = [open_session(server) for _ in range(5)]
    for session in sessions:
        joined(session, "/iopub")
    namespace = server.namespace("/iopub")
    assert namespace is not None
    real = namespace_module.encode_packet  # type: ignore[attr-defined]
    calls: list[Any] = []

    def counting(packet: Any) -> list[str | bytes]:
        calls.append(packet)
        return real(packet)

    monkeypatch.setattr(namespace_module, "encode_packet", counting)
    namespace.emit("msg", {"content": {}}, b"buf")
    assert len(calls) == 1
    expected = ['51-/iopub,["msg",{"content":{}},{"_placeholder":true,"num":0}]', b"buf"]
    assert [session.take() for session in sessions] == [expected] * 5


def test_namespace_emit_skips_sockets_still_connecting(server: SocketIOServer) -> None:
    """A broadcast reaches connected sockets only, not one whose connect handler is pending."""
    gate: Deferred[None] = Deferred()
    group = server.of("/n")
    ready = open_session(server)
    joined(ready, "/n")
    group.on_connect(lambda socket, auth: gate)
    waiting = open_session(server)
    waiting.receive("0/n,")
    namespace = server.namespace("/n")
    assert namespace is not None
    namespace.emit("hello")
    assert ready.take() == ['2/n,["hello"]']
    assert waiting.take() == []
    gate.callback(None)
    assert text(waiting.take()[0]).startswith("0/n,")


def test_handshake_is_reachable_from_the_socket(server: SocketIOServer) -> None:
    """socket.client.handshake is the Engine.IO session's handshake."""
    sockets: list[Socket] = []
    server.of("/").on_connect(
        lambda socket, auth: succeed(None).addCallback(lambda _: sockets.append(socket))
    )
    session = open_session(server)
    joined(session)
    assert sockets[0].client.handshake is session.handshake

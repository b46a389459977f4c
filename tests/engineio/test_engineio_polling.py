"""Tests of the Engine.IO HTTP resource (polling, request checks, CORS) with twisted.web doubles."""

from __future__ import annotations

import json
from io import BytesIO
from typing import Any

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.web.server import NOT_DONE_YET
from twisted.web.test.requesthelper import DummyRequest

from kernel_relay.engineio import EngineIOOptions, EngineIOServer, EngineIOSession
from kernel_relay.engineio.errors import ErrorCode
from kernel_relay.engineio.request_checks import RequestFacts, check_request
from kernel_relay.http.origins import OriginPolicy


class Request(DummyRequest):  # type: ignore[misc]
    """A DummyRequest with a method, a query, a body and the isSecure the resource asks for."""

    def __init__(
        self,
        method: bytes = b"GET",
        query: dict[str, str] | None = None,
        body: bytes = b"",
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__([b""])
        self.client = IPv4Address("TCP", "10.0.0.7", 5555)
        self.method = method
        self.args = {k.encode(): [v.encode()] for k, v in (query or {}).items()}
        self.content = BytesIO(body)
        for name, value in (headers or {}).items():
            self.requestHeaders.setRawHeaders(name.encode(), [value.encode()])

    def isSecure(self) -> bool:
        return False

    def lose(self) -> None:
        """Simulate the client going away before the response is finished."""
        self.processingFailed(Failure(ConnectionError("client gone")))

    def body(self) -> bytes:
        return b"".join(self.written)

    def header(self, name: str) -> str | None:
        values = self.responseHeaders.getRawHeaders(name.encode())
        return values[-1].decode() if values else None


class Echo:
    def __init__(self, session: EngineIOSession, log: list[Any]) -> None:
        self.session = session
        self.log = log

    def message_received(self, data: str | bytes) -> None:
        self.log.append(data)
        self.session.send(data)

    def session_closed(self, reason: str) -> None:
        self.log.append(("closed", reason))


class Harness:
    def __init__(self, **options: Any) -> None:
        self.clock = Clock()
        self.log: list[Any] = []
        self.server = EngineIOServer(
            self.clock, EngineIOOptions(**options), lambda s: Echo(s, self.log)
        )
        self.resource = self.server.resource()

    def render(self, request: Request) -> Any:
        result = self.resource.render(request)
        if result is not NOT_DONE_YET:
            request.write(result)
            request.finish()
        return result

    def handshake(self) -> str:
        request = Request(query={"EIO": "4", "transport": "polling"})
        self.render(request)
        assert request.finished
        body = request.body().decode()
        assert body.startswith("0")
        sid: str = json.loads(body[1:])["sid"]
        return sid

    def get(self, sid: str) -> Request:
        request = Request(query={"EIO": "4", "transport": "polling", "sid": sid})
        self.render(request)
        return request

    def post(self, sid: str, body: bytes, **headers: str) -> Request:
        request = Request(b"POST", {"EIO": "4", "transport": "polling", "sid": sid}, body, headers)
        self.render(request)
        return request


def error_of(request: Request) -> tuple[int, int]:
    payload = json.loads(request.body())
    return request.responseCode, payload["code"]


def test_handshake_and_echo_over_polling() -> None:
    """A POSTed message reaches the handler and its echo is delivered to the next GET."""
    h = Harness()
    sid = h.handshake()
    assert sid in h.server.sessions
    post = h.post(sid, b"4hello\x1ebAQIDBA==")
    assert post.body() == b"ok" and post.responseCode in (None, 200)
    get = h.get(sid)
    assert get.finished and get.body() == b"4hello\x1ebAQIDBA=="
    assert get.header("content-type") == "text/plain; charset=UTF-8"
    assert h.log == ["hello", b"\x01\x02\x03\x04"]


def test_get_is_held_until_data() -> None:
    """A GET with nothing to deliver stays open until a message is sent."""
    h = Harness()
    sid = h.handshake()
    get = h.get(sid)
    assert not get.finished
    h.server.sessions[sid].send("later")
    assert get.finished and get.body() == b"4later"


def test_ping_reaches_pending_get() -> None:
    """After ping_interval the waiting GET receives a ping packet."""
    h = Harness(ping_interval=1.0, ping_timeout=1.0)
    sid = h.handshake()
    get = h.get(sid)
    h.clock.advance(1.0)
    assert get.body() == b"2"
    h.post(sid, b"3")
    h.clock.advance(1.5)
    assert sid in h.server.sessions


@pytest.mark.parametrize(
    ("query", "method", "status", "code"),
    [
        ({"EIO": "4"}, b"GET", 400, 0),
        ({"EIO": "4", "transport": "carrier-pigeon"}, b"GET", 400, 0),
        ({"transport": "polling"}, b"GET", 400, 5),
        ({"EIO": "abc", "transport": "polling"}, b"GET", 400, 5),
        ({"EIO": "2", "transport": "polling"}, b"GET", 400, 5),
        ({"EIO": "4", "transport": "polling"}, b"POST", 400, 2),
        ({"EIO": "4", "transport": "polling"}, b"PUT", 400, 2),
        ({"EIO": "4", "transport": "polling", "sid": "nope"}, b"GET", 400, 1),
        ({"EIO": "4", "transport": "websocket"}, b"GET", 400, 3),
    ],
)
def test_bad_requests_get_json_errors(
    query: dict[str, str], method: bytes, status: int, code: int
) -> None:
    """Malformed requests are refused with the reference server's status and error code."""
    h = Harness()
    request = Request(method, query)
    h.render(request)
    assert error_of(request) == (status, code)
    assert request.header("content-type") == "application/json"


def test_disabled_transport_is_unknown() -> None:
    """A transport left out of options.transports is refused as unknown."""
    h = Harness(transports=("websocket",))
    request = Request(query={"EIO": "4", "transport": "polling"})
    h.render(request)
    assert error_of(request) == (400, 0)


def test_put_with_sid_is_bad_request() -> None:
    """Methods other than GET and POST on a session are refused without closing it."""
    h = Harness()
    sid = h.handshake()
    request = Request(b"PUT", {"EIO": "4", "transport": "polling", "sid": sid})
    h.render(request)
    assert error_of(request) == (400, 3)
    assert sid in h.server.sessions


def test_overlapping_gets_close_the_session() -> None:
    """A second GET gets 400, the first gets the close packet, and the session is gone."""
    h = Harness()
    sid = h.handshake()
    first = h.get(sid)
    second = h.get(sid)
    assert error_of(second) == (400, 3)
    assert first.body() == b"1"
    assert ("closed", "transport error") in h.log
    assert error_of(h.get(sid)) == (400, 1)


def test_invalid_post_closes_the_session() -> None:
    """An undecodable POST body gets 400 and closes the session with 'parse error'."""
    h = Harness()
    sid = h.handshake()
    pending = h.get(sid)
    post = h.post(sid, b"abc")
    assert error_of(post) == (400, 3)
    assert pending.body() == b"1"
    assert ("closed", "parse error") in h.log
    assert error_of(h.get(sid)) == (400, 1)


def test_binary_content_type_is_refused() -> None:
    """A v4 POST declared application/octet-stream is refused and the session closed."""
    h = Harness()
    sid = h.handshake()
    post = h.post(sid, b"4x", **{"content-type": "application/octet-stream"})
    assert error_of(post) == (400, 3)
    assert sid not in h.server.sessions


def test_client_close_answers_pending_get_with_noop() -> None:
    """A client close packet ends the session and answers the waiting GET with a noop."""
    h = Harness()
    sid = h.handshake()
    pending = h.get(sid)
    assert h.post(sid, b"1").body() == b"ok"
    assert pending.body() == b"6"
    assert ("closed", "transport close") in h.log
    assert error_of(h.get(sid)) == (400, 1)


def test_client_close_before_get_answers_next_get_with_noop() -> None:
    """If the client's close arrives before its GET, that GET still gets a noop, then 400."""
    h = Harness()
    sid = h.handshake()
    h.post(sid, b"1")
    assert sid not in h.server.sessions
    assert h.get(sid).body() == b"6"
    assert error_of(h.get(sid)) == (400, 1)


def test_oversized_post_is_413_and_session_survives() -> None:
    """A body over max_payload gets 413; like the reference server the session stays open."""
    h = Harness(max_payload=10)
    sid = h.handshake()
    post = h.post(sid, b"4" + b"x" * 20)
    assert post.responseCode == 413
    assert h.log == []
    assert sid in h.server.sessions
    assert h.post(sid, b"4small").body() == b"ok"


def test_oversized_declared_length_is_413() -> None:
    """A Content-Length over max_payload is refused with 413 before reading the body."""
    h = Harness(max_payload=10)
    sid = h.handshake()
    post = h.post(sid, b"4x", **{"content-length": "100000"})
    assert post.responseCode == 413


def test_client_gone_mid_get_closes_session() -> None:
    """A poll whose connection is lost closes the session with 'transport error', once."""
    h = Harness()
    sid = h.handshake()
    pending = h.get(sid)
    pending.lose()
    assert h.log == [("closed", "transport error")]
    assert sid not in h.server.sessions


def test_server_close_delivers_queued_then_close_packet() -> None:
    """A server close with no GET waiting keeps queued messages and the close for the next GET."""
    h = Harness()
    sid = h.handshake()
    session = h.server.sessions[sid]
    session.send("bye")
    session.close()
    assert sid not in h.server.sessions
    assert h.get(sid).body() == b"4bye\x1e1"
    assert error_of(h.get(sid)) == (400, 1)


def test_close_all_answers_waiting_polls() -> None:
    """close_all closes every session and answers waiting GETs with the close packet."""
    h = Harness()
    sids = [h.handshake() for _ in range(3)]
    pending = [h.get(sid) for sid in sids]
    h.server.close_all()
    assert [p.body() for p in pending] == [b"1", b"1", b"1"]
    assert not h.server.sessions
    assert h.log.count(("closed", "server shutting down")) == 3


def test_every_origin_is_served_by_default() -> None:
    """Without an origin policy every origin is served with no CORS headers, as by the reference server."""
    h = Harness()
    request = Request(
        query={"EIO": "4", "transport": "polling"},
        headers={"origin": "https://other.example", "host": "localhost:3000"},
    )
    h.render(request)
    assert request.body().startswith(b"0")
    assert request.header("access-control-allow-origin") is None


def test_refused_origin_is_403() -> None:
    """A request from an origin the policy refuses gets 403 with code 4 and no session."""
    h = Harness(origins=OriginPolicy())
    request = Request(
        query={"EIO": "4", "transport": "polling"},
        headers={"origin": "https://evil.example", "host": "localhost:3000"},
    )
    h.render(request)
    assert error_of(request) == (403, 4)
    assert request.header("access-control-allow-origin") is None
    assert not h.server.sessions


def test_allowed_origin_gets_cors_headers() -> None:
    """An allowed cross-origin poll carries the CORS headers from the origin policy."""
    h = Harness(origins=OriginPolicy(("https://app.example",)))
    request = Request(
        query={"EIO": "4", "transport": "polling"},
        headers={"origin": "https://app.example", "host": "localhost:3000"},
    )
    h.render(request)
    assert request.body().startswith(b"0")
    assert request.header("access-control-allow-origin") == "https://app.example"
    assert request.header("access-control-allow-credentials") == "true"


def test_preflight_is_answered() -> None:
    """An OPTIONS preflight under ``*`` gets 204, the origin echoed with credentials, methods and headers."""
    h = Harness(origins=OriginPolicy(("*",)))
    request = Request(
        b"OPTIONS",
        {"EIO": "4", "transport": "polling"},
        headers={"origin": "https://x.example", "host": "localhost"},
    )
    h.render(request)
    assert request.responseCode == 204
    assert request.header("access-control-allow-origin") == "https://x.example"
    assert request.header("access-control-allow-credentials") == "true"
    assert "POST" in (request.header("access-control-allow-methods") or "")
    assert request.header("access-control-allow-headers") == "authorization, content-type"


def test_handshake_info_is_recorded() -> None:
    """The session's HandshakeInfo holds the query, the headers it needs (lower case), peer and transport."""
    h = Harness()
    request = Request(
        query={"EIO": "4", "transport": "polling", "token": "abc"},
        headers={"Authorization": "Bearer t", "X-Thing": "1", "Cookie": "c" * 4000},
    )
    h.render(request)
    (session,) = h.server.sessions.values()
    info = session.handshake
    assert info.query["token"] == "abc"
    assert dict(info.headers) == {"authorization": "Bearer t"}
    assert info.transport == "polling" and info.protocol == 4 and not info.secure
    assert info.remote_address == "10.0.0.7"


def test_post_after_upgrade_is_refused_by_checks() -> None:
    """Once a session runs over WebSocket, polling requests for it are refused as bad requests."""

    class FakeSession:
        protocol = 4
        transport_name = "websocket"
        closed = False
        upgrading = False
        upgraded = True

    facts = RequestFacts("POST", {"EIO": "4", "transport": "polling", "sid": "s"}, False)
    verdict = check_request(facts, EngineIOOptions(), lambda sid: FakeSession())  # type: ignore[arg-type,return-value]
    assert verdict is ErrorCode.BAD_REQUEST


def test_handler_factory_failure_closes_session_cleanly() -> None:
    """If the handler factory raises, the session is closed and the server keeps serving."""
    clock = Clock()
    calls: list[int] = []

    def factory(session: EngineIOSession) -> Echo:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("boom")
        return Echo(session, [])

    server = EngineIOServer(clock, EngineIOOptions(), factory)
    resource = server.resource()
    first = Request(query={"EIO": "4", "transport": "polling"})
    resource.render(first)
    assert first.body().startswith(b"0")
    assert not server.sessions
    second = Request(query={"EIO": "4", "transport": "polling"})
    resource.render(second)
    assert len(server.sessions) == 1

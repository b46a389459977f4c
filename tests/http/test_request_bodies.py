"""Request bodies over the site's limit are refused while they arrive, before any resource sees them."""

from __future__ import annotations

import socket

import pytest
from twisted.internet.testing import StringTransport
from twisted.web.resource import Resource
from twisted.web.server import Request

from kernel_relay.http.site import RelaySite
from tests.conftest import Relay


class Recorder(Resource):
    """A leaf that answers every request and remembers the bodies it got."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.bodies: list[bytes] = []

    def render(self, request: Request) -> bytes:
        assert request.content is not None
        self.bodies.append(request.content.read())
        return b"ok"


def serve(data: bytes, max_body: int = 100) -> tuple[StringTransport, Recorder]:
    recorder = Recorder()
    site = RelaySite(recorder)
    site.max_body = max_body
    protocol = site.buildProtocol(None)
    transport = StringTransport()
    protocol.makeConnection(transport)
    protocol.dataReceived(data)
    return transport, recorder


def chunked(*chunks: bytes) -> bytes:
    body = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for chunk in chunks)
    return body + b"0\r\n\r\n"


HEAD = b"POST /x HTTP/1.1\r\nHost: relay\r\n"


def test_bodies_within_the_limit_reach_the_resource() -> None:
    """A declared-length body and a chunked body at the limit are both served whole."""
    transport, recorder = serve(HEAD + b"Content-Length: 100\r\n\r\n" + b"a" * 100)
    assert transport.value().startswith(b"HTTP/1.1 200")
    transport, recorder2 = serve(
        HEAD + b"Transfer-Encoding: chunked\r\n\r\n" + chunked(b"b" * 60, b"c" * 40)
    )
    assert transport.value().startswith(b"HTTP/1.1 200")
    assert recorder.bodies == [b"a" * 100] and recorder2.bodies == [b"b" * 60 + b"c" * 40]


def test_declared_length_over_the_limit_is_refused_before_the_body() -> None:
    """Content-Length over the limit gets 413 with a JSON error at once, and the connection closes."""
    transport, recorder = serve(HEAD + b"Content-Length: 10000000000\r\n\r\n")
    answer = transport.value()
    assert answer.startswith(b"HTTP/1.1 413 Payload Too Large\r\n")
    assert b'{"error": "Request body too large: the limit is 100 bytes"}' in answer
    assert transport.disconnecting and recorder.bodies == []


def test_chunked_body_over_the_limit_is_refused_as_it_grows() -> None:
    """A chunked body is cut off with 413 once it passes the limit; the resource never runs."""
    transport, recorder = serve(
        HEAD + b"Transfer-Encoding: chunked\r\n\r\n" + chunked(b"x" * 80, b"y" * 80, b"z" * 80)
    )
    assert transport.value().count(b"HTTP/1.1") == 1
    assert transport.value().startswith(b"HTTP/1.1 413")
    assert transport.disconnecting and recorder.bodies == []


def test_live_relay_refuses_a_chunked_poll_past_its_limit(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """The running relay answers a chunked polling POST that grows past its limit with 413 and closes it."""
    limit = 2_000_000
    relay = Relay(tmp_path_factory.mktemp("runtime"), "--max-payload", str(limit))
    try:
        refuse_chunked_body(relay, limit)
        kernel_id = relay.spawn()  # and it still serves
        assert relay.shutdown(kernel_id).status_code == 200
    finally:
        relay.stop()


def refuse_chunked_body(relay: Relay, limit: int) -> None:
    """Send a chunked body one byte past ``limit`` over a raw socket and check the relay's answer."""
    with socket.create_connection(("127.0.0.1", relay.port), timeout=60) as connection:
        connection.sendall(
            b"POST /socket.io/?EIO=4&transport=polling&sid=nope HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n%x\r\n" % (4 * limit)
        )
        # One byte past the limit, then silence: the relay has read everything sent when it refuses, so
        # it closes cleanly instead of resetting the connection over unread data.
        connection.sendall(b"4" * (limit + 1))
        answer = b""
        while data := connection.recv(65536):
            answer += data
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert f"the limit is {limit} bytes".encode() in answer

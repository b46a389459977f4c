"""Live tests: the echo server as a child process, driven by requests and websocket-client."""

from __future__ import annotations

import json
import socket
import struct
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import websocket
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support import ServerProcess, free_port, running

ECHO = Path(__file__).resolve().parents[1] / "servers" / "engineio_echo.py"
TIMEOUT = 5.0


def echo_argv(port: int, *extra: str) -> list[str]:
    return [sys.executable, str(ECHO), "--port", str(port), *extra]


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    """An echo server with slow heartbeats (so they never interfere) and a 1 s upgrade timeout."""
    port = free_port()
    argv = echo_argv(port, "--upgrade-timeout", "1000", "--max-payload", "10000")
    with running(argv, port) as process:
        yield process


@pytest.fixture(scope="module")
def fast() -> Iterator[ServerProcess]:
    """An echo server with the official suite's fast heartbeat (300 ms / 200 ms)."""
    port = free_port()
    with running(echo_argv(port, "--ping-interval", "300", "--ping-timeout", "200"), port) as p:
        yield p


def url(server: ServerProcess, **query: str) -> str:
    params = {"EIO": "4", **query}
    return f"{server.url}/engine.io/?" + "&".join(f"{k}={v}" for k, v in params.items())


def ws_url(server: ServerProcess, **query: str) -> str:
    return url(server, transport="websocket", **query).replace("http://", "ws://")


def handshake(server: ServerProcess) -> str:
    response = requests.get(url(server, transport="polling"), timeout=TIMEOUT)
    assert response.status_code == 200 and response.text.startswith("0")
    sid: str = json.loads(response.text[1:])["sid"]
    return sid


def poll(server: ServerProcess, sid: str) -> requests.Response:
    return requests.get(url(server, transport="polling", sid=sid), timeout=TIMEOUT)


def push(server: ServerProcess, sid: str, body: bytes | str) -> requests.Response:
    data = body.encode() if isinstance(body, str) else body
    return requests.post(url(server, transport="polling", sid=sid), data=data, timeout=TIMEOUT)


def ws_open(server: ServerProcess, **query: str) -> websocket.WebSocket:
    return websocket.create_connection(ws_url(server, **query), timeout=TIMEOUT)


def ws_close_code(ws: websocket.WebSocket) -> int | None:
    """Read until the server's close frame; its status code (None if the socket just ended)."""
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        try:
            opcode, frame = ws.recv_data_frame(True)
        except (websocket.WebSocketConnectionClosedException, OSError):
            return None
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            data = frame.data
            return int(struct.unpack("!H", data[:2])[0]) if len(data) >= 2 else None
    raise AssertionError("server did not close the WebSocket")


def open_session_count(server: ServerProcess) -> int:
    """Ask the echo server how many sessions are open (through a fresh WebSocket session)."""
    ws = ws_open(server)
    try:
        ws.recv()
        ws.send("4sessions?")
        return int(ws.recv()[1:]) - 1
    finally:
        ws.close()


def test_polling_handshake_and_echo(server: ServerProcess) -> None:
    """Polling opens a session with the advertised settings and echoes text and binary."""
    response = requests.get(url(server, transport="polling"), timeout=TIMEOUT)
    info = json.loads(response.text[1:])
    assert info["upgrades"] == ["websocket"]
    assert (info["pingInterval"], info["pingTimeout"], info["maxPayload"]) == (25000, 20000, 10000)
    assert response.headers["content-type"] == "text/plain; charset=UTF-8"
    sid = info["sid"]
    posted = push(server, sid, "4hello\x1ebAQIDBA==")
    assert (posted.status_code, posted.text) == (200, "ok")
    assert poll(server, sid).text == "4hello\x1ebAQIDBA=="


def test_polling_errors(server: ServerProcess) -> None:
    """Bad handshakes and unknown sessions get 400 with the reference error codes."""
    cases = [
        (url(server), 0),
        (url(server, transport="polling").replace("EIO=4", "EIO=abc"), 5),
        (url(server, transport="polling", sid="unknown"), 1),
    ]
    for address, code in cases:
        response = requests.get(address, timeout=TIMEOUT)
        assert response.status_code == 400
        assert response.json()["code"] == code
    assert requests.post(url(server, transport="polling"), timeout=TIMEOUT).json()["code"] == 2


def test_websocket_session_and_echo(server: ServerProcess) -> None:
    """A WebSocket session starts with an open packet offering no upgrades and echoes frames."""
    ws = ws_open(server)
    try:
        opening = ws.recv()
        assert opening.startswith("0") and json.loads(opening[1:])["upgrades"] == []
        ws.send("4héllo")
        assert ws.recv() == "4héllo"
        ws.send_binary(b"\x01\x02\x03")
        assert ws.recv() == b"\x01\x02\x03"
    finally:
        ws.close()


@pytest.mark.parametrize(
    "query", [{"transport": "websocket", "EIO": "2"}, {"transport": "nope"}, {"sid": "unknown"}]
)
def test_websocket_bad_handshakes_are_refused(server: ServerProcess, query: dict[str, str]) -> None:
    """WebSocket handshakes with a bad EIO, transport or sid get an HTTP 400, never a 101."""
    address = url(server, **{"transport": "websocket", **query}).replace("http://", "ws://")
    address = address.replace("EIO=4&EIO", "EIO")
    with pytest.raises(websocket.WebSocketBadStatusException) as info:
        websocket.create_connection(address, timeout=TIMEOUT)
    assert info.value.status_code == 400


def test_websocket_invalid_packet_and_client_close(server: ServerProcess) -> None:
    """An invalid packet or a client close packet makes the server close the WebSocket."""
    for payload in ("abc", "1"):
        ws = ws_open(server)
        ws.recv()
        ws.send(payload)
        assert ws_close_code(ws) in (1000, None)
        ws.close()


def test_websocket_oversized_frame_closes_with_1009(server: ServerProcess) -> None:
    """A frame larger than max_payload closes the connection with status 1009."""
    ws = ws_open(server)
    ws.recv()
    ws.send("4" + "x" * 20000)
    assert ws_close_code(ws) == 1009
    ws.close()


def test_polling_oversized_body_is_413(server: ServerProcess) -> None:
    """A POST body larger than max_payload gets 413 and the session stays usable."""
    sid = handshake(server)
    assert push(server, sid, "4" + "x" * 20000).status_code == 413
    assert push(server, sid, "4ok").status_code == 200
    assert poll(server, sid).text == "4ok"


def test_overlapping_polls_close_session(server: ServerProcess) -> None:
    """Two concurrent GETs: the first gets the close packet, the second 400; the sid is gone."""
    sid = handshake(server)
    results: list[requests.Response] = []
    first = threading.Thread(target=lambda: results.append(poll(server, sid)))
    first.start()
    time.sleep(0.2)
    second = poll(server, sid)
    first.join(TIMEOUT)
    assert second.status_code == 400
    assert results[0].status_code == 200 and results[0].text == "1"
    assert poll(server, sid).status_code == 400


def test_client_close_with_pending_poll(server: ServerProcess) -> None:
    """A POSTed close packet answers the pending GET with a noop and ends the session."""
    sid = handshake(server)
    results: list[requests.Response] = []
    waiting = threading.Thread(target=lambda: results.append(poll(server, sid)))
    waiting.start()
    time.sleep(0.2)
    assert push(server, sid, "1").status_code == 200
    waiting.join(TIMEOUT)
    assert results[0].text == "6"
    assert poll(server, sid).status_code == 400


def test_server_close_over_polling_and_websocket(server: ServerProcess) -> None:
    """A server-side close reaches a polling client as a close packet and closes a WebSocket."""
    sid = handshake(server)
    push(server, sid, "4close-me")
    assert poll(server, sid).text == "1"
    assert poll(server, sid).status_code == 400
    ws = ws_open(server)
    ws.recv()
    ws.send("4close-me")
    assert ws_close_code(ws) == 1000
    ws.close()


def test_client_gone_mid_poll_is_cleaned_up(server: ServerProcess) -> None:
    """A client that drops its connection during a GET loses its session; the server lives on."""
    before = open_session_count(server)
    sid = handshake(server)
    raw = socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT)
    path = url(server, transport="polling", sid=sid).removeprefix(server.url)
    raw.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    time.sleep(0.2)
    raw.close()
    deadline = time.monotonic() + TIMEOUT
    while open_session_count(server) != before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert open_session_count(server) == before
    assert poll(server, sid).status_code == 400


def test_upgrade_keeps_order_and_locks_out_polling(server: ServerProcess) -> None:
    """Messages sent during an upgrade arrive over the WebSocket in order after the upgrade."""
    sid = handshake(server)
    ws = ws_open(server, sid=sid)
    try:
        ws.send("2probe")
        assert ws.recv() == "3probe"
        assert poll(server, sid).text == "6"
        assert push(server, sid, "4one\x1e4two").status_code == 200
        ws.send("5")
        assert [ws.recv(), ws.recv()] == ["4one", "4two"]
        ws.send("4three")
        assert ws.recv() == "4three"
        assert poll(server, sid).status_code == 400
        assert push(server, sid, "4late").status_code == 400
        again = ws_open(server, sid=sid)
        assert ws_close_code(again) in (1000, None)
        again.close()
        ws.send("4still here")
        assert ws.recv() == "4still here"
    finally:
        ws.close()


def test_upgrade_timeout_falls_back_to_polling(server: ServerProcess) -> None:
    """An upgrade never completed is dropped after upgrade_timeout and polling keeps working."""
    sid = handshake(server)
    ws = ws_open(server, sid=sid)
    ws.send("2probe")
    assert ws.recv() == "3probe"
    assert ws_close_code(ws) in (1000, None)
    ws.close()
    assert push(server, sid, "4after").status_code == 200
    assert poll(server, sid).text == "4after"


def test_heartbeat_over_websocket(fast: ServerProcess) -> None:
    """The server pings every 300 ms; answered pings keep the session, a missed one closes it."""
    ws = ws_open(fast)
    ws.recv()
    for _ in range(3):
        assert ws.recv() == "2"
        ws.send("3")
    assert ws.recv() == "2"
    assert ws_close_code(ws) in (1000, None)
    ws.close()


def test_heartbeat_over_polling(fast: ServerProcess) -> None:
    """Polling clients receive pings, and a session that stops answering is gone."""
    sid = handshake(fast)
    for _ in range(2):
        assert poll(fast, sid).text == "2"
        assert push(fast, sid, "3").status_code == 200
    time.sleep(0.6)
    assert poll(fast, sid).status_code == 400


class Canary:
    """A long-lived session that must keep echoing while other sessions are fed garbage."""

    def __init__(self, server: ServerProcess) -> None:
        self.ws = ws_open(server)
        self.ws.recv()

    def check(self, text: str) -> None:
        self.ws.send("4" + text)
        assert self.ws.recv() == "4" + text


garbage = st.one_of(
    st.binary(max_size=300),
    st.text(max_size=300).map(lambda t: t.encode("utf-8")),
    st.lists(st.sampled_from(["4hi", "b", "bAQ==", "3", "2", "5", "6", "0", "9", "", "1x"])).map(
        lambda parts: "\x1e".join(parts).encode()
    ),
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(body=garbage)
def test_garbage_posts_are_refused_cleanly(server: ServerProcess, body: bytes) -> None:
    """Random POST bodies get 200 or 400 (never 5xx) and another session keeps working."""
    canary = Canary(server)
    try:
        sid = handshake(server)
        response = push(server, sid, body)
        assert response.status_code in (200, 400)
        canary.check("alive")
    finally:
        canary.ws.close()


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(frame=st.one_of(st.binary(max_size=300), st.text(max_size=300)))
def test_garbage_frames_are_refused_cleanly(server: ServerProcess, frame: bytes | str) -> None:
    """Random WebSocket frames are echoed or make the server close that socket; others live on."""
    canary = Canary(server)
    ws = ws_open(server)
    try:
        ws.recv()
        if isinstance(frame, bytes):
            ws.send_binary(frame)
        else:
            ws.send(frame)
        canary.check("alive")
    finally:
        ws.close()
        canary.ws.close()
    assert requests.get(url(server, transport="polling"), timeout=TIMEOUT).status_code == 200

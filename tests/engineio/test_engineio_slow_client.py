"""The slow-client limit on a live server: a WebSocket client that stops reading is dropped with
"slow client" while another session (protocol 3 polling) carries on."""

from __future__ import annotations

import json
import socket
import sys
import time
from collections.abc import Iterator

import pytest
import requests
import websocket

from tests.support import ROOT, ServerProcess, free_port, running

pytestmark = pytest.mark.timeout(120)

LIMIT = 2_000_000


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    port = free_port()
    argv = [
        sys.executable,
        str(ROOT / "tests" / "servers" / "engineio_echo.py"),
        "--port",
        str(port),
        "--max-buffered-bytes",
        str(LIMIT),
    ]
    with running(argv, port) as process:
        yield process


def v3_session(server: ServerProcess) -> str:
    response = requests.get(f"{server.url}/engine.io/?EIO=3&transport=polling&b64=1", timeout=30)
    length, _, rest = response.text.partition(":")
    sid: str = json.loads(rest[1 : int(length)])["sid"]
    return sid


@pytest.mark.parametrize("eio", ["3", "4"])
def test_client_that_stops_reading_is_dropped(server: ServerProcess, eio: str) -> None:
    """Echoes piling up unread beyond max_buffered_bytes close that session; another one lives on."""
    other = v3_session(server)
    drops_before = server.output().count("slow client")
    address = f"ws://127.0.0.1:{server.port}/engine.io/?EIO={eio}&transport=websocket"
    slow = websocket.create_connection(
        address, timeout=30, sockopt=[(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 * 1024)]
    )
    slow.recv()  # the open packet; after this the client reads nothing
    message = "4" + "x" * 500_000
    dropped = False
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not dropped:
        try:
            slow.send(message)
        except (OSError, websocket.WebSocketException):
            dropped = True
            break
        dropped = server.output().count("slow client") > drops_before
    while not dropped and time.monotonic() < deadline:
        dropped = server.output().count("slow client") > drops_before
        time.sleep(0.1)
    slow.close(timeout=1)
    assert server.output().count("slow client") > drops_before, "the drop is logged with its reason"
    # The other session still works: ping and message round trip over protocol 3 polling.
    base = f"{server.url}/engine.io/?EIO=3&transport=polling&b64=1&sid={other}"
    assert requests.post(base, data="1:26:4hello", timeout=30).text == "ok"
    assert requests.get(base, timeout=30).text == "1:36:4hello"

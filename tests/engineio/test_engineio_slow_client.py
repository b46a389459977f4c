"""A live server and a WebSocket client that stops reading: the server stops reading it in turn, while
another session (protocol 3 polling) carries on."""

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
def test_client_that_stops_reading_stops_being_read(server: ServerProcess, eio: str) -> None:
    """
    A client that sends and never reads its echoes is no longer read once they wait unsent: what it
    gets the server to hold stays far below max_buffered_bytes; another session lives on.

    (Output the client does not cause, such as a kernel's, still ends in a "slow client" drop:
    tests/e2e/test_limits_relay.py.)
    """
    other = v3_session(server)
    address = f"ws://127.0.0.1:{server.port}/engine.io/?EIO={eio}&transport=websocket"
    slow = websocket.create_connection(
        address, timeout=30, sockopt=[(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 * 1024)]
    )
    slow.recv()  # the open packet; after this the client reads nothing
    message = ("4" + "x" * 500_000).encode()
    frame = websocket.ABNF.create_frame(message, websocket.ABNF.OPCODE_TEXT).format()
    slow.sock.setblocking(False)
    sent = 0
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            sent += slow.sock.send(frame[sent % len(frame) :])
        except BlockingIOError:
            time.sleep(0.01)
        except OSError:
            break  # dropped
    slow.sock.close()
    # The socket buffers on both ends take a few MB; the server reads no further than its bound.
    assert sent < 12 * LIMIT, f"the server read {sent} bytes from a client that reads nothing"
    assert "slow client" not in server.output()
    # The other session still works: ping and message round trip over protocol 3 polling.
    base = f"{server.url}/engine.io/?EIO=3&transport=polling&b64=1&sid={other}"
    assert requests.post(base, data="1:26:4hello", timeout=30).text == "ok"
    assert requests.get(base, timeout=30).text == "1:36:4hello"

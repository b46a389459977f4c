"""
Clients that send and never read, tried against a real relay on loopback: a WebSocket ping flood without a
token (Engine.IO) or with a read-only token (the Jupyter kernel WebSocket), and pipelined HTTP requests
without a token. The relay stops reading such a client once what it owes it passes a small bound, gives
the memory back when the connection closes, and an authenticated client on the same relay keeps working.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import time
from collections.abc import Callable

import pytest
import requests

from tests.conftest import Relay, kernel_fixture, relay_fixture
from tests.e2e.test_hardening_relay import TOKEN, works
from tests.relay_memory import peak_rss, read_only_token, rss, settled_rss

#: The relay's memory measured: under `pytest -n` not beside another such file (tests/conftest.py).
pytestmark = [pytest.mark.timeout(300), pytest.mark.usefixtures("one_at_a_time")]

MiB = 1024 * 1024
#: Seconds each flood lasts (the unbounded relay grew by hundreds of MB in this time).
FLOOD_SECONDS = 8.0
#: What a flood may add to the relay's RSS: the bounds (a few hundred KB) and the allocator's slack.
MARGIN = 12 * MiB

flooded = relay_fixture("--connect-timeout", "120", token=TOKEN, scope="function")
flooded_kernel = kernel_fixture("flooded", scope="function")


def masked_frame(opcode: int, payload: bytes) -> bytes:
    """A client frame (final, masked with a zero key, so the payload reads as it is) of fewer than 126 bytes."""
    return bytes((0x80 | opcode, 0x80 | len(payload))) + b"\x00\x00\x00\x00" + payload


PING_FRAME = masked_frame(0x9, b"p" * 125)


def non_reading_socket(port: int) -> socket.socket:
    """A loopback connection with a tiny receive buffer, which the test reads only for a handshake."""
    connection = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    connection.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    connection.settimeout(10)
    connection.connect(("127.0.0.1", port))
    return connection


def upgraded(port: int, target: str) -> socket.socket:
    """A WebSocket opened on ``target`` (path and query) whose frames the test never reads."""
    connection = non_reading_socket(port)
    key = base64.b64encode(os.urandom(16)).decode()
    connection.sendall(
        f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    answer = b""
    while b"\r\n\r\n" not in answer:
        chunk = connection.recv(1)
        assert chunk, f"the relay closed the WebSocket to {target} during the handshake"
        answer += chunk
    assert answer.startswith(b"HTTP/1.1 101"), answer
    return connection


def flood(connection: socket.socket, burst: bytes, seconds: float) -> int:
    """Send ``burst`` over and over for ``seconds`` without reading (as far as the relay takes it); bytes sent."""
    connection.setblocking(False)
    sent = 0
    pending = memoryview(burst)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            sent_now = connection.send(pending)
        except BlockingIOError:
            time.sleep(0.005)
            continue
        except OSError:
            break  # closed by the relay
        sent += sent_now
        pending = pending[sent_now:] if sent_now < len(pending) else memoryview(burst)
    return sent


def flooded_then_closed(
    relay: Relay, kernel: str, connect: Callable[[], socket.socket], what: str
) -> None:
    """Flood through ``connect()``'s connection; RSS stays within MARGIN, then comes back once it closes."""
    works(relay, kernel)  # the relay's own first-use allocations are not the flood's
    before = rss(relay)
    with peak_rss(relay) as peak:
        connection = connect()
        sent = flood(connection, PING_FRAME * 64, FLOOD_SECONDS)
        works(relay, kernel)
        grown = peak() - before
    connection.close()
    after = settled_rss(relay, before + 4 * MiB)
    print(
        f"{what}: {sent / MiB:.1f} MiB of pings taken, relay RSS peak {grown / MiB:+.1f} MiB, "
        f"{(after - before) / MiB:+.1f} MiB after the close"
    )
    assert grown < MARGIN, f"{what}: relay RSS grew by {grown / MiB:.0f} MiB"
    assert after - before < 4 * MiB, (
        f"{what}: {(after - before) / MiB:.0f} MiB kept after the close"
    )


def test_tokenless_engineio_ping_flood_is_bounded(flooded: Relay, flooded_kernel: str) -> None:
    """A tokenless Engine.IO WebSocket sending control pings and never reading costs the relay a bounded few MB."""
    flooded_then_closed(
        flooded,
        flooded_kernel,
        lambda: upgraded(flooded.port, "/socket.io/?EIO=4&transport=websocket"),
        "Engine.IO ping flood",
    )


def test_eio3_ping_packet_flood_is_bounded(flooded: Relay, flooded_kernel: str) -> None:
    """A tokenless EIO 3 WebSocket sending ping packets (each answered by a pong) and never reading is bounded."""
    packet = masked_frame(0x1, b"2" + b"p" * 120)
    works(flooded, flooded_kernel)
    before = rss(flooded)
    with peak_rss(flooded) as peak:
        connection = upgraded(flooded.port, "/socket.io/?EIO=3&transport=websocket")
        sent = flood(connection, packet * 64, FLOOD_SECONDS)
        works(flooded, flooded_kernel)
        grown = peak() - before
    connection.close()
    print(f"EIO 3 ping packets: {sent / MiB:.1f} MiB taken, relay RSS peak {grown / MiB:+.1f} MiB")
    assert grown < MARGIN, f"relay RSS grew by {grown / MiB:.0f} MiB"


def test_read_only_jupyter_ping_flood_is_bounded(flooded: Relay, flooded_kernel: str) -> None:
    """A read-only holder's Jupyter kernel WebSocket sending control pings and never reading is bounded."""
    token = read_only_token(flooded, flooded_kernel)
    flooded_then_closed(
        flooded,
        flooded_kernel,
        lambda: upgraded(flooded.port, f"/api/kernels/{flooded_kernel}/channels?token={token}"),
        "Jupyter ping flood",
    )


def test_tokenless_pipelined_requests_are_bounded(flooded: Relay, flooded_kernel: str) -> None:
    """Pipelined GET /api/health from a tokenless client that never reads: the relay stops reading it."""
    works(flooded, flooded_kernel)
    before = rss(flooded)
    request = f"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1:{flooded.port}\r\n\r\n".encode()
    with peak_rss(flooded) as peak:
        connection = non_reading_socket(flooded.port)
        sent = flood(connection, request * 256, FLOOD_SECONDS)
        began = time.monotonic()
        works(flooded, flooded_kernel)
        took = time.monotonic() - began
        grown = peak() - before
    connection.close()
    after = settled_rss(flooded, before + 4 * MiB)
    print(
        f"pipelining: {sent / MiB:.1f} MiB of requests taken, relay RSS peak {grown / MiB:+.1f} MiB, "
        f"{(after - before) / MiB:+.1f} MiB after the close; an execute took {took:.2f}s meanwhile"
    )
    assert grown < MARGIN, f"relay RSS grew by {grown / MiB:.0f} MiB"
    assert after - before < 4 * MiB


def test_eio3_polling_pings_without_polls_are_bounded(flooded: Relay, flooded_kernel: str) -> None:
    """An EIO 3 polling session POSTing pings (each owed a pong) and never GETting costs the relay a few MB."""
    works(flooded, flooded_kernel)
    base = f"{flooded.url}/socket.io/?EIO=3&transport=polling"
    opened = requests.get(base, timeout=10)
    length, _, rest = opened.text.partition(":")
    sid = json.loads(rest[1 : int(length)])["sid"]
    ping = "2" + "p" * 10_000
    body = f"{len(ping)}:{ping}" * 50  # 500 KB of pings, each to be answered with its data
    before = rss(flooded)
    posted = 0
    with peak_rss(flooded) as peak, requests.Session() as poster:
        deadline = time.monotonic() + FLOOD_SECONDS
        while time.monotonic() < deadline:
            answer = poster.post(f"{base}&sid={sid}", data=body, timeout=10)
            if answer.status_code != 200:
                break
            posted += len(body)
        works(flooded, flooded_kernel)
        grown = peak() - before
    print(
        f"EIO 3 polling pings: {posted / MiB:.0f} MiB posted, relay RSS peak {grown / MiB:+.1f} MiB"
    )
    assert grown < MARGIN, f"relay RSS grew by {grown / MiB:.0f} MiB"

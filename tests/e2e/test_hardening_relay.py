"""
The four ways a client without a token (or with a read-only one) could exhaust a relay, tried against a real
relay on loopback: each now fails, and an authenticated client on the same relay keeps working.
"""

from __future__ import annotations

import json
import socket
import threading
import time

import psutil
import pytest
import requests
import websocket

from tests.conftest import Relay, kernel_fixture, relay_fixture
from tests.kernel_client import RelayKernelClient
from tests.support import idle_websocket

#: The relay's memory measured: under `pytest -n` not beside another such file (tests/conftest.py).
pytestmark = [pytest.mark.timeout(300), pytest.mark.usefixtures("one_at_a_time")]

TOKEN = "hardening-" + "t" * 30
MiB = 1024 * 1024


def rss(relay: Relay) -> int:
    return int(psutil.Process(relay.process.pid).memory_info().rss)


def works(relay: Relay, kernel_id: str) -> None:
    """An authenticated client runs a cell on ``kernel_id`` and gets its result."""
    client = RelayKernelClient(relay.url, kernel_id, ("shell", "iopub"), auth={"token": TOKEN})
    try:
        _, reply = client.execute("6 * 7")
        assert reply["content"]["status"] == "ok"
    finally:
        client.close()


def ws_url(relay: Relay, eio: int = 4) -> str:
    return f"ws://127.0.0.1:{relay.port}/socket.io/?EIO={eio}&transport=websocket"


def non_reading(relay: Relay) -> websocket.WebSocket:
    """A WebSocket to the relay whose receive buffer is tiny and which the test never reads."""
    return websocket.create_connection(
        ws_url(relay), timeout=10, sockopt=((socket.SOL_SOCKET, socket.SO_RCVBUF, 4096),)
    )


def closed_within(connection: websocket.WebSocket, seconds: float) -> float | None:
    """Seconds until the server closed ``connection`` (reading and dropping what it sends), None if it did not."""
    began = time.monotonic()
    connection.settimeout(0.5)
    while time.monotonic() - began < seconds:
        try:
            frame = connection.recv()
        except websocket.WebSocketTimeoutException:
            continue
        except (websocket.WebSocketConnectionClosedException, ConnectionError, OSError):
            return time.monotonic() - began
        if frame in ("", b"") and not connection.connected:
            return time.monotonic() - began
        if isinstance(frame, str) and frame == "2":  # an EIO 4 ping: a live client answers it
            connection.send("3")
    return None


guarded = relay_fixture(
    "--max-payload",
    str(MiB),
    "--connect-timeout",
    "2",
    token=TOKEN,
)


guarded_kernel = kernel_fixture("guarded")


def test_attachment_bomb_is_cut_off(guarded: Relay, guarded_kernel: str) -> None:
    """A tokenless client announcing 999 attachments is closed once they pass --max-payload; RSS barely moves."""
    before = rss(guarded)
    bomb = websocket.create_connection(ws_url(guarded), timeout=10)
    assert bomb.recv().startswith("0")
    bomb.send('45999-["x"]')
    sent = 0
    try:
        for _ in range(40):  # 40 MiB offered; the relay must stop reading long before
            bomb.send_binary(b"\x00" * MiB)
            sent += 1
    except (websocket.WebSocketConnectionClosedException, ConnectionError, OSError):
        pass
    assert closed_within(bomb, 10) is not None, "the relay kept the bomb's session open"
    grown = rss(guarded) - before
    print(f"attachment bomb: {sent} MiB sent before the close, relay RSS {grown / MiB:+.1f} MiB")
    assert grown < 3 * MiB, f"relay RSS grew by {grown / MiB:.1f} MiB under one attachment bomb"
    assert "attachments of one packet over" in guarded.output()
    works(guarded, guarded_kernel)


@pytest.mark.parametrize("eio", [3, 4])
def test_main_namespace_does_not_escape_the_connect_timeout(
    guarded: Relay, guarded_kernel: str, eio: int
) -> None:
    """Without a token neither a CONNECT to / nor an EIO 3 session's implicit / outlives --connect-timeout."""
    client = websocket.create_connection(ws_url(guarded, eio), timeout=10)
    assert client.recv().startswith("0")
    client.send("40")
    took = closed_within(client, 10)
    print(f"EIO {eio} session with only /: closed after {took}s")
    assert took is not None and took < 2 + 2, f"session lived {took}s with --connect-timeout 2"
    works(guarded, guarded_kernel)


def test_rejoining_iopub_does_not_multiply_the_replay(guarded: Relay, guarded_kernel: str) -> None:
    """A client that never reads gets the journal replayed once, however often it joins iopub again."""
    writer = RelayKernelClient(
        guarded.url, guarded_kernel, ("shell", "iopub"), auth={"token": TOKEN}
    )
    try:
        _, reply = writer.execute("for _ in range(40): print('y' * 100_000)", timeout=60)
        assert reply["content"]["status"] == "ok"
    finally:
        writer.close()
    logged = len(guarded.output())
    viewer = non_reading(guarded)
    auth = json.dumps({"token": TOKEN, "since": 0})
    namespace = f"/iopub/{guarded_kernel}"
    viewer.send(f"40{namespace},{auth}")
    time.sleep(0.5)
    for _ in range(6):
        viewer.send(f"41{namespace},")
        viewer.send(f"40{namespace},{auth}")
        time.sleep(0.2)
    # Seven joins: the first is replayed the journal (4 MB); the socket buffers of a loopback connection
    # can take a few MB of it, so one more join may still find less than REPLAY_BACKLOG waiting, but no more.
    # The later joins are refused a replay ("No replay for"), or never read: the relay stops reading a
    # client that does not read what it holds for it.
    time.sleep(2)
    output = guarded.output()[logged:]
    replays = output.count("Replayed ") - output.count("Replayed 0 ")
    assert replays <= 2, (output.count("No replay for"), replays)
    viewer.close()


# -- file descriptors ---------------------------------------------------------------------------------------


#: A relay that may open 1,024 files, no more (soft and hard limit).
few_fds = relay_fixture(
    "--connect-timeout",
    "120",
    token=TOKEN,
    wrapper=("prlimit", "--nofile=1024:1024", "--"),
    scope="function",
)


@pytest.mark.parametrize("sources", [1, 8], ids=["one address", "eight addresses"])
def test_spawn_succeeds_past_a_thousand_idle_sockets(few_fds: Relay, sources: int) -> None:
    """With 1,024 fds and ~1,000 tokenless WebSockets offered, from one address or many, /spawn still works."""
    held: list[socket.socket] = []
    try:
        for n in range(1000):
            connection = idle_websocket(few_fds.port, f"127.0.0.{2 + n % sources}", eio=3)
            if connection is not None:
                held.append(connection)
        time.sleep(0.5)
        alive = sum(1 for connection in held if _open(connection))
        print(f"{sources} address(es): {len(held)} of 1000 WebSockets accepted, {alive} still open")
        assert alive <= 768, f"the relay held {alive} sockets with 1,024 file descriptors"
        kernel = few_fds.spawn()
        works(few_fds, kernel)
        assert few_fds.shutdown(kernel).status_code == 200
        metrics = requests.get(f"{few_fds.url}/metrics", headers=few_fds.headers, timeout=10).text
        kind = "connection_refused" if sources == 1 else "connection_evicted"
        assert _counter(metrics, f'kernel_relay_errors_total{{kind="{kind}"}}') > 0
    finally:
        for connection in held:
            connection.close()


def _open(connection: socket.socket) -> bool:
    """Is the server's side of ``connection`` still open? (What it sent meanwhile is read and dropped.)"""
    connection.setblocking(False)
    try:
        while connection.recv(65536):
            pass
        return False  # end of stream
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        connection.setblocking(True)


def _counter(metrics: str, name: str) -> float:
    for line in metrics.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    raise AssertionError(f"{name} not in /metrics")


def test_trickled_request_header_is_timed_out(guarded: Relay) -> None:
    """A request whose header arrives a byte at a time is closed once --header-timeout (10 s) has passed."""
    connection = socket.create_connection(("127.0.0.1", guarded.port), timeout=20)
    began = time.monotonic()
    try:
        for byte in b"GET /api/health HTTP/1.1\r\nHost: x\r\n":
            connection.sendall(bytes([byte]))
            time.sleep(0.5)
            if not _open(connection):
                break
        connection.settimeout(20)
        rest = connection.recv(4096)
        while rest and b"\r\n\r\n" not in rest:
            rest += connection.recv(4096)
    except OSError:
        pass
    took = time.monotonic() - began
    print(f"trickled header: connection closed after {took:.1f}s")
    assert took < 16, f"a trickled header was kept for {took:.0f}s"
    connection.close()


# -- read-only viewers ----------------------------------------------------------------------------------------


bounded = relay_fixture(
    "--max-total-buffered-bytes",
    str(64 * MiB),
    token=TOKEN,
    scope="function",
)


def test_non_reading_viewers_stay_within_the_overall_bound(bounded: Relay) -> None:
    """40 read-only viewers that replay the journal and never read stay within --max-total-buffered-bytes."""
    kernel = bounded.spawn()
    writer = RelayKernelClient(bounded.url, kernel, ("shell", "iopub"), auth={"token": TOKEN})
    try:
        _, reply = writer.execute("for _ in range(80): print('v' * 100_000)", timeout=60)
        assert reply["content"]["status"] == "ok"
    finally:
        writer.close()
    issued = requests.post(
        f"{bounded.url}/api/kernels/{kernel}/tokens",
        json={"access": "read-only"},
        headers=bounded.headers,
        timeout=10,
    )
    assert issued.status_code in (200, 201), issued.text
    viewer_token = issued.json()["token"]
    before = rss(bounded)
    peak = before
    stop = threading.Event()

    def watch() -> None:
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, rss(bounded))
            time.sleep(0.05)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    viewers: list[websocket.WebSocket] = []
    auth = json.dumps({"token": viewer_token, "since": 0})
    namespace = f"/iopub/{kernel}"
    try:
        for _ in range(40):
            viewer = non_reading(bounded)
            viewer.send(f"40{namespace},{auth}")
            for _ in range(6):
                viewer.send(f"41{namespace},")
                viewer.send(f"40{namespace},{auth}")
            viewers.append(viewer)
        time.sleep(2)
        works(bounded, kernel)
    finally:
        stop.set()
        watcher.join()
        for viewer in viewers:
            viewer.close()
    grown = peak - before
    print(
        f"40 viewers x 7 joins: relay RSS peak {grown / MiB:+.0f} MiB over {before / MiB:.0f} MiB"
    )
    assert grown < 64 * MiB + 48 * MiB, f"relay RSS grew by {grown / MiB:.0f} MiB with 40 viewers"
    metrics = requests.get(f"{bounded.url}/metrics", headers=bounded.headers, timeout=10).text
    assert _counter(metrics, 'kernel_relay_errors_total{kind="slow_client"}') > 0
    assert bounded.shutdown(kernel).status_code == 200

"""Faults against a live relay: each ends in a clear error, cleanup, and no leaked fds or processes."""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import Iterator

import psutil
import pytest
import requests

from tests.conftest import Relay
from tests.kernel_client import RelayKernelClient
from tests.support import ROOT

pytestmark = pytest.mark.timeout(240)

FIXTURES = ROOT / "tests" / "provisioner"


@pytest.fixture(scope="module")
def relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Relay]:
    """A relay that sees the never-ready test kernelspec, with short launch and shutdown timeouts."""
    server = Relay(
        tmp_path_factory.mktemp("runtime"),
        "--launch-timeout",
        "4",
        "--shutdown-timeout",
        "2",
        "--heartbeat-interval",
        "0.5",
        "--heartbeat-timeout",
        "3",
        env={"JUPYTER_PATH": str(FIXTURES / "jupyter")},
    )
    try:
        # Warm up what the relay allocates once (thread pool, ZMQ context, a first kernel and client).
        kernel_id = server.spawn()
        RelayKernelClient(server.url, kernel_id).close()
        server.shutdown(kernel_id)
        yield server
    finally:
        server.stop()


#: Each reactor thread-pool thread that runs jupyter_client code lazily gets an asyncio loop of its
#: own (an epoll fd and a socketpair), once for the thread's life: not a leak, so fds are judged per
#: thread the pool grew by.
FDS_PER_POOL_THREAD = 3


def resources(relay: Relay) -> tuple[int, int, set[int]]:
    """The relay's open fds (but client connections), thread count, and live descendants' pids."""
    process = psutil.Process(relay.process.pid)
    children = set()
    for child in process.children(recursive=True):
        try:
            if child.status() != psutil.STATUS_ZOMBIE:
                children.add(child.pid)
        except psutil.NoSuchProcess:
            pass
    # HTTP connections clients keep alive are theirs to close, not the relay's to leak.
    clients = [
        c
        for c in process.net_connections(kind="tcp")
        if c.laddr and c.laddr.port == relay.port and c.status == psutil.CONN_ESTABLISHED
    ]
    return process.num_fds() - len(clients), process.num_threads(), children


def leaked_fds(baseline: tuple[int, int, set[int]], now: tuple[int, int, set[int]]) -> int:
    new_threads = max(0, now[1] - baseline[1])
    return now[0] - baseline[0] - FDS_PER_POOL_THREAD * new_threads


def assert_back_to(relay: Relay, baseline: tuple[int, int, set[int]]) -> None:
    """Wait (generously) until the relay holds no more fds and processes than at ``baseline``."""
    deadline = time.monotonic() + 30
    now = resources(relay)
    while time.monotonic() < deadline:
        now = resources(relay)
        if leaked_fds(baseline, now) <= 0 and now[2] <= baseline[2]:
            return
        time.sleep(0.2)
    assert leaked_fds(baseline, now) <= 0, f"fds leaked: {baseline[:2]} -> {now[:2]}"
    assert now[2] <= baseline[2], f"processes left: {now[2] - baseline[2]}"


def round_trip(relay: Relay) -> None:
    """A fresh kernel and client run code end to end; the kernel is shut down afterwards."""
    kernel_id = relay.spawn()
    client = RelayKernelClient(relay.url, kernel_id, ("shell", "iopub"))
    try:
        _, reply = client.execute("21 * 2")
        assert reply["content"]["status"] == "ok"
    finally:
        client.close()
        assert relay.shutdown(kernel_id).status_code == 200


def kernel_process(relay: Relay, kernel_id: str) -> psutil.Process:
    """The kernel's own process (not the sh and bwrap processes around a sandboxed kernel)."""
    for child in psutil.Process(relay.process.pid).children(recursive=True):
        try:
            cmdline = child.cmdline()
            wrapper = bool(cmdline) and os.path.basename(cmdline[0]) in ("bwrap", "sh")
            if kernel_id in " ".join(cmdline) and not wrapper:
                return child
        except psutil.Error:
            continue
    raise AssertionError(f"no process for kernel {kernel_id}")


def test_clients_vanishing_mid_message(relay: Relay) -> None:
    """Clients that hang up halfway through an HTTP body, a WebSocket frame or a polling session leak nothing."""
    baseline = resources(relay)
    kernel_id = relay.spawn()
    survivor = RelayKernelClient(relay.url, kernel_id, ("shell", "iopub"))
    port = relay.port
    for _ in range(5):
        # A polling POST that promises more body than it sends.
        handshake = requests.get(f"{relay.url}/socket.io/?EIO=4&transport=polling", timeout=30).text
        sid = handshake[handshake.index('"sid":"') + 7 :].split('"', 1)[0]
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            raw.sendall(
                f"POST /socket.io/?EIO=4&transport=polling&sid={sid} HTTP/1.1\r\n"
                f"Host: 127.0.0.1:{port}\r\nContent-Type: text/plain\r\n"
                "Content-Length: 100000\r\n\r\n".encode()
                + b"40/shell/"
                + kernel_id.encode()
                + b',{"x":"'
            )
        # A WebSocket that starts a 64 KiB frame and is gone.
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            raw.sendall(
                f"GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
            )
            raw.recv(4096)
            raw.sendall(b"\x81\xfe\xff\xff\x00\x00\x00\x00" + b"4" * 1000)
        # A socket.io client killed (no close handshake) right after asking for output.
        doomed = RelayKernelClient(
            relay.url, kernel_id, ("shell", "iopub"), transports=["websocket"]
        )
        doomed.send("shell", "execute_request", {"code": "print('x' * 100000)", "silent": False})
        doomed.sio.eio.ws.sock.shutdown(socket.SHUT_RDWR)  # type: ignore[union-attr]
        doomed.sio.eio.disconnect(abort=True)
    _, reply = survivor.execute("'still here'")
    assert reply["content"]["status"] == "ok"
    survivor.close()
    assert relay.shutdown(kernel_id).status_code == 200
    round_trip(relay)
    assert_back_to(relay, baseline)


def test_kernel_killed_mid_execution(relay: Relay) -> None:
    """A kernel SIGKILLed while running code: clients get a dead status and a disconnect; nothing leaks."""
    baseline = resources(relay)
    kernel_id = relay.spawn()
    client = RelayKernelClient(relay.url, kernel_id, ("shell", "iopub"))
    try:
        msg_id = client.send(
            "shell", "execute_request", {"code": "import time; time.sleep(60)", "silent": False}
        )
        client.wait_for(lambda: client.iopub_for(msg_id, "execute_input"), what="execution start")
        kernel_process(relay, kernel_id).send_signal(signal.SIGKILL)
        client.wait_for(lambda: client.disconnected, timeout=60, what="a disconnect")
        states = [m["content"].get("execution_state") for m in client.received["iopub"]]
        assert states[-1] == "dead"
    finally:
        client.close()
    assert kernel_id not in {kernel["id"] for kernel in relay.kernels()}
    assert relay.shutdown(kernel_id).status_code == 500
    metrics = requests.get(f"{relay.url}/metrics", timeout=30).text
    died = next(
        x
        for x in metrics.splitlines()
        if x.startswith('kernel_relay_errors_total{kind="kernel_died"}')
    )
    assert float(died.split()[-1]) >= 1
    round_trip(relay)
    assert_back_to(relay, baseline)


def test_kernel_never_ready_is_a_launch_timeout(relay: Relay) -> None:
    """A kernel whose ZMQ ports never answer fails the spawn with a clear timeout and is killed."""
    baseline = resources(relay)
    response = requests.get(f"{relay.url}/spawn/relay-test-sleeper", timeout=90)
    assert response.status_code == 500
    error = response.json()["error"]
    assert "did not become ready within 4s" in error
    assert relay.kernels() == []
    round_trip(relay)
    assert_back_to(relay, baseline)


def test_kernel_frozen_after_start(relay: Relay) -> None:
    """A kernel that stops answering (SIGSTOP) leaves other kernels working and is killed on shutdown."""
    baseline = resources(relay)
    kernel_id = relay.spawn()
    frozen = kernel_process(relay, kernel_id)
    client = RelayKernelClient(relay.url, kernel_id, ("shell", "iopub"))
    try:
        os.kill(frozen.pid, signal.SIGSTOP)
        client.send("shell", "execute_request", {"code": "1", "silent": False})
        round_trip(relay)
        started = time.monotonic()
        assert relay.shutdown(kernel_id).status_code == 200
        assert time.monotonic() - started < 60
        client.wait_for(lambda: client.disconnected, timeout=30, what="a disconnect")
    finally:
        client.close()
        if frozen.is_running():
            os.kill(frozen.pid, signal.SIGCONT)
    assert not frozen.is_running() or frozen.status() == psutil.STATUS_ZOMBIE
    assert_back_to(relay, baseline)


def test_unreachable_kernel_is_reported_and_recovers(relay: Relay) -> None:
    """A kernel whose ZMQ side stops answering is reported to its clients and listing, and recovers."""
    baseline = resources(relay)
    kernel_id = relay.spawn()
    stopped = kernel_process(relay, kernel_id)
    client = RelayKernelClient(relay.url, kernel_id, ("shell", "iopub"))
    try:
        time.sleep(4)  # longer than --heartbeat-timeout: a healthy kernel keeps answering
        assert [k["reachable"] for k in relay.kernels() if k["id"] == kernel_id] == [True]
        assert client.errors == []
        os.kill(stopped.pid, signal.SIGSTOP)
        try:
            errors = client.wait_for(
                lambda: [
                    e
                    for e in client.errors
                    if isinstance(e, dict) and e.get("code") == "kernel_unreachable"
                ],
                timeout=60,
                what="a kernel_unreachable error event",
            )
            assert errors[0]["kernel_id"] == kernel_id
            assert "heartbeat" in errors[0]["message"]
            (entry,) = [k for k in relay.kernels() if k["id"] == kernel_id]
            assert entry["reachable"] is False
            metrics = requests.get(f"{relay.url}/metrics", timeout=10).text
            assert 'kernel_relay_errors_total{kind="kernel_unreachable"}' in metrics
            round_trip(relay)  # other kernels are unaffected
        finally:
            os.kill(stopped.pid, signal.SIGCONT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            (entry,) = [k for k in relay.kernels() if k["id"] == kernel_id]
            if entry["reachable"]:
                break
            time.sleep(0.2)
        assert entry["reachable"] is True
        _, reply = client.execute("40 + 2")
        assert reply["content"]["status"] == "ok"
    finally:
        client.close()
        assert relay.shutdown(kernel_id).status_code == 200
    assert_back_to(relay, baseline)

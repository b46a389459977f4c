"""Kernel death, shutdown and relay exit: clients are told, and no process or connection file is left."""

from __future__ import annotations

import contextlib
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import requests

from tests.conftest import TWIST, Relay
from tests.kernel_client import RelayKernelClient
from tests.support import free_port, wait_for_port


def kernel_processes(relay: Relay) -> list[psutil.Process]:
    """The relay's child processes: the kernels it launched."""
    return psutil.Process(relay.process.pid).children(recursive=True)


def connection_files(relay: Relay) -> list[Path]:
    return relay.connection_files()


def wait_gone(pids: list[int], timeout: float = 15.0) -> list[int]:
    """Wait for the processes to exit; return those still alive after ``timeout``."""
    deadline = time.monotonic() + timeout
    alive = pids
    while alive and time.monotonic() < deadline:
        alive = [pid for pid in alive if psutil.pid_exists(pid) and _not_zombie(pid)]
        time.sleep(0.1)
    return alive


def _not_zombie(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def assert_dead_then_disconnected(client: RelayKernelClient) -> None:
    client.wait_for(
        lambda: any(
            m["header"]["msg_type"] == "status" and m["content"]["execution_state"] == "dead"
            for m in client.received["iopub"]
        ),
        timeout=15,
        what="status dead on iopub",
    )
    client.wait_for(lambda: set(client.disconnected) >= set(client.channels), 15, "disconnects")


def test_a_kernel_that_exits_is_reported_dead_and_cleaned_up(relay: Relay) -> None:
    """A kernel calling os._exit is detected: clients get status dead and a disconnect, nothing is left."""
    kernel_id = relay.spawn()
    before = {p.pid for p in kernel_processes(relay)}
    client = RelayKernelClient(relay.url, kernel_id)
    try:
        client.send("shell", "execute_request", {"code": "import os; os._exit(3)"})
        assert_dead_then_disconnected(client)
    finally:
        client.close()
    assert kernel_id not in {k["id"] for k in relay.kernels()}
    assert wait_gone(list(before)) == []
    assert not [f for f in connection_files(relay) if kernel_id in f.name]


def test_a_killed_kernel_is_reported_dead(relay: Relay) -> None:
    """SIGKILL to a kernel process is detected within seconds and announced to its clients."""
    before = {p.pid for p in kernel_processes(relay)}
    kernel_id = relay.spawn()
    new = [p for p in kernel_processes(relay) if p.pid not in before]
    assert new, "the spawned kernel should be a child of the relay"
    client = RelayKernelClient(relay.url, kernel_id, channels=["iopub", "shell"])
    try:
        for process in new:
            # A short-lived child of the relay (not the kernel) may have exited since the listing.
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()
        started = time.monotonic()
        assert_dead_then_disconnected(client)
        assert time.monotonic() - started < 10
    finally:
        client.close()
    assert kernel_id not in {k["id"] for k in relay.kernels()}


def test_shutdown_disconnects_the_kernels_clients(relay: Relay) -> None:
    """GET /shutdown/<id> tells connected clients the kernel is dead and disconnects them."""
    kernel_id = relay.spawn()
    client = RelayKernelClient(relay.url, kernel_id)
    try:
        response = relay.shutdown(kernel_id)
        assert response.status_code == 200
        assert_dead_then_disconnected(client)
    finally:
        client.close()


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
def test_stopping_the_relay_stops_every_kernel(tmp_path: Path, stop_signal: signal.Signals) -> None:
    """SIGTERM or SIGINT to the relay shuts down all its kernels and removes their connection files."""
    relay = Relay(tmp_path / "runtime")
    try:
        ids = [relay.spawn(), relay.spawn()]
        pids = [p.pid for p in kernel_processes(relay)]
        assert len(pids) >= 2
        assert len(connection_files(relay)) == 2
        client = RelayKernelClient(relay.url, ids[0], channels=["iopub"])
    except BaseException:
        relay.stop(signal.SIGKILL)
        raise
    started = time.monotonic()
    code = relay.stop(stop_signal, timeout=60)
    # twist exits through the signal that stopped it, once the reactor has shut down cleanly.
    assert code in (0, -stop_signal), relay.output()[-3000:]
    assert "Main loop terminated." in relay.output()
    assert "Traceback" not in relay.output()
    assert time.monotonic() - started < 30
    assert wait_gone(pids) == []
    assert connection_files(relay) == []
    assert not (relay.runtime_dir / f"kernel-relay-{relay.process.pid}").exists()
    assert_dead_then_disconnected(client)  # as for a kernel shut down on its own
    client.close()


def test_help_documents_every_option() -> None:
    """twist kernel-relay --help names every option the relay takes."""
    result = subprocess.run([*TWIST, "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    for option in (
        "--port",
        "--listen",
        "--allow-origin",
        "--ping-interval",
        "--ping-timeout",
        "--max-payload",
        "--transports",
        "--connect-timeout",
        "--shutdown-timeout",
        "--launch-timeout",
        "--access-log",
        "--heartbeat-interval",
        "--heartbeat-timeout",
        "--pool",
        "--allow-host",
    ):
        assert option in result.stdout, option
    # Help texts are wrapped into one column under their option: no gap of several spaces in a sentence.
    lines = result.stdout.splitlines()
    at = next(i for i, line in enumerate(lines) if line.lstrip().startswith("--allow-host "))
    text = lines[at + 1]
    column = len(text) - len(text.lstrip())
    assert text[column:].startswith("Without a token"), text
    described = [line for line in lines if len(line) - len(line.lstrip()) == column]
    assert len(described) > 40
    for line in described:
        assert not re.search(r"\S {2,}\S", line[column:]), line


def test_version_is_kernel_relays_own() -> None:
    """--version names kernel-relay's version first (it printed Twisted's), then what it runs on."""
    from kernel_relay import __version__

    result = subprocess.run([*TWIST, "--version"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    lines = result.stdout.splitlines()
    assert lines[0] == f"kernel-relay {__version__}"
    assert "Twisted " in lines[1] and "pyzmq " in lines[1]


def test_runs_under_twistd(tmp_path: Path) -> None:
    """twistd -n kernel-relay --port N serves the API and stops cleanly on SIGTERM."""
    port = free_port()
    process = subprocess.Popen(
        [
            str(Path(sys.executable).with_name("twistd")),
            "-n",
            "--pidfile",
            str(tmp_path / "relay.pid"),
            "kernel-relay",
            "--port",
            str(port),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        cwd=tmp_path,
    )
    try:
        wait_for_port(port, process)
        response = requests.get(f"http://127.0.0.1:{port}/api/kernels", timeout=10)
        assert response.status_code == 200
        assert response.json() == []
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) in (0, -signal.SIGTERM)
    output = process.stdout.read().decode() if process.stdout else ""
    assert "Main loop terminated." in output


def test_a_port_in_use_stops_the_relay_with_an_error(tmp_path: Path) -> None:
    """When the port cannot be bound the relay exits non-zero instead of running deaf."""
    with Relay(tmp_path / "first") as first:
        process = subprocess.run(
            [*TWIST, "--port", str(first.port)], capture_output=True, text=True, timeout=60
        )
    assert process.returncode != 0
    output = process.stdout + process.stderr
    assert f"kernel-relay: cannot listen on tcp:{first.port}:interface=127.0.0.1: " in output
    assert "Address already in use" in output
    assert "Traceback" not in output


def test_the_next_relay_removes_what_a_killed_one_left_and_nothing_else(tmp_path: Path) -> None:
    """
    SIGKILL leaves the relay's connection files (its kernels exit by themselves); the next relay on the same
    runtime directory removes them, and leaves other programs' files and running relays' alone.
    """
    runtime = tmp_path / "runtime"
    killed = Relay(runtime)
    try:
        killed.spawn()
        pids = [p.pid for p in kernel_processes(killed)]
        left = killed.connection_files()
        assert len(left) == 1 and left[0].parent.stat().st_mode & 0o777 == 0o700
    except BaseException:
        killed.stop(signal.SIGKILL)
        raise
    killed.stop(signal.SIGKILL)
    assert wait_gone(pids, timeout=30) == []  # ipykernel exits when its parent does
    assert left[0].exists()
    foreign = runtime / "kernel-0f461cbe-95f1-4d24-9bfd-7a42a7aeb04b.json"  # Jupyter Server's, say
    foreign.write_text("{}")
    running = Relay(runtime)
    try:
        running.spawn()
        mine = running.connection_files()
        follower = Relay(runtime)
        try:
            assert not left[0].parent.exists()
            assert foreign.exists() and all(f.exists() for f in mine)
            assert "no longer running" in running.output() + follower.output()
        finally:
            follower.stop()
    finally:
        running.stop()

"""Warm pools: ``--pool NAME=N`` keeps ready kernels that /spawn hands out at once."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator

import psutil
import pytest
import requests

from tests.conftest import TWIST, Relay
from tests.kernel_client import RelayKernelClient

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def pool_relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Relay]:
    server = Relay(tmp_path_factory.mktemp("runtime"), "--pool", "python3=1")
    try:
        yield server
    finally:
        server.stop()


def pooled(relay: Relay) -> int:
    count: int = requests.get(f"{relay.url}/api/health", timeout=10).json()["pooled_kernels"]
    return count


def wait_pooled(relay: Relay, count: int, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while pooled(relay) != count:
        assert time.monotonic() < deadline, (
            f"the pool did not reach {count}: {relay.output()[-2000:]}"
        )
        time.sleep(0.2)


def kernel_processes(relay: Relay) -> set[int]:
    found = set()
    for child in psutil.Process(relay.process.pid).children(recursive=True):
        try:
            cmdline = child.cmdline()
            # A sandboxed kernel's bwrap and sh name its connection file too: only the kernel counts.
            wrapper = bool(cmdline) and os.path.basename(cmdline[0]) in ("bwrap", "sh")
            if (
                "ipykernel" in " ".join(cmdline)
                and not wrapper
                and child.status() != psutil.STATUS_ZOMBIE
            ):
                found.add(child.pid)
        except psutil.Error:
            continue
    return found


def test_spawn_hands_out_a_pooled_kernel_and_the_pool_refills(pool_relay: Relay) -> None:
    """A pooled kernel is invisible until /spawn hands it out ready; the pool then starts another."""
    wait_pooled(pool_relay, 1)
    assert pool_relay.kernels() == []
    assert len(kernel_processes(pool_relay)) == 1
    kernel_id = pool_relay.spawn()
    try:
        assert [k["id"] for k in pool_relay.kernels()] == [kernel_id]
        client = RelayKernelClient(pool_relay.url, kernel_id, ("shell", "iopub"))
        try:
            _, reply = client.execute("6 * 7")
            assert reply["content"]["status"] == "ok"
        finally:
            client.close()
        wait_pooled(pool_relay, 1)
        assert len(kernel_processes(pool_relay)) == 2
        second = pool_relay.spawn()
        assert second != kernel_id
        assert pool_relay.shutdown(second).status_code == 200
    finally:
        assert pool_relay.shutdown(kernel_id).status_code == 200


def test_a_pooled_kernel_that_dies_is_replaced(pool_relay: Relay) -> None:
    """Killing the waiting kernel makes the relay start a new one for the pool."""
    wait_pooled(pool_relay, 1)
    (waiting,) = kernel_processes(pool_relay)
    psutil.Process(waiting).kill()
    deadline = time.monotonic() + 90
    while True:
        now = kernel_processes(pool_relay)
        if pooled(pool_relay) == 1 and now and waiting not in now:
            break
        assert time.monotonic() < deadline, "the dead pooled kernel was not replaced"
        time.sleep(0.2)
    assert pool_relay.kernels() == []


def test_stopping_the_relay_stops_pooled_kernels(tmp_path_factory: pytest.TempPathFactory) -> None:
    """No kernel process outlives a relay that had a pool."""
    server = Relay(tmp_path_factory.mktemp("runtime"), "--pool", "python3=2")
    try:
        wait_pooled(server, 2)
        kernels = kernel_processes(server)
        assert len(kernels) == 2
    finally:
        server.stop()
    deadline = time.monotonic() + 30
    while any(psutil.pid_exists(pid) for pid in kernels) and time.monotonic() < deadline:
        time.sleep(0.2)
    alive = [pid for pid in kernels if psutil.pid_exists(pid)]
    assert all(psutil.Process(pid).status() == psutil.STATUS_ZOMBIE for pid in alive)


@pytest.mark.parametrize("value", ["python3", "python3=0", "python3=x", "=2", "python3=99"])
def test_invalid_pool_options_are_refused(value: str) -> None:
    """--pool needs NAME=N with a sane N; anything else stops the relay with a clear message."""
    result = subprocess.run(
        [*TWIST, "--port", "0", "--pool", value], capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0
    assert "--pool takes NAME=N" in result.stdout + result.stderr

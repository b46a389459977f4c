"""Kernelspecs with a kernel provisioner, kernels that crash at start and kernels that never get ready."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import psutil
import pytest
import requests

from tests.conftest import Relay
from tests.kernel_client import RelayKernelClient
from tests.support import ROOT

FIXTURES = ROOT / "tests" / "provisioner"


@pytest.fixture(scope="module")
def relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Relay]:
    """A relay that sees the test kernelspecs and the test provisioner's entry point."""
    pythonpath = os.pathsep.join(
        filter(None, [str(FIXTURES / "site"), os.environ.get("PYTHONPATH", "")])
    )
    server = Relay(
        tmp_path_factory.mktemp("runtime"),
        "--launch-timeout",
        "4",
        env={"JUPYTER_PATH": str(FIXTURES / "jupyter"), "PYTHONPATH": pythonpath},
    )
    try:
        yield server
    finally:
        server.stop()


def _is_sleeper(process: psutil.Process) -> bool:
    """Is this the never-ready test kernel (an unreaped zombie of it counts too)?"""
    try:
        return "time.sleep(600)" in " ".join(process.cmdline())
    except psutil.ZombieProcess:
        return True
    except psutil.NoSuchProcess:
        return False


def test_a_kernelspecs_provisioner_launches_the_kernel(relay: Relay) -> None:
    """A kernelspec naming a provisioner gets a kernel launched by that provisioner, with no relay change."""
    kernel_id = relay.spawn("relay-test-provisioned")
    client = RelayKernelClient(relay.url, kernel_id, channels=["shell", "iopub"])
    try:
        msg_id, reply = client.execute("import os; os.environ.get('KERNEL_RELAY_TEST_PROVISIONER')")
        assert reply["content"]["status"] == "ok"
        result = client.iopub_for(msg_id, "execute_result")[0]
        assert result["content"]["data"]["text/plain"] == "'provisioned-by-test'"
    finally:
        client.close()
        relay.shutdown(kernel_id)


def test_a_kernel_that_exits_at_start_is_a_clear_500(relay: Relay) -> None:
    """A kernel process that exits while starting makes /spawn answer 500 with a readable error."""
    response = requests.get(f"{relay.url}/spawn/relay-test-crash", timeout=60)
    assert response.status_code == 500
    error = response.json()["error"]
    assert "relay-test-crash" in error
    assert "exit" in error


def test_a_kernel_that_never_gets_ready_times_out_and_is_killed(relay: Relay) -> None:
    """A kernel that never answers fails the spawn after --launch-timeout and leaves no process behind."""
    started = time.monotonic()
    response = requests.get(f"{relay.url}/spawn/relay-test-sleeper", timeout=60)
    assert response.status_code == 500
    assert "relay-test-sleeper" in response.json()["error"]
    assert time.monotonic() - started < 30
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        sleepers = [
            child
            for child in psutil.Process(relay.process.pid).children(recursive=True)
            if _is_sleeper(child)
        ]
        if not sleepers:
            break
        time.sleep(0.1)
    assert sleepers == [], "the never-ready kernel was not killed and reaped"
    assert relay.kernels() == []

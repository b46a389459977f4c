"""
A fleet under faults (issue 30), with real relays, kernels and Redis: relays that start together, Redis
that restarts empty, a relay frozen past its lease, and kernels that flood.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import requests

from tests.conftest import Relay
from tests.e2e.test_fleet import AUTH, TOKEN, ids, no_kernel_left, show
from tests.jupyter_ws import JupyterWS
from tests.redis_server import RedisServer, redis_server

pytestmark = pytest.mark.timeout(240)

__all__ = ["no_kernel_left", "redis_server"]


def relay(runtime: Path, url: str, lease: str, *args: str) -> Relay:
    return Relay(runtime, "--redis", url, "--fleet-lease", lease, *args, token=TOKEN)


def test_a_kernel_spawned_on_a_relay_that_just_started_is_usable_at_once_on_another(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    """Two relays started together (a long lease: a sync every 3 s): a kernel spawned on A at once is usable on B."""
    url = redis_server.database(14)
    a = relay(tmp_path / "a", url, "9")
    b = relay(tmp_path / "b", url, "9")
    try:
        ready_a = requests.get(f"{a.url}/api/health/ready", timeout=10)
        kernel_id = a.spawn()
        # Once the spawn answers, B serves the kernel: no "no running kernel has that id".
        client = JupyterWS(b.url, kernel_id, token=TOKEN)
        try:
            _, reply = client.execute("1 + 1")
            assert reply["content"]["status"] == "ok"
        finally:
            client.close()
        assert kernel_id in ids(b)
        assert requests.get(f"{b.url}/api/health/ready", timeout=10).status_code == 200
        # Nobody took A's kernel over: A joined before it spawned, so its lease was there.
        fleet_b = requests.get(f"{b.url}/api/health", headers=AUTH, timeout=10).json()["fleet"]
        assert fleet_b["adopted"] == 0 and fleet_b["owned_kernels"] == 0
        assert ready_a.status_code in (200, 503)
        assert a.shutdown(kernel_id).status_code == 200
    finally:
        a.stop()
        b.stop()
        show("A", a)
        show("B", b)


def test_readiness_is_503_until_the_relay_has_joined(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    """A fleet relay whose Redis does not answer is not ready (503, health says so) and starts no kernel."""
    nowhere = "redis://127.0.0.1:1/0"
    a = relay(tmp_path / "a", nowhere, "3")
    try:
        ready = requests.get(f"{a.url}/api/health/ready", timeout=10)
        assert ready.status_code == 503 and ready.json() == {"ready": False}
        anonymous = requests.get(f"{a.url}/api/health", timeout=10).json()
        assert anonymous == {"status": "starting", "ready": False}
        started = time.monotonic()
        refused = requests.get(f"{a.url}/spawn/python3", headers=AUTH, timeout=30)
        assert refused.status_code == 500 and "has not joined its fleet" in refused.text
        assert time.monotonic() - started < 25
        assert not a.connection_files()
    finally:
        a.stop()

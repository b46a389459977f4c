"""
"Spawned before joined" (issue #30, the start-up race): two relays started together before their Redis
answers, a kernel spawned on one at once, used on the other at once. The spawn waits for its relay to have
joined (it never starts a kernel it has not registered), the other relay serves the kernel as soon as the spawn
answers, nobody adopts it while its relay lives, and no kernel is left once the relays are gone.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.e2e.test_fleet import AUTH, kernel_processes, log_lines, no_kernel_left, show
from tests.e2e.test_fleet_faults import assert_runs_on, owned, relay
from tests.e2e.test_relay_resume import wait
from tests.redis_server import RedisServer, require_redis
from tests.support import free_port

pytestmark = pytest.mark.timeout(240)

__all__ = ["no_kernel_left"]

LEASE = "1.5"


def fleet_of(relay_: Any) -> dict[str, Any]:
    body: dict[str, Any] = requests.get(f"{relay_.url}/api/health", headers=AUTH, timeout=10).json()
    return dict(body["fleet"])


def test_a_kernel_spawned_before_its_relay_reached_redis_is_registered_first_and_served_everywhere(
    tmp_path: Path,
) -> None:
    """A and B start before their Redis does; a spawn on A at once waits until A has joined, B serves the kernel
    at once after, no relay adopts it while A lives, and B adopts and then stops it after A is SIGKILLed."""
    require_redis()
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    a = relay(tmp_path / "a", url, LEASE)
    b = relay(tmp_path / "b", url, LEASE)
    redis: RedisServer | None = None
    kernel_id = ""
    try:
        spawned: dict[str, Any] = {}

        def spawn() -> None:
            spawned["answer"] = requests.get(f"{a.url}/spawn/python3", headers=AUTH, timeout=60)

        asking = threading.Thread(target=spawn, daemon=True)
        asking.start()
        time.sleep(1.5)
        assert "answer" not in spawned, "A answered a spawn before it could reach Redis"
        assert not [line for line in log_lines(a) if "starting a 'python3' kernel" in line]
        assert requests.get(f"{a.url}/api/health/ready", timeout=10).status_code == 503
        redis = RedisServer(tmp_path / "redis", port)
        asking.join(60)
        answer = spawned["answer"]
        assert answer.status_code == 200, answer.text
        kernel_id = answer.json()["id"]
        assert_runs_on(b, kernel_id)
        lines = log_lines(a)
        joined = next(i for i, line in enumerate(lines) if "has joined the fleet" in line)
        started = next(i for i, line in enumerate(lines) if "starting a 'python3' kernel" in line)
        assert joined < started, lines
        time.sleep(
            2 * float(LEASE) + 1
        )  # past a lease: A's lease runs, nobody takes its kernel over
        assert fleet_of(a)["owned_kernels"] == 1 and fleet_of(b)["adopted"] == 0
        assert not [line for line in log_lines(b) if "adopting" in line]
        os.kill(a.process.pid, signal.SIGKILL)
        a.process.wait()
        wait(lambda: owned(b) == 1, 30, "B to adopt the kernel of A, killed")
    finally:
        a.stop()
        b.stop()
        if redis is not None:
            redis.stop()
        show("A", a)
        show("B", b)
    wait(lambda: not kernel_processes(kernel_id), 15, "the last relay to stop its kernel")

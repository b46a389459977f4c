"""What an operator meets: settings that cannot work stop the relay at start; readiness tells the truth."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.conftest import Relay
from tests.redis_server import RedisServer, require_redis
from tests.support import free_port

KERNEL_RELAY = Path(sys.executable).with_name("kernel-relay")


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(KERNEL_RELAY), "--port", str(free_port()), *argv],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "KERNEL_RELAY_TOKEN": ""},
    )


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--pool", "pyhton3=1"], "--pool pyhton3=1: no kernelspec named 'pyhton3' is installed"),
        (["--redis", "redis://localhost:63x9"], "--redis 'redis://localhost:63x9': "),
        (
            ["--redis", "http://localhost:6379", "--token", "t"],
            "is not a redis:// or rediss:// URL",
        ),
        (["--pool", "python3=3", "--max-kernels", "2"], "more than --max-kernels 2"),
    ],
)
def test_a_setting_that_cannot_work_stops_the_relay_at_start(argv: list[str], message: str) -> None:
    """An unknown kernelspec in --pool, a malformed Redis URL, a pool over --max-kernels: one line, exit 2."""
    result = run(*argv)
    assert result.returncode == 2, result.stderr[-2000:]
    assert message in result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


@pytest.fixture()
def redis_later(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    require_redis()
    yield free_port(), tmp_path / "redis"


def test_readiness_is_503_while_redis_is_down_and_200_after(
    tmp_path: Path, redis_later: tuple[int, Path]
) -> None:
    """A fleet relay whose Redis is not there yet is alive but not ready (503, with the reason), then ready."""
    port, directory = redis_later
    relay = Relay(
        tmp_path / "runtime",
        "--redis",
        f"redis://127.0.0.1:{port}/0",
        "--fleet-lease",
        "1.5",
        token="tok",
    )
    redis = None
    try:
        assert requests.get(f"{relay.url}/api/health", timeout=10).status_code == 200
        not_ready = requests.get(f"{relay.url}/api/health/ready", timeout=10)
        assert (not_ready.status_code, not_ready.json()) == (503, {"ready": False})
        detailed = requests.get(f"{relay.url}/api/health/ready", headers=relay.headers, timeout=10)
        reasons = detailed.json()["reasons"]
        assert any("Redis is unreachable" in reason for reason in reasons), reasons
        redis = RedisServer(directory, port)
        deadline = time.monotonic() + 30
        while requests.get(f"{relay.url}/api/health/ready", timeout=10).status_code != 200:
            assert time.monotonic() < deadline, relay.output()[-3000:]
            time.sleep(0.2)
        assert requests.get(f"{relay.url}/api/health/ready", timeout=10).json() == {"ready": True}
    finally:
        relay.stop()
        if redis is not None:
            redis.stop()


def test_a_pool_whose_kernels_keep_failing_makes_the_relay_degraded(tmp_path: Path) -> None:
    """--pool of a kernelspec whose kernel dies at start: /api/health says degraded (still 200), and why."""
    spec = tmp_path / "jupyter" / "kernels" / "crasher"
    spec.mkdir(parents=True)
    spec.joinpath("kernel.json").write_text(
        json.dumps(
            {
                "argv": [sys.executable, "-c", "raise SystemExit(3)", "{connection_file}"],
                "display_name": "crasher",
                "language": "python",
            }
        )
    )
    relay = Relay(
        tmp_path / "runtime",
        "--pool",
        "crasher=1",
        env={"JUPYTER_PATH": str(tmp_path / "jupyter"), "KERNEL_RELAY_KERNEL_SANDBOX": "off"},
    )
    try:
        deadline = time.monotonic() + 60
        while requests.get(f"{relay.url}/api/health", timeout=10).json()["status"] != "degraded":
            assert time.monotonic() < deadline, relay.output()[-3000:]
            time.sleep(0.5)
        health = requests.get(f"{relay.url}/api/health", timeout=10)
        assert health.status_code == 200
        assert "warm pool of 'crasher'" in health.json()["reasons"][0]
        assert requests.get(f"{relay.url}/api/health/ready", timeout=10).status_code == 200
    finally:
        relay.stop()

"""
A fleet whose Redis is out of memory (``maxmemory`` with ``noeviction``; issue #30): spawns are refused with
Redis's reason, the kernels that run go on (their output numbered on the relay alone, told once in the log),
no relay takes another's kernel, and all is as before once memory is freed; the last relay to stop still
stops a dead relay's kernel that it could not take over.
"""

from __future__ import annotations

import itertools
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.conftest import Relay
from tests.e2e.test_fleet import (
    AUTH,
    TOKEN,
    fleet_relay,
    kernel_processes,
    log_lines,
    no_kernel_left,
    show,
)
from tests.e2e.test_fleet_faults import owned, relay
from tests.e2e.test_relay_resume import IopubWatcher, wait
from tests.jupyter_ws import JupyterWS
from tests.redis_server import RedisServer, redis_command, require_redis

pytestmark = pytest.mark.timeout(240)

__all__ = ["no_kernel_left"]

#: The fleet's database; the filler goes into another one, so that freeing it is one FLUSHDB.
FLEET_DB, FILLER_DB = 3, 15


@pytest.fixture
def small_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of its own (its memory is this test's to fill), with no eviction."""
    require_redis()
    server = RedisServer(tmp_path / "redis")
    try:
        redis_command(server.port, 0, "CONFIG", "SET", "maxmemory-policy", "noeviction")
        yield server
    finally:
        server.stop()


def used_memory(server: RedisServer) -> int:
    info = redis_command(server.port, 0, "INFO", "memory")
    assert isinstance(info, bytes)
    return int(info.split(b"used_memory:", 1)[1].split(b"\r\n", 1)[0])


def fill(server: RedisServer) -> None:
    """
    Let Redis hold 2 MiB more than it does now and fill that, then let it hold 1 MiB: every write is
    refused from now on (at the limit, a write passes whenever a buffer is freed).
    """
    maxmemory = used_memory(server) + 2 * 1024 * 1024
    redis_command(server.port, 0, "CONFIG", "SET", "maxmemory", str(maxmemory))
    for written in range(1000):
        reply = redis_command(server.port, FILLER_DB, "SET", f"filler:{written}", "x" * 65536)
        if reply != "OK":
            assert str(reply).startswith("OOM"), reply
            assert written > 0
            redis_command(server.port, 0, "CONFIG", "SET", "maxmemory", str(1024 * 1024))
            return
    raise AssertionError("Redis took 64 MiB more than its maxmemory")


def free(server: RedisServer) -> None:
    redis_command(server.port, 0, "CONFIG", "SET", "maxmemory", "0")
    assert redis_command(server.port, FILLER_DB, "FLUSHDB") == "OK"


def fleet_health(relay: Relay) -> dict[str, Any]:
    body: dict[str, Any] = requests.get(f"{relay.url}/api/health", headers=AUTH, timeout=10).json()
    return body


def run_cell(client: JupyterWS, watcher: IopubWatcher, lines: int) -> str:
    """Print ``lines`` lines on the kernel; the cell's id once the watcher has them all."""
    cell = client.send(
        "shell",
        "execute_request",
        {"code": f"for i in range({lines}): print(i, flush=True)", "silent": False},
    )
    wait(lambda: f"{lines - 1}\n" in watcher.printed(cell), 60, "the cell's output")
    return cell


def test_a_full_redis_refuses_spawns_clearly_and_running_kernels_go_on(
    small_redis: RedisServer, tmp_path: Path
) -> None:
    """Redis out of memory: spawns fail at once with Redis's reason (seed route and Jupyter API), a running
    kernel's output reaches its clients whole and in order, it is logged once, /api/health says so, nobody
    adopts anything; once memory is freed, spawns and the fleet's numbering work again."""
    url = f"redis://127.0.0.1:{small_redis.port}/{FLEET_DB}"
    a = fleet_relay(tmp_path / "a", url)
    b = fleet_relay(tmp_path / "b", url)
    client = watcher = None
    try:
        kernel_id = a.spawn()
        watcher = IopubWatcher(a.url, kernel_id, auth={"token": TOKEN})
        client = JupyterWS(a.url, kernel_id, token=TOKEN)
        run_cell(client, watcher, 5)
        fill(small_redis)

        seed = requests.get(f"{a.url}/spawn/python3", headers=AUTH, timeout=30)
        assert seed.status_code == 500 and "OOM" in seed.json()["error"], seed.text
        jupyter = requests.post(
            f"{b.url}/api/kernels", json={"name": "python3"}, headers=AUTH, timeout=30
        )
        assert jupyter.status_code in (500, 503) and "OOM" in jupyter.json()["message"], (
            jupyter.text
        )

        for _ in range(3):
            run_cell(client, watcher, 200)
        seqs = [int(m["metadata"]["relay_seq"]) for m in watcher.received()]
        assert len(seqs) == len(set(seqs)), seqs
        assert not watcher.gaps, watcher.gaps
        view = fleet_health(a)
        assert view["fleet"]["redis_full"] and view["ready"] is False, view
        assert any("out of memory" in reason for reason in view["reasons"]), view
        # Longer than a lease: the owner keeps it, and nobody takes the kernel over.
        wait(lambda: fleet_health(b)["fleet"]["redis_full"], 10, "B to see Redis full")
        run_cell(client, watcher, 20)
        time.sleep(4)
        assert fleet_health(b)["fleet"]["adopted"] == 0 and fleet_health(a)["fleet"]["relays"] == 2
        for relay in (a, b):
            lines = log_lines(relay)
            told = [line for line in lines if "no kernel can start" in line]
            assert len(told) == 1 and "OOM" in told[0], told
            assert not [
                line
                for line in lines
                if "numbered by the fleet again" in line or "cannot be reached" in line
            ]
            assert not [line for line in lines if "Could not renew" in line or "adopting" in line]

        kept = redis_command(
            small_redis.port, FLEET_DB, "XLEN", f"kernel-relay:journal:{kernel_id}"
        )
        free(small_redis)
        wait(
            lambda: not fleet_health(a)["fleet"]["redis_full"], 15, "A to see Redis has room again"
        )
        cell = run_cell(client, watcher, 20)
        back = [line for line in log_lines(a) if "numbered by the fleet again" in line]
        assert len(back) == 1 and kernel_id in back[0], back
        stream = redis_command(
            small_redis.port, FLEET_DB, "XLEN", f"kernel-relay:journal:{kernel_id}"
        )
        assert isinstance(stream, int) and isinstance(kept, int) and stream >= kept + 20, (
            kept,
            stream,
        )
        seqs = [int(m["metadata"]["relay_seq"]) for m in watcher.received()]
        assert len(seqs) == len(set(seqs)), seqs
        assert seqs == sorted(seqs), [(a, b) for a, b in itertools.pairwise(seqs) if b < a]
        assert watcher.printed(cell) == "".join(f"{i}\n" for i in range(20))
        other = b.spawn()
        assert b.shutdown(other).status_code == 200
        assert a.shutdown(kernel_id).status_code == 200
    finally:
        for each in (client, watcher):
            if each is not None:
                each.close()
        free(small_redis)  # a full Redis would keep the last relay from taking over what A leaves
        a.stop()
        b.stop()
        show("A", a)
        show("B", b)


def test_the_last_relay_stops_a_dead_relays_kernel_while_redis_is_full(
    small_redis: RedisServer, tmp_path: Path
) -> None:
    """Redis out of memory and A SIGKILLed: B cannot take A's kernel over (a write), yet B, stopping last on
    the machine, stops it (from the machine's list of the fleet's kernels) instead of leaving it running."""
    url = f"redis://127.0.0.1:{small_redis.port}/{FLEET_DB}"
    runtime = tmp_path / "runtime"  # one user's runtime directory: the relays of a machine share it
    a = relay(runtime, url, "1.5")
    b = relay(runtime, url, "1.5")
    try:
        kernel_id = a.spawn()
        [process] = kernel_processes(kernel_id)
        fill(small_redis)
        os.kill(a.process.pid, signal.SIGKILL)
        a.process.wait()
        time.sleep(3)  # two leases: A's has run out
        assert process.is_running() and owned(b) == 0
        b.stop()
        assert any("no relay of this machine is left" in line for line in log_lines(b))
    finally:
        free(small_redis)
        a.stop()
        b.stop()
        show("A", a)
        show("B", b)
    wait(lambda: not kernel_processes(kernel_id), 15, "the kernel to be stopped")

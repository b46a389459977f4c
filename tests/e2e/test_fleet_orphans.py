"""
A fleet's kernel that Redis lost while no live relay knew it (issue 30's orphan): its relay is SIGKILLed just
before Redis restarts empty. The machine's list of the fleet's kernels (``fleet.ledger``) finds it again.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from tests.e2e.test_fleet import ids, kernel_processes, no_kernel_left, show
from tests.e2e.test_fleet_faults import owned, relay
from tests.e2e.test_relay_resume import wait
from tests.redis_server import RedisServer, require_redis

pytestmark = pytest.mark.timeout(240)

__all__ = ["no_kernel_left"]


def test_a_kernel_whose_relay_died_as_redis_restarted_empty_is_found_by_the_next_relay(
    tmp_path: Path,
) -> None:
    """A (alone) is SIGKILLed and Redis restarts empty: B, started later on the same machine, adopts A's kernel and stops it at its end."""
    require_redis()
    redis = RedisServer(tmp_path / "redis")
    runtime = tmp_path / "runtime"  # one user's runtime directory: the relays of a machine share it
    a = relay(runtime, redis.url, "1.5")
    b = None
    try:
        kernel_id = a.spawn()
        [process] = kernel_processes(kernel_id)
        os.kill(a.process.pid, signal.SIGKILL)
        a.process.wait()
        redis = redis.restart()
        b = relay(runtime, redis.url, "1.5")
        wait(lambda: owned(b) == 1, 30, "B to find and adopt A's kernel")
        assert kernel_id in ids(b) and process.is_running()
        b.stop()
        assert "leaving 1 kernel(s) running" not in b.output()
    finally:
        a.stop()
        if b is not None:
            b.stop()
            show("B", b)
        redis.stop()
        show("A", a)
    wait(lambda: not kernel_processes(kernel_id), 15, "the kernel to be stopped")


def test_a_frozen_kernel_is_gone_when_its_shutdown_answers(tmp_path: Path) -> None:
    """
    A fleet's kernel outlives its sandbox's outer bwrap (no --die-with-parent), which SIGTERM ends: a kernel
    frozen by SIGSTOP was left running forever by a shutdown that answered 200.
    """
    require_redis()
    redis = RedisServer(tmp_path / "redis")
    a = relay(tmp_path / "runtime", redis.url, "1.5")
    try:
        kernel_id = a.spawn()
        [process] = kernel_processes(kernel_id)
        process.suspend()
        assert a.shutdown(kernel_id).status_code == 200
        assert not kernel_processes(kernel_id)
    finally:
        a.stop()
        redis.stop()
        show("A", a)

"""
Two minutes of the fleet's chaos run (``python -m bench.chaos``): relays killed, frozen past their lease and
stopped, Redis restarted empty, kernels killed, watchers moving between relays. Deselect with ``-m "not chaos"``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.redis_server import require_redis

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(600)]


def test_two_minutes_of_chaos_lose_repeat_and_orphan_nothing(tmp_path: Path) -> None:
    """No line lost without notice, no repeat, no message with two numbers, no false death, no kernel left."""
    require_redis()
    command = [sys.executable, "-m", "bench.chaos", "--minutes", "2", "--seed", "7"]
    done = subprocess.run(
        [*command, "--log-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=540,
        env={**os.environ},
        cwd=Path(__file__).parents[2],
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    assert lines, done.stdout + done.stderr
    result = json.loads(lines[-1])
    print(result)
    assert result["lines_seen"] > 0
    assert result["lost_without_notice"] == 0, result["loss_contexts"]
    assert result["sio_repeats"] == 0
    # Besides what a watcher got in the last UNREAD_SECONDS before it closed (see bench.chaos).
    assert result["jupyter_repeat_beyond_unread_max"] <= 0.5, result["repeat_contexts"]
    assert result["two_numbers"] == 0
    assert result["false_deaths"] == 0
    assert result["kernels_left"] == 0

"""A 20-second smoke run of bench/soak.py: mixed traffic with churn loses nothing and fails nothing."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.support import ROOT

pytest.importorskip("psutil")


@pytest.mark.timeout(300)
def test_soak_smoke_run_loses_no_message() -> None:
    """`python -m bench.soak --seconds 20` exits 0 having served requests with 0 lost and 0 errors."""
    completed = subprocess.run(
        [sys.executable, "-m", "bench.soak", "--seconds", "20", "--watchers", "2"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=280,
    )
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output[-4000:]
    summary = json.loads(completed.stdout.strip().splitlines()[-1])
    assert summary["messages_lost"] == 0
    assert summary["errors"] == 0
    assert summary["requests_served"] > 10
    assert summary["kernels_spawned"] >= 2
    assert summary["messages_expected"] > 0
    assert summary["buffers_relayed"] > 0

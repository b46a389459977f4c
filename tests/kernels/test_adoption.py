"""What an adopting relay checks before it takes a process for a kernel, and the env a restart may keep."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from kernel_relay.kernels.adoption import is_kernel_process, kernel_env, start_time

KERNEL_ID = "0b9e6f3c-1d2a-4c5b-9e8f-7a6b5c4d3e2f"


@pytest.fixture
def process(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A Python process whose command line names the file ``request.param`` (it sleeps)."""
    name = str(request.param)
    popen = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)", "-f", str(tmp_path / name)]
    )
    try:
        yield popen
    finally:
        popen.kill()
        popen.wait()


@pytest.mark.parametrize("process", [f"kernel-{KERNEL_ID}.json"], indirect=True)
def test_the_kernels_process_is_recognised(process: subprocess.Popen[bytes]) -> None:
    """A process started when the record says, with the kernel's connection file, is the kernel."""
    started = start_time(process.pid)
    assert started is not None
    assert is_kernel_process(process.pid, started, KERNEL_ID)


@pytest.mark.parametrize("process", ["kernel-another.json"], indirect=True)
def test_another_process_is_not_taken_for_the_kernel(process: subprocess.Popen[bytes]) -> None:
    """A process with the right start time but another command line, or another start time, is not it."""
    started = start_time(process.pid)
    assert started is not None
    assert not is_kernel_process(process.pid, started, KERNEL_ID)
    assert not is_kernel_process(process.pid, started + "1", "another")


def test_a_restart_keeps_only_the_env_a_client_may_set() -> None:
    """KERNEL_* and the allowed names stay; anything else (LD_PRELOAD, PATH) or a value with NUL goes."""
    recorded = {
        "KERNEL_MARK": "kept",
        "MY_VAR": "allowed",
        "LD_PRELOAD": "/tmp/evil.so",
        "PATH": "/tmp",
        "KERNEL_NUL": "a\x00b",
        "KERNEL_NOT_TEXT": 3,
    }
    assert kernel_env(recorded, frozenset({"MY_VAR"})) == {
        "KERNEL_MARK": "kept",
        "MY_VAR": "allowed",
    }
    assert kernel_env(recorded) == {"KERNEL_MARK": "kept"}

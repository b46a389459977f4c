"""A gone relay's runtime directory is removed when it holds only what a relay writes there."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from kernel_relay.kernels._runtime import remove_stale


def dead_pid() -> int:
    """The pid of a process that has just exited (not reused this soon on a quiet machine)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


@pytest.fixture
def runtime(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path))
    return tmp_path


def test_a_gone_relays_directory_with_its_kernels_output_logs_is_removed(runtime: Path) -> None:
    """Connection files and the kernels' captured output (kernel-<id>.log) are the relay's own."""
    gone = runtime / f"kernel-relay-{dead_pid()}"
    gone.mkdir()
    kernel = uuid.uuid4()
    (gone / f"kernel-{kernel}.json").write_text("{}")
    (gone / f"kernel-{kernel}.log").write_text("Traceback ...\n")
    assert gone in remove_stale()
    assert not gone.exists()


def test_a_gone_relays_directory_with_a_file_it_did_not_write_is_left(runtime: Path) -> None:
    """Anything else in it (someone's file) keeps the whole directory."""
    gone = runtime / f"kernel-relay-{dead_pid()}"
    gone.mkdir()
    (gone / f"kernel-{uuid.uuid4()}.json").write_text("{}")
    (gone / "notes.txt").write_text("mine")
    assert gone not in remove_stale()
    assert (gone / "notes.txt").exists()

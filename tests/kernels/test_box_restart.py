"""A sandboxed kernel's box outlives its restart, whatever another relay of the machine sweeps meanwhile."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from kernel_relay.kernels import _manager, _runtime
from kernel_relay.kernels._limits import Limits
from kernel_relay.kernels._sandbox import Box, Sandbox


class RestartingManager:
    """A kernel manager whose restart lets another relay start (and sweep stale boxes) mid-way."""

    kernel_id = "0123abcd-0000-4000-8000-000000000000"
    provisioner = None

    def __init__(self, box: Box) -> None:
        self.sandbox = Sandbox(box, Limits(), "none", False)
        self.swept: list[Path] = []

    def restart_kernel(self, now: bool) -> None:
        # The old kernel has exited and the new one is not started yet: another relay starts now.
        self.swept = _runtime.remove_stale()


def test_a_relay_starting_during_a_sandboxed_restart_leaves_the_box(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The box, whose pid file names the exited old kernel, is taken for one being launched, not removed."""
    monkeypatch.setattr(_runtime, "boxes_dir", lambda: tmp_path)
    box = Box(tmp_path / "0123abcd", None)
    for path in (box.root, box.channels, box.home):
        path.mkdir()
    (box.home / "notes.txt").write_text("the kernel's work")
    old = subprocess.Popen([sys.executable, "-c", ""])
    old.wait()
    (box.root / "pid").write_text(json.dumps([old.pid, 1.0]))
    manager = RestartingManager(box)
    _manager.restart(manager)  # type: ignore[arg-type]
    assert manager.swept == []
    assert (box.home / "notes.txt").read_text() == "the kernel's work"

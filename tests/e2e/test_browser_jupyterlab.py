"""
JupyterLab 4, started with ``--gateway-url`` at the relay, in headless Chromium: open a notebook, run a cell,
see its output. JupyterLab's own server relays the browser's kernel traffic to the relay in the legacy
protocol (the browser speaks v1 to it), so this is the path every Jupyter gateway user takes. Then, in a
second notebook session, a restart from JupyterLab's Kernel menu and a kernel that dies (issue #34's point 4).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.browser.harness import artifact, require, require_chromium, run_script
from tests.browser.jupyterlab import jupyterlab_with_gateway
from tests.conftest import Relay, relay_fixture

pytestmark = pytest.mark.timeout(300)

TOKEN = "jupyterlab-gateway-token-0123456789"

relay = relay_fixture(token=TOKEN)


def _has_jupyterlab() -> bool:
    try:
        import jupyterlab  # noqa: F401
    except ImportError:
        return False
    return True


def test_jupyterlab_runs_a_cell_on_a_relay_kernel(relay: Relay, tmp_path: Path) -> None:
    require_chromium()
    require(_has_jupyterlab(), "jupyterlab is required (the interop extra)")
    screenshot = artifact("jupyterlab-relay-notebook.png")
    with jupyterlab_with_gateway(relay.url, TOKEN, tmp_path) as lab_url:
        result = run_script(
            "jupyterlab_notebook.js",
            "--url",
            lab_url,
            "--screenshot",
            str(screenshot),
            "--code",
            "import os; print(6*7, os.environ.get('KERNEL_WORKING_DIR') is not None)",
            "--expect",
            "42 True",
            timeout=200,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        report = json.loads(result.stdout.strip().splitlines()[-1])
        assert report["ok"] is True and "42 True" in report["output"]
        # The kernel the notebook ran on is the relay's (started through JupyterLab's gateway client).
        (kernel,) = relay.kernels()
        assert kernel["name"] == "python3"
    # JupyterLab's server shuts its kernels down when it stops.
    assert relay.kernels() == []
    assert screenshot.is_file()


def test_jupyterlab_restart_is_no_death_and_a_death_is_shown(relay: Relay, tmp_path: Path) -> None:
    """Kernel > Restart Kernel… shows no "appears to have died" dialog; a kernel that exits is told dead."""
    require_chromium()
    require(_has_jupyterlab(), "jupyterlab is required (the interop extra)")
    screenshot = artifact("jupyterlab-relay-restart.png")
    with jupyterlab_with_gateway(relay.url, TOKEN, tmp_path) as lab_url:
        result = run_script(
            "jupyterlab_restart.js", "--url", lab_url, "--screenshot", str(screenshot), timeout=200
        )
    # The script fails on any dialog but the confirmation ("Kernel Restarting" among them) until the death.
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    restart, death = report["restart"], report["death"]
    # A fresh kernel ("x" is gone), back to idle, one reconnection, no status the page reads as a crash.
    assert restart["output"] == "False 42", report
    assert "restarting" in restart["statuses"] and restart["statuses"][-1] == "idle", report
    assert [d.split(":")[0] for d in restart["dialogs"]] == ["Restart Kernel?"], report
    assert restart["kernel_websockets_opened"] == 1, report
    assert "restarting" not in restart["received"], report
    # The relay restarts no kernel by itself: a death is told as such (dead), and JupyterLab stops trying.
    # JupyterLab shows "Disconnected" even without the dead status (its server closes the page's socket once
    # the kernel is gone from the relay's list), so the status on the page's socket is what is checked.
    assert "dead" in death["received"], report
    assert death["dialogs"] == [] and death["kernel_websockets_opened"] == 0, report
    assert death["statuses"][-1] == "disconnected" and "Disconnected" in death["status_bar"], report

"""
``@jupyterlab/services``' ``SessionManager`` on the relay, in Node: a session starts its kernel, executes,
restarts as the client asks (seen as ``restarting``, never ``autorestarting``, one reconnect) and shuts down.
"""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.browser.harness import require_node
from tests.conftest import Relay, relay_fixture
from tests.support import ROOT, ensure_node_modules

pytestmark = pytest.mark.timeout(300)

SCENARIO_DIR = ROOT / "tests" / "jupyter-node"
TOKEN = "jupyterlab-sessions-token-0123456789"

relay = relay_fixture(token=TOKEN)


@pytest.mark.parametrize("protocol", ["v1", "legacy"])
def test_session_manager_start_execute_restart_shutdown(relay: Relay, protocol: str) -> None:
    """SessionManager.startNew -> execute -> restart() -> execute -> shutdown, as on Jupyter Server."""
    require_node()
    ensure_node_modules(SCENARIO_DIR)
    argv = [
        "node",
        "sessions.js",
        "--base-url",
        relay.url,
        "--token",
        TOKEN,
        "--protocol",
        protocol,
    ]
    result = subprocess.run(
        argv, cwd=SCENARIO_DIR, capture_output=True, text=True, timeout=240, check=False
    )
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert result.returncode == 0 and lines and lines[-1]["ok"], result.stdout + result.stderr
    seen = lines[-1]
    assert seen["before"] == {"status": "ok", "result": "42", "stdout": "hello\n"}
    assert seen["after"]["result"] == "False"  # a fresh kernel
    assert [entry["id"] for entry in seen["listed"]] == [seen["session_id"]]
    assert seen["listed"][0]["kernel"] == seen["kernel_id"]
    assert "autorestarting" not in seen["statuses"]
    assert seen["new_websockets"] == 1
    assert seen["left"] == []
    assert seen["kernel_id"] not in [kernel["id"] for kernel in relay.kernels()]

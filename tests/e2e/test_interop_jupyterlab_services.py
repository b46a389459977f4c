"""
Real Jupyter clients on the relay's Jupyter kernel API: ``@jupyterlab/services`` 7 in Node (the library
JupyterLab is built on) over v1 and legacy, and the same scenario through Jupyter Server 2 started with
``--gateway-url`` at the relay.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator

import pytest

from tests.browser.harness import require, require_node
from tests.conftest import Relay, relay_fixture
from tests.support import ROOT, ensure_node_modules, jupyter_server

pytestmark = pytest.mark.timeout(300)

SCENARIO_DIR = ROOT / "tests" / "jupyter-node"
TOKEN = "jupyterlab-services-token-0123456789"
STEPS = [
    "kernelspecs",
    "start",
    "kernel_info",
    "execute",
    "stdin",
    "comm_buffer",
    "interrupt",
    "restart",
    "second_client",
    "listing",
    "shutdown",
    "done",
]

relay = relay_fixture(token=TOKEN)


def scenario(base_url: str, token: str, protocol: str, *skip: str) -> list[dict[str, object]]:
    """Run tests/jupyter-node/scenario.js; its steps, each checked to have passed."""
    require_node()
    ensure_node_modules(SCENARIO_DIR)
    argv = ["node", "scenario.js", "--base-url", base_url, "--token", token, "--protocol", protocol]
    if skip:
        argv += ["--skip", ",".join(skip)]
    result = subprocess.run(
        argv, cwd=SCENARIO_DIR, capture_output=True, text=True, timeout=240, check=False
    )
    steps = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert result.returncode == 0, result.stdout + result.stderr
    assert [step["step"] for step in steps] == STEPS
    assert all(step["ok"] for step in steps), steps
    return steps


@pytest.mark.parametrize("protocol", ["v1", "legacy"])
def test_jupyterlab_services_runs_the_whole_scenario(relay: Relay, protocol: str) -> None:
    """kernelspecs, start, execute, input(), a comm with a binary buffer, interrupt, restart, a second
    client, listing and shutdown, with a token, in the protocol asked for."""
    steps = {step["step"]: step for step in scenario(relay.url, TOKEN, protocol)}
    expected = "v1.kernel.websocket.jupyter.org" if protocol == "v1" else ""
    assert steps["restart"]["protocol"] == expected
    assert steps["execute"]["stdout"] == "hello\n" and steps["execute"]["result"] == "42"
    assert steps["comm_buffer"]["buffer_bytes"] == 65536
    assert steps["listing"]["connections"] == 2


@pytest.fixture(scope="module")
def gateway_client(relay: Relay, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Jupyter Server with --gateway-url at the relay (its kernels are the relay's); its base URL."""
    require(_has_jupyter_server(), "jupyter_server is required (the interop extra)")
    root = tmp_path_factory.mktemp("gateway-client")
    with jupyter_server(
        root,
        "gateway-client-token",
        f"--gateway-url={relay.url}",
        f"--GatewayClient.auth_token={TOKEN}",
    ) as server:
        yield server.url


def _has_jupyter_server() -> bool:
    try:
        import jupyter_server  # noqa: F401
    except ImportError:
        return False
    return True


def test_jupyter_server_as_a_gateway_client_serves_the_scenario(
    relay: Relay, gateway_client: str
) -> None:
    """Jupyter Server relays the same scenario to the relay's kernels (legacy: its gateway hop speaks only
    that, and does not carry binary buffers, so the comm step is left out; the relay carries them, above)."""
    before = {kernel["id"] for kernel in relay.kernels()}
    steps = {
        step["step"]: step
        for step in scenario(gateway_client, "gateway-client-token", "legacy", "comm_buffer")
    }
    assert steps["comm_buffer"].get("skipped") is True
    started = steps["start"]["id"]
    assert started not in before  # it ran on a relay kernel, now shut down through the gateway
    assert started not in {kernel["id"] for kernel in relay.kernels()}

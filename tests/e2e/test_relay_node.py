"""The relay with Node's stock socket.io-client 4.x, and the seed README's examples verbatim."""

from __future__ import annotations

import json
import os
import socket
import subprocess

import pytest

from tests.conftest import Relay
from tests.e2e.test_relay_channels import BUFFER_DISPLAY, ECHO_COMM_TARGET
from tests.support import NODE_DIR, ensure_node_modules, node_available

pytestmark = pytest.mark.skipif(not node_available(), reason="node and npm are required")


def run_relay_script(
    script: str, *args: str, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    ensure_node_modules()
    return subprocess.run(
        ["node", str(NODE_DIR / "relay" / script), *args],
        cwd=NODE_DIR,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={
            **os.environ,
            "BUFFER_DISPLAY_CODE": BUFFER_DISPLAY,
            "ECHO_COMM_CODE": ECHO_COMM_TARGET,
        },
    )


@pytest.mark.parametrize("transports", ["polling,websocket", "websocket"])
def test_node_client_round_trip(relay: Relay, kernel_id: str, transports: str) -> None:
    """socket.io-client 4.x does kernel_info, execute, stdin, interrupt and buffers both ways."""
    result = run_relay_script("roundtrip.js", relay.url, kernel_id, transports)
    assert result.returncode == 0, result.stderr + relay.output()[-3000:]
    observed = json.loads(result.stdout)
    assert observed["engine_sids"] == 1, "the four namespaces share one Engine.IO connection"
    assert observed["kernel_info"] == {
        "type": "kernel_info_reply",
        "status": "ok",
        "language": "python",
    }
    assert observed["execute"] == {"reply": "ok", "result": ["2"]}
    assert observed["stdin"]["prompt"] == "name? "
    assert "hi node" in observed["stdin"]["output"]
    assert observed["interrupt"] == {"reply": "interrupt_reply", "ename": "KeyboardInterrupt"}
    assert observed["display_buffers"] == [[0, 1, 2, 255], list(range(256)) * 4], json.dumps(
        observed.get("display_debug")
    )
    assert observed["echoed_buffers"] == observed["sent_buffers"]
    assert observed["errors"] == []


def _port_free(port: int) -> bool:
    for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            try:
                probe.bind((host, port))
            except OSError as error:
                if family == socket.AF_INET6 and error.errno == 99:  # no IPv6 loopback here
                    continue
                return False
    return True


def test_seed_readme_examples_verbatim(tmp_path_factory: pytest.TempPathFactory) -> None:
    """curl localhost:3000/spawn/python3, io.connect('http://localhost:3000/shell/<id>'), curl shutdown."""
    if not _port_free(3000):
        pytest.skip("port 3000 is taken on this machine; the seed's examples need it")
    relay = Relay(tmp_path_factory.mktemp("runtime"), port=3000)
    try:
        spawned = subprocess.run(
            ["curl", "-s", "localhost:3000/spawn/python3"],
            capture_output=True,
            text=True,
            timeout=90,
        )
        kernel_id = json.loads(spawned.stdout)["id"]
        result = run_relay_script("seed_example.js", kernel_id)
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout) == {"type": "kernel_info_reply", "status": "ok"}
        stopped = subprocess.run(
            ["curl", "-s", f"localhost:3000/shutdown/{kernel_id}"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert json.loads(stopped.stdout)["id"] == kernel_id
    finally:
        relay.stop()

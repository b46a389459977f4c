"""Kernel round trips through the real relay with socket.io-client 1.7.4, 2.5.0 and 4.x, over polling
with upgrade and WebSocket only."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.conftest import Relay
from tests.support import NODE_DIR, node_available
from tests.test_legacy_clients import GENERATIONS, ensure_legacy_clients

pytestmark = [
    pytest.mark.timeout(240),
    pytest.mark.skipif(not node_available(), reason="node and npm are required"),
]


@pytest.mark.parametrize("transports", ["polling,websocket", "websocket"])
@pytest.mark.parametrize("generation", sorted(GENERATIONS))
def test_kernel_round_trip(relay: Relay, kernel_id: str, generation: str, transports: str) -> None:
    """kernel_info, execute with stream and result output, and input() over stdin all work."""
    ensure_legacy_clients()
    done = subprocess.run(
        [
            "node",
            str(NODE_DIR / "legacy" / "roundtrip.js"),
            generation,
            relay.url,
            kernel_id,
            transports,
        ],
        cwd=NODE_DIR,
        capture_output=True,
        text=True,
        timeout=150,
    )
    assert done.returncode == 0, done.stderr + relay.output()[-3000:]
    observed = json.loads(done.stdout)
    assert observed["packageVersion"].startswith(GENERATIONS[generation])
    assert observed["engine_sids"] == 1, "the channels share one Engine.IO connection"
    assert observed["kernel_info"] == {
        "type": "kernel_info_reply",
        "status": "ok",
        "language": "python",
    }
    assert observed["execute"] == {
        "reply": "ok",
        "stream": "out 42\n",
        "result": ["'é🎉é🎉'"],
    }
    assert observed["stdin"]["prompt"] == "name? "
    assert f"hi node {generation}" in observed["stdin"]["output"]
    assert observed["transport"] == "websocket"
    assert observed["errors"] == []

"""socket.io-client 1.7.4 and 2.5.0 (socket.io protocol 4 over Engine.IO 3) and 4.x side by side against
tests/servers/socketio_app.py, over polling with upgrade and WebSocket only."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support import NODE_DIR, ROOT, ServerProcess, free_port, node_available, running

pytestmark = [
    pytest.mark.timeout(180),
    pytest.mark.skipif(not node_available(), reason="node and npm are needed"),
]

GENERATIONS = {"1": "1.7.4", "2": "2.5.0", "4": "4.8."}
MODES = ["polling", "websocket"]


def ensure_legacy_clients() -> None:
    """Install tests/node's lock (with the socket.io-client-1/-2 aliases) unless it is in place."""
    modules = NODE_DIR / "node_modules"
    wanted = [
        modules / ".package-lock.json",
        modules / "socket.io-client-1",
        modules / "socket.io-client-2",
    ]
    if not all(path.exists() for path in wanted):
        subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=NODE_DIR, check=True
        )


def run_legacy_script(script: str, *args: str, timeout: float = 90) -> dict[str, Any]:
    """Run ``tests/node/legacy/<script>`` and return the JSON object it printed last."""
    ensure_legacy_clients()
    done = subprocess.run(
        ["node", str(NODE_DIR / "legacy" / script), *args],
        cwd=NODE_DIR,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    lines = done.stdout.strip().splitlines()
    assert done.returncode == 0 and lines, f"{script} failed:\n{done.stdout}\n{done.stderr}"
    result: dict[str, Any] = json.loads(lines[-1])
    assert "error" not in result, result["error"]
    return result


@pytest.fixture(scope="module")
def app() -> Iterator[ServerProcess]:
    port = free_port()
    argv = [
        sys.executable,
        str(ROOT / "tests" / "servers" / "socketio_app.py"),
        "--port",
        str(port),
    ]
    with running(argv, port) as server:
        yield server


def b(*values: int) -> dict[str, list[int]]:
    """How the Node scripts show binary values."""
    return {"$bytes": list(values)}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("generation", sorted(GENERATIONS))
def test_client_generation_against_test_app(app: ServerProcess, generation: str, mode: str) -> None:
    """Each client generation joins / and a dynamic namespace with auth, exchanges events, acks and binary both ways, is refused, and disconnects both ways."""
    room = uuid.uuid4().hex[:8]
    result = run_legacy_script("sio_app.js", generation, app.url, mode, room)
    assert result["packageVersion"].startswith(GENERATIONS[generation])
    assert result["mainWelcome"]["namespace"] == "/"
    assert result["welcome"]["namespace"] == f"/dyn/{room}"
    assert result["welcome"]["params"] == {"room": room}
    assert result["welcome"]["auth"] == {"user": "node"}
    assert result["sharedConnection"] is True
    if generation == "4":
        assert result["sidMatches"] is True
        assert result["refused"] == {"message": "forbidden room", "data": {"room": "forbidden"}}
    else:
        # socket.io 2 ids (<namespace>#<engine sid>); 1.x names every socket by the engine sid.
        engine_sid = result["mainWelcome"]["sid"]
        assert result["welcome"]["sid"] == f"/dyn/{room}#{engine_sid}"
        assert result["sidMatches"] is (generation == "2")
        assert result["refused"] == {"room": "forbidden"}, "ERROR packet carries the refusal data"
    args = [1, "é 🎉", {"bin": b(1, 2)}, b(3)]
    assert result["ack"] == args
    assert result["echoBack"] == args
    assert result["question"] == [1, b(0)]
    assert result["answer"] == ["yes", b(9, 8), {"nested": [b(7)]}]
    assert result["transport"] == "websocket"
    assert result["leftReason"] == ["client namespace disconnect"]
    assert result["kickReason"] == "io server disconnect"
    assert result["mainStillConnected"] is True
    assert result["kickSeen"] == ["server namespace disconnect"]

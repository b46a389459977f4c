"""Live interop: the Node socket.io-client 4.x against the conformance example and the test app."""

from __future__ import annotations

import json
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support import (
    ROOT,
    ServerProcess,
    conformance_server_argv,
    free_port,
    node_available,
    run_node,
    running,
)

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(not node_available(), reason="node and npm are needed"),
]

MODES = ["polling", "websocket"]


@pytest.fixture(scope="module")
def conformance() -> Iterator[ServerProcess]:
    port = free_port()
    with running(conformance_server_argv(port), port) as server:
        yield server


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


def node_result(script: str, *args: str) -> dict[str, Any]:
    """Run a Node script and return the JSON object it printed last, failing with its output."""
    done = run_node(script, *args)
    lines = done.stdout.strip().splitlines()
    assert done.returncode == 0 and lines, f"{script} failed:\n{done.stdout}\n{done.stderr}"
    result: dict[str, Any] = json.loads(lines[-1])
    assert "error" not in result, result["error"]
    return result


def b(*values: int) -> dict[str, list[int]]:
    """How the Node scripts show binary values."""
    return {"$bytes": list(values)}


@pytest.mark.parametrize("mode", MODES)
def test_node_client_against_conformance_server(conformance: ServerProcess, mode: str) -> None:
    """socket.io-client joins two namespaces on one connection; events, acks, binary, leave."""
    result = node_result("sio_conformance.js", conformance.url, mode)
    assert result["auth"] == {"token": "node"}
    assert result["customAuth"] == {"token": "custom"}
    assert result["sharedConnection"] is True
    assert result["messageBack"] == [1, "2", {"bin": b(1, 2)}, b(3)]
    assert result["ack"] == ["é", b(9), [b()]]
    assert result["transport"] == "websocket"
    assert result["afterCustomLeft"] == ["still here"]


@pytest.mark.parametrize("mode", MODES)
def test_node_client_against_test_app(app: ServerProcess, mode: str) -> None:
    """Dynamic namespace, refusal with data, server call with binary ack, disconnects both ways."""
    room = uuid.uuid4().hex[:8]
    result = node_result("sio_app.js", app.url, mode, room)
    assert result["welcome"]["namespace"] == f"/dyn/{room}"
    assert result["welcome"]["params"] == {"room": room}
    assert result["welcome"]["auth"] == {"user": "node"}
    assert result["sidMatches"] is True
    assert result["refused"] == {"message": "forbidden room", "data": {"room": "forbidden"}}
    assert result["question"] == [1, b(0)]
    assert result["answer"] == ["yes", b(9, 8), {"nested": [b(7)]}]
    assert result["leftReason"] == ["client namespace disconnect"]
    assert result["kickReason"] == "io server disconnect"
    assert result["mainStillConnected"] is True
    assert result["kickSeen"] == ["server namespace disconnect"]

"""
The legacy kernel WebSocket as jupyter_server's gateway client speaks it, against a real relay: messages
without ``channel`` and with numeric dates are heard; every frame carries Jupyter Server's top-level keys;
what is refused is told on stderr.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import websocket

from tests.conftest import Relay, kernel_fixture, relay_fixture

relay = relay_fixture()
kernel = kernel_fixture("relay")


def _connect(relay: Relay, kernel_id: str) -> Any:
    url = f"{relay.url.replace('http', 'ws', 1)}/api/kernels/{kernel_id}/channels"
    return websocket.create_connection(url, timeout=30)


def _until(ws: Any, found: Any, timeout: float = 30.0) -> list[dict[str, Any]]:
    received: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        message = json.loads(ws.recv())
        received.append(message)
        if found(message):
            return received
    raise AssertionError(f"not found; received {[m.get('msg_type') for m in received]}")


def test_a_gateway_clients_request_is_answered_with_jupyter_servers_keys(
    relay: Relay, kernel: str
) -> None:
    """No channel and a float date: the execute_request runs; each frame has msg_id, msg_type, buffers."""
    ws = _connect(relay, kernel)
    try:
        msg_id = uuid.uuid4().hex
        header = {
            "msg_id": msg_id,
            "msg_type": "execute_request",
            "session": "s",
            "username": "u",
            "date": time.time(),
            "version": "5.3",
        }
        ws.send(
            json.dumps(
                {
                    "header": header,
                    "msg_id": msg_id,
                    "msg_type": "execute_request",
                    "parent_header": {},
                    "metadata": {},
                    "content": {"code": "6 * 7"},
                }
            )
        )
        received = _until(
            ws, lambda m: m["channel"] == "shell" and m["parent_header"].get("msg_id") == msg_id
        )
        for message in received:
            assert message["msg_id"] == message["header"]["msg_id"]
            assert message["msg_type"] == message["header"]["msg_type"]
            assert message["buffers"] == []
        assert received[-1]["content"]["status"] == "ok"
    finally:
        ws.close()


def test_a_refused_legacy_frame_is_told_on_stderr(relay: Relay, kernel: str) -> None:
    """A frame whose channel is no string is refused with an iopub stderr stream, never silently."""
    ws = _connect(relay, kernel)
    try:
        ws.send(json.dumps({"header": {"msg_type": "kernel_info_request"}, "channel": 5}))
        received = _until(
            ws, lambda m: m["msg_type"] == "stream" and "malformed frame" in m["content"]["text"]
        )
        assert received[-1]["content"]["name"] == "stderr"
    finally:
        ws.close()

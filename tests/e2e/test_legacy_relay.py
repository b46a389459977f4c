"""Kernel round trips through the real relay with socket.io-client 1.7.4, 2.5.0 and 4.x, over polling
with upgrade and WebSocket only."""

from __future__ import annotations

import json
import subprocess

import pytest
import requests

from tests.conftest import Relay
from tests.e2e.test_legacy_clients import GENERATIONS, ensure_legacy_clients
from tests.support import NODE_DIR, node_available

pytestmark = [
    pytest.mark.timeout(240),
    pytest.mark.skipif(not node_available(), reason="node and npm are required"),
]


@pytest.mark.parametrize("transports", ["polling,websocket", "websocket", "polling"])
@pytest.mark.parametrize("generation", sorted(GENERATIONS))
def test_kernel_round_trip(relay: Relay, kernel_id: str, generation: str, transports: str) -> None:
    """kernel_info, execute with stream and result output, and input() over stdin all work, with non-ASCII
    text both ways."""
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
        "stream": "out 42 ü\n",
        "result": ["'é🎉é🎉'"],
    }
    assert observed["stdin"]["prompt"] == "name? "
    assert f"hi node {generation}" in observed["stdin"]["output"]
    assert observed["transport"] == transports.split(",")[-1]
    assert observed["errors"] == []


def test_no_eio3_option_refuses_protocol_3(tmp_path_factory: pytest.TempPathFactory) -> None:
    """twist kernel-relay --no-eio3 refuses EIO=3 handshakes and still serves EIO=4."""
    relay = Relay(tmp_path_factory.mktemp("runtime"), "--no-eio3")
    try:
        old = requests.get(f"{relay.url}/socket.io/?EIO=3&transport=polling", timeout=30)
        assert old.status_code == 400 and old.json()["code"] == 5
        new = requests.get(f"{relay.url}/socket.io/?EIO=4&transport=polling", timeout=30)
        assert new.status_code == 200 and new.text.startswith("0{")
    finally:
        relay.stop()


def test_eio3_is_served_by_default(relay: Relay) -> None:
    """Without options the relay answers an EIO=3 handshake with a length-prefixed open packet and "0"."""
    response = requests.get(f"{relay.url}/socket.io/?EIO=3&transport=polling&b64=1", timeout=30)
    assert response.status_code == 200
    length, _, rest = response.text.partition(":")
    opened = rest[: int(length)]
    assert opened.startswith("0{") and "maxPayload" not in opened
    sid = json.loads(opened[1:])["sid"]
    text = response.text
    if "2:40" not in text:
        # "0" for / was queued after the open packet's response: it is what the next poll gets.
        url = f"{relay.url}/socket.io/?EIO=3&transport=polling&b64=1&sid={sid}"
        text += requests.get(url, timeout=30).text
    assert "2:40" in text, "the implicit connection to / is announced"

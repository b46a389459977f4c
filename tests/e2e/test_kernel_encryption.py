"""
CurveZMQ on the kernels' channels: with the defaults, a local eavesdropper's plain SUB socket on a relay
kernel's ports receives nothing while relay clients get the output; with encryption disabled, it reads it.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
import requests
import zmq

from tests.conftest import Relay, relay_fixture
from tests.jupyter_ws import JupyterWS

pytestmark = pytest.mark.timeout(180)

FIXTURES = Path(__file__).resolve().parent.parent / "provisioner"
#: The test kernelspecs: relay-test-provisioned is ipykernel whose kernelspec declares no Curve support.
TEST_SPECS = {
    "JUPYTER_PATH": str(FIXTURES / "jupyter"),
    "PYTHONPATH": os.pathsep.join(
        filter(None, [str(FIXTURES / "site"), os.environ.get("PYTHONPATH", "")])
    ),
}

# The eavesdropper listens on TCP ports: the kernels keep the host's network (a sandboxed kernel has none).
encrypted = relay_fixture("--kernel-network", "host", env=TEST_SPECS)
plain = relay_fixture("--kernel-encryption", "disabled", "--kernel-network", "host")
required = relay_fixture("--kernel-encryption", "required", env=TEST_SPECS)

PORTS = ("shell_port", "iopub_port", "stdin_port", "control_port", "hb_port")


def start(relay: Relay, name: str = "python3") -> dict[str, object]:
    response = requests.post(f"{relay.url}/api/kernels", json={"name": name}, timeout=90)
    assert response.status_code == 201, response.text
    model: dict[str, object] = response.json()
    return model


def eavesdrop(relay: Relay, kernel_id: str, code: str) -> tuple[list[bytes], str]:
    """Plain SUB sockets on every TCP port of the kernel while a relay client runs ``code``."""
    (path,) = [f for f in relay.connection_files() if kernel_id in f.name]
    info = json.loads(path.read_text())
    context = zmq.Context()
    subscribers = []
    for name in PORTS:
        sub = context.socket(zmq.SUB)
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        sub.setsockopt(zmq.LINGER, 0)
        sub.connect(f"tcp://{info['ip']}:{info[name]}")
        subscribers.append(sub)
    time.sleep(0.5)  # let the subscriptions reach the kernel before it speaks
    client = JupyterWS(relay.url, kernel_id)
    try:
        msg_id, _ = client.execute(code)
        output = "".join(m["content"]["text"] for m in client.iopub_for(msg_id, "stream"))
        heard: list[bytes] = []
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline:
            for sub in subscribers:
                while sub.poll(0):
                    heard.extend(sub.recv_multipart())
            time.sleep(0.05)
        return heard, output
    finally:
        client.close()
        for sub in subscribers:
            sub.close()
        context.term()


def test_a_local_eavesdropper_reads_nothing_of_an_encrypted_kernel(encrypted: Relay) -> None:
    model = start(encrypted)
    try:
        assert model["encrypted"] is True
        heard, output = eavesdrop(encrypted, str(model["id"]), "print('secret-' + 'output')")
        assert output == "secret-output\n"
        assert heard == [] and not any(b"secret-output" in frame for frame in heard)
    finally:
        requests.delete(f"{encrypted.url}/api/kernels/{model['id']}", timeout=60)


def test_without_encryption_the_same_eavesdropper_reads_the_output(plain: Relay) -> None:
    model = start(plain)
    try:
        assert model["encrypted"] is False
        heard, output = eavesdrop(plain, str(model["id"]), "print('secret-' + 'output')")
        assert output == "secret-output\n"
        assert any(b"secret-output" in frame for frame in heard)
    finally:
        requests.delete(f"{plain.url}/api/kernels/{model['id']}", timeout=60)


def test_required_encryption_runs_a_kernel_that_supports_it(required: Relay) -> None:
    """ipykernel declares Curve support, so it starts under --kernel-encryption required, encrypted."""
    model = start(required)
    try:
        assert model["encrypted"] is True
    finally:
        requests.delete(f"{required.url}/api/kernels/{model['id']}", timeout=60)


def test_auto_runs_a_kernelspec_without_curve_unencrypted_and_says_so(encrypted: Relay) -> None:
    model = start(encrypted, "relay-test-provisioned")
    try:
        assert model["encrypted"] is False
        assert (
            "runs unencrypted: its kernelspec does not declare CurveZMQ support"
            in encrypted.output()
        )
    finally:
        requests.delete(f"{encrypted.url}/api/kernels/{model['id']}", timeout=60)


def test_required_refuses_a_kernelspec_without_curve_with_a_clear_error(required: Relay) -> None:
    response = requests.post(
        f"{required.url}/api/kernels", json={"name": "relay-test-provisioned"}, timeout=90
    )
    assert response.status_code == 500
    assert "does not declare CurveZMQ support" in response.json()["message"]
    seed = requests.get(f"{required.url}/spawn/relay-test-provisioned", timeout=90)
    assert seed.status_code == 500 and "--kernel-encryption" in seed.json()["error"]


# Unsandboxed: a sandboxed kernel's sockets are in its own directory (tests/e2e/test_sandbox.py).
ipc = relay_fixture("--kernel-transport", "ipc", "--kernel-sandbox", "off")


def test_the_ipc_transport_puts_the_channels_on_sockets_in_the_private_directory(
    ipc: Relay,
) -> None:
    """The channels are UNIX sockets beside the connection file, in the 0700 directory, and they carry the session."""
    model = start(ipc)
    kernel_id = str(model["id"])
    try:
        (path,) = [f for f in ipc.connection_files() if kernel_id in f.name]
        info = json.loads(path.read_text())
        assert info["transport"] == "ipc" and Path(info["ip"]).parent == path.parent
        assert path.parent.stat().st_mode & 0o777 == 0o700
        sockets = sorted(p.name for p in path.parent.iterdir() if p.is_socket())
        assert len(sockets) == 5 and all(s.startswith(kernel_id[:8]) for s in sockets)
        client = JupyterWS(ipc.url, kernel_id)
        try:
            msg_id, reply = client.execute("print('over ipc')")
            assert reply["content"]["status"] == "ok"
            assert client.iopub_for(msg_id, "stream")[0]["content"]["text"] == "over ipc\n"
        finally:
            client.close()
    finally:
        requests.delete(f"{ipc.url}/api/kernels/{kernel_id}", timeout=60)
    assert not [p for p in path.parent.iterdir() if p.name.startswith(kernel_id[:8])]

"""A relay deployed behind a proxy path (--base-url), with a kernelspec allow-list, and the metrics it exports."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest
import requests
import socketio

from tests.conftest import Relay, relay_runtime_dir
from tests.jupyter_ws import JupyterWS
from tests.support import jupyter_server

TOKEN = "deploy-token"


class PrefixedRelay(Relay):
    def kernels_under(self, base: str) -> list[dict[str, Any]]:
        """GET <base>/api/kernels with the relay's token."""
        response = requests.get(f"{self.url}{base}/api/kernels", headers=self.headers, timeout=10)
        listed: list[dict[str, Any]] = response.json()
        return listed


@pytest.fixture(scope="module")
def prefixed(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A relay at /kernels/ that allows python3 only (another kernelspec, ``other``, is installed)."""
    jupyter = tmp_path_factory.mktemp("jupyter")
    spec = jupyter / "kernels" / "other"
    spec.mkdir(parents=True)
    spec.joinpath("kernel.json").write_text(
        json.dumps({"argv": ["true"], "display_name": "Other", "language": "none"})
    )
    relay = PrefixedRelay(
        relay_runtime_dir(tmp_path_factory),
        "--base-url",
        "/kernels/",
        "--allow-kernelspec",
        "python3",
        token=TOKEN,
        env={"JUPYTER_PATH": str(jupyter)},
    )
    try:
        yield relay
    finally:
        relay.stop()


def test_the_seed_routes_and_the_jupyter_api_are_served_under_the_base_url(
    prefixed: PrefixedRelay,
) -> None:
    """/kernels/spawn, /kernels/api/kernels and /kernels/ (the demo) answer; the same paths without it are 404."""
    base = f"{prefixed.url}/kernels"
    spawned = requests.get(f"{base}/spawn/python3", headers=prefixed.headers, timeout=90)
    assert spawned.status_code == 200, spawned.text
    kernel_id = spawned.json()["id"]
    try:
        listed = requests.get(f"{base}/api/kernels", headers=prefixed.headers, timeout=10)
        assert [kernel["id"] for kernel in listed.json()] == [kernel_id]
        started = requests.post(
            f"{base}/api/kernels", json={}, headers=prefixed.headers, timeout=90
        )
        assert started.status_code == 201, started.text
        assert started.headers["Location"] == f"/kernels/api/kernels/{started.json()['id']}"
        requests.delete(
            f"{base}/api/kernels/{started.json()['id']}", headers=prefixed.headers, timeout=30
        )
        assert requests.get(f"{base}/", timeout=10).text.startswith("<!doctype html>")
        assert requests.get(f"{base}/api/health/ready", timeout=10).status_code == 200
        moved = requests.get(base, allow_redirects=False, timeout=10)
        assert (moved.status_code, moved.headers["Location"]) == (302, "/kernels/")
        for outside in ("/api/kernels", "/spawn/python3", "/socket.io/?EIO=4&transport=polling"):
            assert (
                requests.get(
                    prefixed.url + outside, headers=prefixed.headers, timeout=10
                ).status_code
                == 404
            )
    finally:
        requests.get(f"{base}/shutdown/{kernel_id}", headers=prefixed.headers, timeout=30)


def test_both_websocket_paths_work_under_the_base_url(prefixed: PrefixedRelay) -> None:
    """socket.io at /kernels/socket.io/ and the channels at /kernels/api/kernels/<id>/channels reach the kernel."""
    base = f"{prefixed.url}/kernels"
    kernel_id = requests.get(f"{base}/spawn/python3", headers=prefixed.headers, timeout=90).json()[
        "id"
    ]
    try:
        ws = JupyterWS(base, kernel_id, token=TOKEN)
        try:
            ws.send("shell", "kernel_info_request", {})
            reply = ws.recv(30)
            while reply is not None and reply["header"]["msg_type"] != "kernel_info_reply":
                reply = ws.recv(30)
            assert reply is not None and reply["content"]["status"] == "ok"
        finally:
            ws.close()
        replies: list[dict[str, Any]] = []
        got = threading.Event()
        client = socketio.Client(reconnection=False)
        namespace = f"/shell/{kernel_id}"

        def on_msg(message: dict[str, Any]) -> None:
            replies.append(message)
            got.set()

        client.on("msg", on_msg, namespace=namespace)
        client.connect(
            prefixed.url,
            namespaces=[namespace],
            socketio_path="/kernels/socket.io",
            auth={"token": TOKEN},
            wait_timeout=10,
        )
        try:
            client.emit(
                "msg",
                {
                    "header": {"msg_id": "m1", "msg_type": "kernel_info_request", "session": "s"},
                    "content": {},
                },
                namespace=namespace,
            )
            assert got.wait(30), "no reply over socket.io under the base URL"
            assert replies[0]["header"]["msg_type"] == "kernel_info_reply"
        finally:
            client.disconnect()
    finally:
        requests.get(f"{base}/shutdown/{kernel_id}", headers=prefixed.headers, timeout=30)


def test_a_kernelspec_outside_the_allow_list_is_refused_with_403_on_both_apis(
    prefixed: PrefixedRelay,
) -> None:
    """``other`` is installed but not allowed: not listed; /spawn 403 {"error"}; POST /api/kernels and /api/sessions 403."""
    base = f"{prefixed.url}/kernels"
    specs = requests.get(f"{base}/api/kernelspecs", headers=prefixed.headers, timeout=10).json()
    assert set(specs["kernelspecs"]) == {"python3"} and specs["default"] == "python3"
    seed = requests.get(f"{base}/spawn/other", headers=prefixed.headers, timeout=10)
    assert seed.status_code == 403 and "not allowed" in seed.json()["error"]
    jupyter = requests.post(
        f"{base}/api/kernels", json={"name": "other"}, headers=prefixed.headers, timeout=10
    )
    assert jupyter.status_code == 403 and "not allowed" in jupyter.json()["message"]
    session = requests.post(
        f"{base}/api/sessions",
        json={"path": "a.ipynb", "type": "notebook", "name": "", "kernel": {"name": "other"}},
        headers=prefixed.headers,
        timeout=10,
    )
    assert session.status_code == 403 and "not allowed" in session.json()["message"]
    assert requests.get(f"{base}/api/kernels", headers=prefixed.headers, timeout=10).json() == []


def test_metrics_have_the_process_python_and_request_durations(prefixed: PrefixedRelay) -> None:
    """/metrics has process_*, python_info and http_request_duration_seconds by route template."""
    base = f"{prefixed.url}/kernels"
    requests.get(f"{base}/api/kernels", headers=prefixed.headers, timeout=10)
    text = requests.get(f"{base}/metrics", headers=prefixed.headers, timeout=10).text
    assert "process_resident_memory_bytes" in text and "python_info{" in text
    assert (
        'http_request_duration_seconds_count{handler="/api/kernels",method="GET",status_code="200"}'
        in text
    )
    assert "kernel_relay_kernels_running" in text


def _reply(ws: JupyterWS, msg_type: str) -> dict[str, Any]:
    message = ws.recv(60)
    while message is not None and message["header"]["msg_type"] != msg_type:
        message = ws.recv(60)
    assert message is not None, f"no {msg_type}"
    return message


def test_jupyter_server_with_a_gateway_url_under_the_base_url(
    prefixed: PrefixedRelay, tmp_path: Path
) -> None:
    """Jupyter Server 2 with --gateway-url http://host/kernels/ starts, runs and stops a relay kernel."""
    pytest.importorskip("jupyter_server")
    headers = {"Authorization": "token gw"}
    with jupyter_server(
        tmp_path,
        "gw",
        f"--gateway-url={prefixed.url}/kernels/",
        f"--GatewayClient.auth_token={TOKEN}",
    ) as server:
        specs = requests.get(f"{server.url}/api/kernelspecs", headers=headers, timeout=30)
        assert set(specs.json()["kernelspecs"]) == {"python3"}, specs.text
        started = requests.post(f"{server.url}/api/kernels", json={}, headers=headers, timeout=90)
        assert started.status_code == 201, started.text
        kernel_id = started.json()["id"]
        assert kernel_id in {kernel["id"] for kernel in prefixed.kernels_under("/kernels")}
        ws = JupyterWS(server.url, kernel_id, token="gw", protocol="legacy")
        try:
            ws.send("shell", "execute_request", {"code": "6 * 7", "silent": False})
            result = _reply(ws, "execute_result")
            assert result["content"]["data"]["text/plain"] == "42"
        finally:
            ws.close()
        stopped = requests.delete(
            f"{server.url}/api/kernels/{kernel_id}", headers=headers, timeout=60
        )
        assert stopped.status_code == 204
    assert kernel_id not in {kernel["id"] for kernel in prefixed.kernels_under("/kernels")}


def test_jupyterlab_services_runs_its_scenario_under_the_base_url(prefixed: PrefixedRelay) -> None:
    """@jupyterlab/services 7 (Node), given http://host/kernels/ as its base URL, runs the whole scenario."""
    from tests.e2e.test_interop_jupyterlab_services import scenario

    steps = {step["step"]: step for step in scenario(f"{prefixed.url}/kernels/", TOKEN, "v1")}
    assert steps["execute"]["result"] == "42"

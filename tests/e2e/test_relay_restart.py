"""Interrupt and restart through the REST API, with real kernels and python-socketio clients."""

from __future__ import annotations

import threading

import psutil
import pytest
import requests

from tests.conftest import Relay
from tests.kernel_client import RelayKernelClient

pytestmark = pytest.mark.timeout(240)


def kernel_pid(relay: Relay, kernel_id: str) -> int:
    for child in psutil.Process(relay.process.pid).children(recursive=True):
        try:
            if kernel_id in " ".join(child.cmdline()) and child.status() != psutil.STATUS_ZOMBIE:
                return child.pid
        except psutil.Error:
            continue
    raise AssertionError(f"no process for kernel {kernel_id}")


def post(relay: Relay, path: str) -> requests.Response:
    return requests.post(f"{relay.url}{path}", headers=relay.headers, timeout=120)


def relay_statuses(client: RelayKernelClient) -> list[str]:
    """execution_state of the iopub status messages the relay made (username kernel-relay)."""
    return [
        m["content"]["execution_state"]
        for m in client.received["iopub"]
        if m["header"]["msg_type"] == "status"
        and m["header"].get("username") == "kernel-relay"
        and "state" not in m["metadata"].get("kernel_relay", {})  # the state told on joining
    ]


def statuses(client: RelayKernelClient) -> list[str]:
    """execution_state of every iopub status message the client received, in order."""
    return [
        m["content"]["execution_state"]
        for m in client.received["iopub"]
        if m["header"]["msg_type"] == "status"
    ]


def test_interrupt_stops_a_running_cell(relay: Relay, kernel_id: str) -> None:
    """POST /api/kernels/<id>/interrupt ends a running cell with KeyboardInterrupt."""
    client = RelayKernelClient(relay.url, kernel_id, ("shell", "iopub"))
    try:
        msg_id = client.start_sleeping_cell()
        response = post(relay, f"/api/kernels/{kernel_id}/interrupt")
        assert response.status_code == 204 and response.content == b""
        reply = client.reply_to("shell", msg_id, timeout=60)
        assert reply["content"]["status"] == "error"
        assert reply["content"]["ename"] == "KeyboardInterrupt"
    finally:
        client.close()


def test_restart_keeps_clients_and_starts_a_fresh_process(relay: Relay) -> None:
    """A restart announces restarting/starting on iopub, replaces the process, and the same connection
    keeps working with a fresh namespace; no dead status, no disconnect."""
    kernel_id = relay.spawn()
    client = RelayKernelClient(relay.url, kernel_id, ("shell", "iopub"))
    try:
        _, reply = client.execute("x = 41")
        assert reply["content"]["status"] == "ok"
        before = kernel_pid(relay, kernel_id)
        response = post(relay, f"/api/kernels/{kernel_id}/restart")
        assert response.status_code == 200, response.text
        model = response.json()
        assert (model["id"], model["name"], model["execution_state"]) == (
            kernel_id,
            "python3",
            "idle",
        )
        client.wait_for(lambda: len(relay_statuses(client)) >= 3, what="the relay's statuses")
        assert relay_statuses(client) == ["restarting", "starting", "idle"]
        assert kernel_pid(relay, kernel_id) != before
        _, reply = client.execute("print(x)", timeout=60)
        assert reply["content"]["status"] == "error"
        assert reply["content"]["ename"] == "NameError"
        _, reply = client.execute("x = 1 + 1")
        assert reply["content"]["status"] == "ok"
        assert client.disconnected == []
        assert "dead" not in statuses(client)
        (entry,) = [k for k in relay.kernels() if k["id"] == kernel_id]
        assert entry["execution_state"] == "idle"
    finally:
        client.close()
        relay.shutdown(kernel_id)


def test_restart_of_a_busy_kernel_and_concurrent_restarts(relay: Relay) -> None:
    """Restarting a kernel in the middle of a long cell works, and two restarts at once share one."""
    kernel_id = relay.spawn()
    client = RelayKernelClient(relay.url, kernel_id, ("shell", "iopub"))
    try:
        client.start_sleeping_cell()
        answers: list[requests.Response] = []
        threads = [
            threading.Thread(
                target=lambda: answers.append(post(relay, f"/api/kernels/{kernel_id}/restart"))
            )
            for _ in range(2)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(150)
        assert [a.status_code for a in answers] == [200, 200]
        assert relay_statuses(client).count("restarting") == 1
        _, reply = client.execute("21 * 2", timeout=60)
        assert reply["content"]["status"] == "ok"
    finally:
        client.close()
        relay.shutdown(kernel_id)


def test_unknown_kernels_and_wrong_methods_are_refused(relay: Relay) -> None:
    """Unknown ids answer 404 JSON; GET on the POST routes answers 405 naming POST."""
    for action in ("interrupt", "restart"):
        response = post(relay, f"/api/kernels/no-such-kernel/{action}")
        assert response.status_code == 404
        assert "no-such-kernel" in response.json()["message"]
        wrong = requests.get(f"{relay.url}/api/kernels/no-such-kernel/{action}", timeout=10)
        assert wrong.status_code == 405
        assert "POST" in wrong.headers["Allow"]

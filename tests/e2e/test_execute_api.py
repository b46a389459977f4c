"""
The execute API (#33) with real kernels: jupyter-server-nbmodel's contract, run by one script against the
relay and against Jupyter Server with nbmodel (same statuses, same outputs); long-poll; requests that outlive
their client; every execute_request readable by its msg_id; read-only kernel tokens.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from tests.conftest import Relay, kernel_fixture, relay_fixture
from tests.jupyter_ws import JupyterWS
from tests.kernel_client import RelayKernelClient
from tests.support import jupyter_server

pytestmark = pytest.mark.timeout(240)

TOKEN = "execute-api-token-0123456789abcdef"
relay = relay_fixture(token=TOKEN)
kernel_id = kernel_fixture("relay")
NBMODEL_TOKEN = "execute-api-nbmodel-token-0123456789"

#: The contract's cases: code, and what answers the input() it asks for (None: none).
CASES: dict[str, tuple[str, str | None]] = {
    "stream": ("print('hello'); import sys; print('oops', file=sys.stderr)", None),
    "display_data": ("from IPython.display import display, HTML; display(HTML('<b>hi</b>'))", None),
    "execute_result": ("6 * 7", None),
    "error": ("1 / 0", None),
    "input": ("name = input('who? '); print('hi ' + name)", "ada"),
}


def _headers(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def submit(base: str, kernel: str, code: str, token: str) -> str:
    """POST the code; the request's URL from ``Location``."""
    response = requests.post(
        f"{base}/api/kernels/{kernel}/execute",
        json={"code": code},
        headers=_headers(token),
        timeout=30,
    )
    assert response.status_code == 202, response.text
    location: str = response.headers["Location"]
    assert location.startswith(f"/api/kernels/{kernel}/requests/")
    return location


def poll(base: str, location: str, token: str, answer: str | None) -> tuple[int, dict[str, Any]]:
    """Poll the request until it is done, answering ``input()`` over REST once; its last status and body."""
    deadline = time.monotonic() + 60
    answered = False
    while time.monotonic() < deadline:
        response = requests.get(f"{base}{location}", headers=_headers(token), timeout=30)
        if response.status_code == 300:
            assert answer is not None and not answered, response.text
            assert response.json()["input_request"]["prompt"] == "who? "
            target = response.headers["Location"]
            sent = requests.post(
                f"{base}{target}", json={"input": answer}, headers=_headers(token), timeout=30
            )
            assert sent.status_code == 201, sent.text
            answered = True
        elif response.status_code != 202:
            return response.status_code, response.json()
        time.sleep(0.1)
    raise AssertionError(f"{location} still pending after 60 s")


def normalized(outputs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Outputs compared across servers: streams joined per name, tracebacks and metadata left out."""
    merged: list[dict[str, Any]] = []
    for output in outputs:
        kind = output["output_type"]
        if kind == "stream" and merged and merged[-1].get("name") == output["name"]:
            merged[-1]["text"] += output["text"]
        elif kind == "stream":
            merged.append({"output_type": kind, "name": output["name"], "text": output["text"]})
        elif kind == "error":
            merged.append(
                {"output_type": kind, "ename": output["ename"], "evalue": output["evalue"]}
            )
        else:
            merged.append({"output_type": kind, "data": output["data"]})
    return merged


def run_contract(base: str, kernel: str, token: str) -> dict[str, tuple[int, str, list[Any]]]:
    """Each case's final HTTP status, execute status and normalized outputs."""
    results = {}
    for name, (code, answer) in CASES.items():
        status, body = poll(base, submit(base, kernel, code, token), token, answer)
        outputs = json.loads(body["outputs"])
        results[name] = (status, body.get("status"), normalized(outputs))
    return results


@pytest.fixture(scope="module")
def nbmodel_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Jupyter Server with jupyter-server-nbmodel on loopback: the contract's reference."""
    pytest.importorskip("jupyter_server_nbmodel")
    root = tmp_path_factory.mktemp("nbmodel")
    with jupyter_server(
        root, NBMODEL_TOKEN, "--ServerApp.jpserver_extensions=jupyter_server_nbmodel=True"
    ) as server:
        yield server.url


def nbmodel_kernel(base: str) -> str:
    """A new python3 kernel of the nbmodel server at ``base``."""
    started = requests.post(
        f"{base}/api/kernels", json={"name": "python3"}, headers=_headers(NBMODEL_TOKEN), timeout=90
    )
    assert started.status_code == 201, started.text
    return str(started.json()["id"])


def read_only_token(base: str, kernel: str) -> str:
    """A read-only token of the relay's kernel."""
    issued = requests.post(
        f"{base}/api/kernels/{kernel}/tokens",
        json={"access": "read-only"},
        headers=_headers(TOKEN),
        timeout=10,
    )
    assert issued.status_code in (200, 201), issued.text
    return str(issued.json()["token"])


def test_the_contract_matches_jupyter_server_nbmodel(
    relay: Relay, kernel_id: str, nbmodel_server: str
) -> None:
    """One script against the relay and Jupyter Server with nbmodel: same statuses and outputs for each case."""
    reference = run_contract(nbmodel_server, nbmodel_kernel(nbmodel_server), NBMODEL_TOKEN)
    ours = run_contract(relay.url, kernel_id, TOKEN)
    assert ours == reference
    assert ours["execute_result"][2] == [
        {"output_type": "execute_result", "data": {"text/plain": "42"}}
    ]
    assert ours["input"][2] == [{"output_type": "stream", "name": "stdout", "text": "hi ada\n"}]


def test_the_contract_on_the_relay(relay: Relay, kernel_id: str) -> None:
    """Each case ends as the contract says: 200 with its outputs (an error cell too, its status error)."""
    results = run_contract(relay.url, kernel_id, TOKEN)
    assert {name: result[:2] for name, result in results.items()} == {
        "stream": (200, "ok"),
        "display_data": (200, "ok"),
        "execute_result": (200, "ok"),
        "error": (200, "error"),
        "input": (200, "ok"),
    }
    assert results["stream"][2] == [
        {"output_type": "stream", "name": "stdout", "text": "hello\n"},
        {"output_type": "stream", "name": "stderr", "text": "oops\n"},
    ]
    assert results["display_data"][2] == [
        {
            "output_type": "display_data",
            "data": {"text/html": "<b>hi</b>", "text/plain": "<IPython.core.display.HTML object>"},
        }
    ]
    assert results["error"][2] == [
        {"output_type": "error", "ename": "ZeroDivisionError", "evalue": "division by zero"}
    ]


def test_long_poll_answers_when_the_cell_ends(relay: Relay, kernel_id: str) -> None:
    """``?wait=`` holds the answer until the cell ends (one GET, not a poll loop), then gives the result."""
    location = submit(relay.url, kernel_id, "import time; time.sleep(1.5); print('late')", TOKEN)
    response = requests.get(f"{relay.url}{location}?wait=30", headers=_headers(TOKEN), timeout=40)
    assert response.status_code == 200, response.text
    assert json.loads(response.json()["outputs"]) == [
        {"output_type": "stream", "name": "stdout", "text": "late\n"}
    ]
    short = submit(relay.url, kernel_id, "import time; time.sleep(3)", TOKEN)
    pending = requests.get(f"{relay.url}{short}?wait=0.5", headers=_headers(TOKEN), timeout=40)
    assert pending.status_code == 202 and pending.json()["pending"] is True
    assert poll(relay.url, short, TOKEN, None)[0] == 200


def test_a_request_survives_its_client_going_mid_cell(relay: Relay, kernel_id: str) -> None:
    """A client that long-polls and goes mid-cell leaves the request running; its outputs are read after."""
    location = submit(
        relay.url,
        kernel_id,
        "import time\nprint('a', flush=True)\ntime.sleep(2)\nprint('b')",
        TOKEN,
    )
    with pytest.raises(requests.exceptions.ReadTimeout):
        requests.get(f"{relay.url}{location}?wait=30", headers=_headers(TOKEN), timeout=0.5)
    status, body = poll(relay.url, location, TOKEN, None)
    assert status == 200
    assert normalized(json.loads(body["outputs"])) == [
        {"output_type": "stream", "name": "stdout", "text": "a\nb\n"}
    ]


def test_a_socketio_cell_is_read_back_by_its_msg_id_after_a_reconnect(
    relay: Relay, kernel_id: str
) -> None:
    """A cell sent over socket.io is a request: a new session reads it in full by msg_id, and in the list."""
    client = RelayKernelClient(relay.url, kernel_id, auth={"token": TOKEN})
    try:
        msg_id = client.send(
            "shell",
            "execute_request",
            {
                "code": "import time\nfor i in range(3):\n    print(i, flush=True)\n    time.sleep(0.3)"
            },
        )
        client.wait_for(lambda: client.iopub_for(msg_id, "stream"), what="the cell's first output")
    finally:
        client.close()
    again = RelayKernelClient(relay.url, kernel_id, channels=["iopub"], auth={"token": TOKEN})
    try:
        status, body = poll(relay.url, f"/api/kernels/{kernel_id}/requests/{msg_id}", TOKEN, None)
    finally:
        again.close()
    assert status == 200 and body["status"] == "ok" and body["outputs_dropped"] == 0
    assert normalized(json.loads(body["outputs"])) == [
        {"output_type": "stream", "name": "stdout", "text": "0\n1\n2\n"}
    ]
    listed = requests.get(
        f"{relay.url}/api/kernels/{kernel_id}/requests", headers=_headers(TOKEN), timeout=10
    ).json()
    assert msg_id in [request["request_id"] for request in listed["requests"]]


def test_a_read_only_token_reads_requests_but_sends_no_code(relay: Relay, kernel_id: str) -> None:
    """A read-only kernel token reads a request and the list; it may not submit code or answer input()."""
    reader = read_only_token(relay.url, kernel_id)
    location = submit(relay.url, kernel_id, "1 + 1", TOKEN)
    assert poll(relay.url, location, reader, None)[0] == 200
    listed = requests.get(
        f"{relay.url}/api/kernels/{kernel_id}/requests", headers=_headers(reader), timeout=10
    )
    assert listed.status_code == 200
    refused = requests.post(
        f"{relay.url}/api/kernels/{kernel_id}/execute",
        json={"code": "1"},
        headers=_headers(reader),
        timeout=10,
    )
    assert refused.status_code == 403
    no_input = requests.post(
        f"{relay.url}/api/kernels/{kernel_id}/input",
        json={"input": "x"},
        headers=_headers(reader),
        timeout=10,
    )
    assert no_input.status_code == 403


@pytest.mark.parametrize("protocol", ["v1", "legacy"])
def test_a_jupyter_client_joining_a_busy_kernel_is_told_busy_first(
    relay: Relay, kernel_id: str, protocol: str
) -> None:
    """A Jupyter WebSocket client that connects while a cell runs gets ``busy`` on iopub before anything else."""
    location = submit(relay.url, kernel_id, "import time; time.sleep(3)", TOKEN)
    deadline = time.monotonic() + 30
    while (
        requests.get(f"{relay.url}{location}", headers=_headers(TOKEN), timeout=10).json()[
            "request_status"
        ]
        != "running"
    ):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    client = JupyterWS(relay.url, kernel_id, protocol=protocol, token=TOKEN)
    try:
        first = client.recv(timeout=10)
    finally:
        client.close()
    assert first is not None and first["channel"] == "iopub"
    assert first["header"]["msg_type"] == "status"
    assert first["content"] == {"execution_state": "busy"}
    assert poll(relay.url, location, TOKEN, None)[0] == 200


def test_input_of_a_socketio_cell_is_answered_over_rest(relay: Relay, kernel_id: str) -> None:
    """A socket.io cell waiting for input() reads 300 over REST; the answer POSTed there reaches the kernel."""
    client = RelayKernelClient(relay.url, kernel_id, auth={"token": TOKEN})
    try:
        msg_id = client.send(
            "shell",
            "execute_request",
            {"code": "name = input('who? '); print('hi ' + name)", "allow_stdin": True},
        )
        location = f"/api/kernels/{kernel_id}/requests/{msg_id}"
        _until_known(relay.url, location, TOKEN)
        status, body = poll(relay.url, location, TOKEN, "bo")
        deadline = time.monotonic() + 10  # the client reads on a thread of its own
        while not client.received["stdin"] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert client.received["stdin"], "the asker got the input_request too"
    finally:
        client.close()
    assert status == 200 and body["status"] == "ok"
    assert json.loads(body["outputs"]) == [
        {"output_type": "stream", "name": "stdout", "text": "hi bo\n"}
    ]


def test_a_restart_ends_a_running_request_with_a_clear_status(relay: Relay) -> None:
    """A request running when its kernel restarts answers 500 saying so, not pending forever."""
    kernel = relay.spawn()
    try:
        location = submit(relay.url, kernel, "import time; time.sleep(60)", TOKEN)
        restarted = requests.post(
            f"{relay.url}/api/kernels/{kernel}/restart", headers=_headers(TOKEN), timeout=90
        )
        assert restarted.status_code == 200, restarted.text
        status, body = poll(relay.url, location, TOKEN, None)
        assert status == 500 and body["error"] == "kernel restarting"
        assert body["pending"] is False
    finally:
        relay.shutdown(kernel)


def _until_known(base: str, location: str, token: str) -> None:
    """
    Wait until the relay knows the request: a socket.io emit returns before the relay has read it, so the
    first GET may come first and rightly read 404.
    """
    deadline = time.monotonic() + 10
    while requests.get(f"{base}{location}", headers=_headers(token), timeout=30).status_code == 404:
        assert time.monotonic() < deadline, f"{location} still unknown 10 s after it was sent"
        time.sleep(0.05)


def _until_running(base: str, location: str, token: str, text: str) -> None:
    """Poll the request until its outputs so far show ``text`` (the kernel runs its code now)."""
    deadline = time.monotonic() + 60
    while True:
        body = requests.get(f"{base}{location}", headers=_headers(token), timeout=30).json()
        if text in body.get("outputs", ""):
            return
        assert time.monotonic() < deadline, f"{location} never showed {text!r}: {body}"
        time.sleep(0.05)


def run_cancel(base: str, kernel: str, token: str) -> tuple[int, int, int, str, list[Any]]:
    """
    nbmodel's DELETE: of an unknown request, then of a running one; the interrupted request's final HTTP
    status, execute status and normalized outputs.
    """
    unknown = requests.delete(
        f"{base}/api/kernels/{kernel}/requests/no-such-request", headers=_headers(token), timeout=30
    )
    code = "print('started', flush=True)\nimport time\ntime.sleep(60)\nprint('not reached')"
    location = submit(base, kernel, code, token)
    _until_running(base, location, token, "started")
    cancelled = requests.delete(f"{base}{location}", headers=_headers(token), timeout=30)
    status, body = poll(base, location, token, None)
    outputs = normalized(json.loads(body["outputs"]))
    return unknown.status_code, cancelled.status_code, status, body.get("status"), outputs


def test_delete_matches_jupyter_server_nbmodel(relay: Relay, nbmodel_server: str) -> None:
    """DELETE of a request, one script against both servers: 404 unknown, 204, the cell interrupted alike."""
    reference = run_cancel(nbmodel_server, nbmodel_kernel(nbmodel_server), NBMODEL_TOKEN)
    kernel = relay.spawn()
    try:
        ours = run_cancel(relay.url, kernel, TOKEN)
    finally:
        relay.shutdown(kernel)
    assert ours == reference
    assert ours[:4] == (404, 204, 200, "error")
    assert ours[4] == [
        {"output_type": "stream", "name": "stdout", "text": "started\n"},
        {"output_type": "error", "ename": "KeyboardInterrupt", "evalue": ""},
    ]


def test_delete_of_a_queued_request_stops_it_and_not_the_cell_before(relay: Relay) -> None:
    """A request cancelled while queued is interrupted once it starts; the cell running before it ends normally."""
    kernel = relay.spawn()
    try:
        first = submit(relay.url, kernel, "import time; time.sleep(2); print('first')", TOKEN)
        queued = submit(relay.url, kernel, "import time; time.sleep(30); print('second')", TOKEN)
        body = requests.get(f"{relay.url}{queued}", headers=_headers(TOKEN), timeout=10).json()
        assert body["request_status"] == "queued"
        cancelled = requests.delete(f"{relay.url}{queued}", headers=_headers(TOKEN), timeout=10)
        assert cancelled.status_code == 204
        status, body = poll(relay.url, first, TOKEN, None)
        assert (status, body["status"]) == (200, "ok")
        assert "first" in body["outputs"]
        status, body = poll(relay.url, queued, TOKEN, None)
        outputs = normalized(json.loads(body["outputs"]))
        # Interrupted in its code: KeyboardInterrupt; before it (right after its execute_input), the
        # kernel drops it with no reply: aborted. Either way 'second' is never printed.
        assert (status, body["status"], outputs) in [
            (200, "error", [{"output_type": "error", "ename": "KeyboardInterrupt", "evalue": ""}]),
            (200, "aborted", []),
        ], body
        reader = read_only_token(relay.url, kernel)
        refused = requests.delete(f"{relay.url}{queued}", headers=_headers(reader), timeout=10)
        assert refused.status_code == 403
    finally:
        relay.shutdown(kernel)

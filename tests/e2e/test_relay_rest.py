"""The REST API of a real relay process: the seed's contract, discovery routes, errors and origins."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.conftest import Relay


def test_spawn_answers_a_uuid_and_the_kernel_is_listed(relay: Relay) -> None:
    """GET /spawn/python3 answers 200 {"id": <uuid4>} and /api/kernels then lists that kernel."""
    response = requests.get(f"{relay.url}/spawn/python3", timeout=90)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("application/json")
    body = response.json()
    assert list(body) == ["id"]
    assert uuid.UUID(body["id"]).version == 4
    listed = {kernel["id"]: kernel for kernel in relay.kernels()}
    assert body["id"] in listed
    entry = listed[body["id"]]
    assert entry["name"] == "python3"
    assert entry["connections"] == 0
    # A kernel that answered kernel_info is idle at once, never left "starting".
    assert entry["execution_state"] in ("idle", "busy")
    assert isinstance(entry["last_activity"], str) and entry["last_activity"].endswith("Z")
    shutdown = relay.shutdown(body["id"])
    assert shutdown.status_code == 200
    # "id" is the seed's contract; "kernelId" is what enchannel-socketio-backend 0.1.0 checks.
    assert shutdown.json() == {"id": body["id"], "kernelId": body["id"]}
    assert body["id"] not in {kernel["id"] for kernel in relay.kernels()}


def test_shutdown_of_unknown_id_is_a_500_with_an_error(relay: Relay) -> None:
    """GET /shutdown/<unknown> answers 500 {"error": ...} naming the id."""
    response = relay.shutdown("no-such-kernel")
    assert response.status_code == 500
    body = response.json()
    assert list(body) == ["error"]
    assert "no-such-kernel" in body["error"]


def test_spawn_of_unknown_kernelspec_is_a_500_with_an_error(relay: Relay) -> None:
    """GET /spawn/<unknown spec> answers 500 {"error": ...} naming the kernelspec."""
    response = requests.get(f"{relay.url}/spawn/no-such-spec", timeout=30)
    assert response.status_code == 500
    assert "no-such-spec" in response.json()["error"]


def test_a_name_no_kernelspec_can_have_is_refused_before_anything_starts(relay: Relay) -> None:
    """Names outside Jupyter's [A-Za-z0-9._-] are answered at once, and never logged raw (a NUL, 16 KB)."""
    for name in ("%00", "a%20b", "x" * 16000):
        response = requests.get(f"{relay.url}/spawn/{name}", timeout=30)
        assert response.status_code == 500
        assert response.json()["error"].startswith("no kernel spec named")
        assert len(response.json()["error"]) < 120
    output = relay.output()
    assert "\x00" not in output and "x" * 100 not in output


def test_kernelspecs_lists_python3(relay: Relay) -> None:
    """GET /api/kernelspecs lists python3, the default, in Jupyter Server's shape, with its logo."""
    response = requests.get(f"{relay.url}/api/kernelspecs", timeout=30)
    assert response.status_code == 200
    listing = response.json()
    assert listing["default"] == "python3"
    python3 = listing["kernelspecs"]["python3"]
    assert python3["name"] == "python3" and python3["spec"]["language"] == "python"
    assert python3["spec"]["display_name"] and python3["spec"]["argv"]
    logo = requests.get(relay.url + python3["resources"]["logo-64x64"], timeout=30)
    assert logo.status_code == 200 and logo.headers["Content-Type"] == "image/png"
    assert logo.content.startswith(b"\x89PNG")


def test_unknown_route_and_wrong_method_answer_json(relay: Relay) -> None:
    """An unknown route is a JSON 404 and a POST to /spawn a JSON 405, never an HTML page."""
    missing = requests.get(f"{relay.url}/nothing/here", timeout=10)
    assert missing.status_code == 404
    assert "error" in missing.json()
    wrong = requests.post(f"{relay.url}/spawn/python3", timeout=10)
    assert wrong.status_code == 405
    assert "error" in wrong.json()
    assert "GET" in wrong.headers["Allow"]


def test_head_neither_starts_nor_stops_a_kernel(relay: Relay, kernel_id: str) -> None:
    """HEAD on /spawn and /shutdown, which link checkers and probes send, answers 405 and does nothing."""
    before = {kernel["id"] for kernel in relay.kernels()}
    assert kernel_id in before
    for path in ("/spawn/python3", f"/shutdown/{kernel_id}"):
        answer = requests.head(f"{relay.url}{path}", timeout=30)
        assert answer.status_code == 405, path
        assert answer.headers["Allow"] == "GET, OPTIONS", path
    assert {kernel["id"] for kernel in relay.kernels()} == before
    wrong = requests.post(f"{relay.url}/spawn/python3", timeout=10)
    assert wrong.headers["Allow"] == "GET, OPTIONS"
    assert requests.head(f"{relay.url}/api/kernels", timeout=10).status_code == 200


def test_foreign_origin_is_refused_by_default(relay: Relay) -> None:
    """A browser request from another origin cannot spawn a kernel; a same-origin one can list kernels."""
    refused = requests.get(
        f"{relay.url}/spawn/python3", headers={"Origin": "http://evil.example"}, timeout=10
    )
    assert refused.status_code == 403
    assert "evil.example" in refused.json()["error"]
    assert "Access-Control-Allow-Origin" not in refused.headers
    same = requests.get(
        f"{relay.url}/api/kernels", headers={"Origin": f"http://127.0.0.1:{relay.port}"}, timeout=10
    )
    assert same.status_code == 200


def test_foreign_origin_is_refused_on_socketio_too(relay: Relay) -> None:
    """The Engine.IO handshake applies the same origin policy as the REST routes."""
    refused = requests.get(
        f"{relay.url}/socket.io/?EIO=4&transport=polling",
        headers={"Origin": "http://evil.example"},
        timeout=10,
    )
    assert refused.status_code == 403
    allowed = requests.get(f"{relay.url}/socket.io/?EIO=4&transport=polling", timeout=10)
    assert allowed.status_code == 200
    assert allowed.text.startswith("0{")


@pytest.fixture(scope="module")
def open_relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Relay]:
    server = Relay(tmp_path_factory.mktemp("runtime"), "--allow-origin", "*")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def listed_relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Relay]:
    server = Relay(
        Path(tmp_path_factory.mktemp("runtime")),
        "--allow-origin",
        "https://app.example.com",
        "--allow-origin",
        "https://*.trusted.example",
    )
    try:
        yield server
    finally:
        server.stop()


def test_allow_origin_star_reproduces_the_original(open_relay: Relay) -> None:
    """With --allow-origin '*' any origin is served with Access-Control-Allow-Origin: *."""
    response = requests.get(
        f"{open_relay.url}/api/kernels", headers={"Origin": "http://anywhere.example"}, timeout=10
    )
    assert response.status_code == 200
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    assert "Access-Control-Allow-Credentials" not in response.headers


def test_listed_origins_are_echoed_with_credentials(listed_relay: Relay) -> None:
    """Exact and pattern origins are echoed back with credentials; others are refused."""
    for origin in ("https://app.example.com", "https://a.trusted.example"):
        response = requests.get(
            f"{listed_relay.url}/api/kernels", headers={"Origin": origin}, timeout=10
        )
        assert response.status_code == 200
        assert response.headers["Access-Control-Allow-Origin"] == origin
        assert response.headers["Access-Control-Allow-Credentials"] == "true"
    refused = requests.get(
        f"{listed_relay.url}/api/kernels", headers={"Origin": "https://other.example"}, timeout=10
    )
    assert refused.status_code == 403


def test_preflight_is_answered_for_allowed_origins(listed_relay: Relay) -> None:
    """An OPTIONS preflight from an allowed origin gets 204 with the allowed methods."""
    response = requests.options(
        f"{listed_relay.url}/spawn/python3",
        headers={
            "Origin": "https://app.example.com",
            "Access-Control-Request-Method": "GET",
        },
        timeout=10,
    )
    assert response.status_code == 204
    assert "GET" in response.headers["Access-Control-Allow-Methods"]
    assert response.headers["Access-Control-Allow-Origin"] == "https://app.example.com"

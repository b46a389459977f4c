"""Kernel tokens: full access to one kernel, or read-only access to its iopub, issued under the relay's token."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests
import socketio

from tests.conftest import Relay
from tests.kernel_client import RelayKernelClient

pytestmark = pytest.mark.timeout(240)

MAIN = "main-token-0123456789abcdefghij"


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Relay]:
    server = Relay(tmp_path_factory.mktemp("runtime"), token=MAIN)
    try:
        yield server
    finally:
        server.stop()


def issue(relay: Relay, kernel_id: str, access: str, token: str = MAIN) -> requests.Response:
    return requests.post(
        f"{relay.url}/api/kernels/{kernel_id}/tokens",
        json={"access": access},
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )


def call(relay: Relay, method: str, path: str, token: str) -> requests.Response:
    return requests.request(
        method, f"{relay.url}{path}", headers={"Authorization": f"Bearer {token}"}, timeout=60
    )


def connect_error(relay: Relay, namespace: str, token: str) -> str:
    """The connect error message of joining ``namespace`` with ``token`` ('' if it joined)."""
    sio = socketio.Client(reconnection=False)
    refusals: list[str] = []
    sio.on("connect_error", lambda data: refusals.append(str(data)), namespace=namespace)
    try:
        sio.connect(relay.url, namespaces=[namespace], auth={"token": token}, wait_timeout=10)
    except socketio.exceptions.ConnectionError as error:
        return " ".join(refusals) or str(error)
    finally:
        sio.disconnect()
    return ""


def test_full_kernel_token_opens_one_kernel_only(guarded: Relay) -> None:
    """A full token joins and drives its kernel and uses its routes; other kernels and routes are closed."""
    mine, other = guarded.spawn(), guarded.spawn()
    try:
        answer = issue(guarded, mine, "full")
        assert answer.status_code == 201
        token = answer.json()["token"]
        assert answer.json() == {"token": token, "kernel_id": mine, "access": "full"}
        client = RelayKernelClient(guarded.url, mine, ("shell", "iopub"), auth={"token": token})
        try:
            _, reply = client.execute("6 * 7")
            assert reply["content"]["status"] == "ok"
        finally:
            client.close()
        refusal = connect_error(guarded, f"/shell/{other}", token)
        assert f"full access to kernel {mine} only" in refusal and "403" in refusal
        assert call(guarded, "POST", f"/api/kernels/{mine}/interrupt", token).status_code == 204
        for method, path in (
            ("GET", "/spawn/python3"),
            ("GET", "/api/kernels"),
            ("GET", f"/shutdown/{other}"),
            ("POST", f"/api/kernels/{other}/interrupt"),
            ("POST", f"/api/kernels/{mine}/tokens"),
        ):
            refused = call(guarded, method, path, token)
            assert refused.status_code == 403, (method, path, refused.text)
            assert mine in refused.json()["error"]
        assert call(guarded, "GET", f"/shutdown/{mine}", token).status_code == 200
        # The kernel is gone, and its tokens with it.
        assert call(guarded, "POST", f"/api/kernels/{mine}/interrupt", token).status_code == 401
    finally:
        guarded.shutdown(other)
        if mine in {k["id"] for k in guarded.kernels()}:
            guarded.shutdown(mine)


def test_read_only_token_joins_iopub_only(guarded: Relay) -> None:
    """A read-only token may watch /iopub/<id> and nothing else, not even the kernel's routes."""
    kernel_id = guarded.spawn()
    try:
        token = issue(guarded, kernel_id, "read-only").json()["token"]
        assert connect_error(guarded, f"/iopub/{kernel_id}", token) == ""
        for channel in ("shell", "stdin", "control"):
            assert "read-only" in connect_error(guarded, f"/{channel}/{kernel_id}", token)
        assert (
            call(guarded, "POST", f"/api/kernels/{kernel_id}/interrupt", token).status_code == 403
        )
        assert call(guarded, "GET", f"/shutdown/{kernel_id}", token).status_code == 403
    finally:
        guarded.shutdown(kernel_id)


def test_issuing_needs_the_main_token_a_kernel_and_a_valid_body(guarded: Relay) -> None:
    """Tokens are issued only with the relay's token, for running kernels, with a known access level."""
    kernel_id = guarded.spawn()
    try:
        assert issue(guarded, kernel_id, "full", token="wrong").status_code == 401
        assert issue(guarded, "no-such-kernel", "full").status_code == 404
        bad = issue(guarded, kernel_id, "admin")
        assert bad.status_code == 400 and "read-only" in bad.json()["error"]
        junk = requests.post(
            f"{guarded.url}/api/kernels/{kernel_id}/tokens",
            data=b"not json",
            headers={"Authorization": f"Bearer {MAIN}"},
            timeout=10,
        )
        assert junk.status_code == 400
    finally:
        guarded.shutdown(kernel_id)


def test_without_a_relay_token_kernel_tokens_are_refused(relay: Relay, kernel_id: str) -> None:
    """A relay without a token gives everyone full access, so it explains why it issues no kernel tokens."""
    answer = requests.post(f"{relay.url}/api/kernels/{kernel_id}/tokens", json={}, timeout=10)
    assert answer.status_code == 400 and "--token" in answer.json()["error"]

"""
The execute API's bounds with a real relay and kernel: ``--requests-kept`` drops the oldest request, and REST
requests are no client connections but are bounded per kernel (``--max-rest-requests-per-kernel``).
"""

from __future__ import annotations

import pytest
import requests

from tests.conftest import Relay, kernel_fixture, relay_fixture
from tests.e2e.test_execute_api import poll, submit
from tests.jupyter_ws import JupyterWS

pytestmark = pytest.mark.timeout(240)

TOKEN = "execute-bounds-token-0123456789abcdef"
relay = relay_fixture(
    "--requests-kept",
    "2",
    "--max-rest-requests-per-kernel",
    "2",
    "--max-clients-per-kernel",
    "1",
    token=TOKEN,
)
kernel_id = kernel_fixture("relay")
HEADERS = {"Authorization": f"Bearer {TOKEN}"}


def test_a_relay_that_keeps_two_requests_drops_the_oldest(relay: Relay, kernel_id: str) -> None:
    """With --requests-kept 2, a third request makes the first unreadable (404); the two latest stay."""
    locations = []
    for n in (1, 2, 3):
        locations.append(submit(relay.url, kernel_id, f"{n} * 2", TOKEN))
        assert poll(relay.url, locations[-1], TOKEN, None)[0] == 200
    assert (
        requests.get(f"{relay.url}{locations[0]}", headers=HEADERS, timeout=10).status_code == 404
    )
    listed = requests.get(
        f"{relay.url}/api/kernels/{kernel_id}/requests", headers=HEADERS, timeout=10
    ).json()["requests"]
    assert [item["request_url"] for item in listed] == locations[1:]


def test_rest_requests_take_no_client_place_but_are_bounded(relay: Relay, kernel_id: str) -> None:
    """Two running REST requests: a third is refused 429, the kernel shows no connection, a browser still joins."""
    running = [submit(relay.url, kernel_id, "import time; time.sleep(30)", TOKEN) for _ in range(2)]
    try:
        refused = requests.post(
            f"{relay.url}/api/kernels/{kernel_id}/execute",
            json={"code": "1"},
            headers=HEADERS,
            timeout=10,
        )
        assert refused.status_code == 429, refused.text
        assert "2 requests" in refused.json()["message"]
        model = requests.get(f"{relay.url}/api/kernels/{kernel_id}", headers=HEADERS, timeout=10)
        assert model.json()["connections"] == 0
        # --max-clients-per-kernel 1: the browser's is the one place.
        client = JupyterWS(relay.url, kernel_id, token=TOKEN)
        try:
            first = client.recv(timeout=10)
            assert first is not None and first["header"]["msg_type"] == "status"
            model = requests.get(
                f"{relay.url}/api/kernels/{kernel_id}", headers=HEADERS, timeout=10
            )
            assert model.json()["connections"] == 1
        finally:
            client.close()
    finally:
        for location in reversed(running):
            requests.delete(f"{relay.url}{location}", headers=HEADERS, timeout=10)
    # The first is interrupted; the kernel aborts the one queued behind it (stop_on_error), or it is
    # interrupted in turn once it starts.
    statuses = [poll(relay.url, location, TOKEN, None)[1]["status"] for location in running]
    assert statuses[0] == "error" and statuses[1] in ("aborted", "error"), statuses

"""
A kernel started on one relay of a fleet is usable on another at once (issue #30, the start-up race): a relay
that does not know a kernel id a client names looks it up in Redis before refusing, even while it is still
joining its fleet.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests

from tests.conftest import Relay
from tests.e2e.test_fleet import AUTH, TOKEN, fleet_relay, no_kernel_left, show
from tests.jupyter_ws import JupyterWS
from tests.kernel_client import RelayKernelClient
from tests.redis_server import RedisServer, redis_server

pytestmark = pytest.mark.timeout(240)

__all__ = ["no_kernel_left", "redis_server"]


def at_once(attempts: dict[str, Callable[[], Any]]) -> dict[str, Any]:
    """Run every attempt in a thread of its own, all together: each one's result, or the error it raised."""
    results: dict[str, Any] = {}
    start = threading.Barrier(len(attempts))

    def run(name: str, attempt: Callable[[], Any]) -> None:
        start.wait()
        try:
            results[name] = attempt()
        except Exception as error:
            results[name] = error

    threads = [
        threading.Thread(target=run, args=(name, attempt), daemon=True)
        for name, attempt in attempts.items()
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return results


@pytest.fixture
def relays(
    redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[Relay]]:
    """The relays a test starts, stopped after it (their logs shown)."""
    started: list[Relay] = []
    try:
        yield started
    finally:
        for relay in started:
            relay.stop()
        for name, relay in zip("AB", started, strict=False):
            show(name, relay)


def test_a_kernel_spawned_on_one_relay_is_usable_at_once_on_a_relay_just_started(
    redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory, relays: list[Relay]
) -> None:
    """B starts as A's kernel is spawned: at once, socket.io and Jupyter clients of it and its REST routes on
    B all succeed (B looks the kernel up in Redis instead of refusing it)."""
    url = redis_server.database(9)
    a = fleet_relay(tmp_path_factory.mktemp("a"), url)
    relays.append(a)
    kernel_id = a.spawn()
    b = fleet_relay(tmp_path_factory.mktemp("b"), url)
    relays.append(b)
    clients: list[Any] = []

    def socketio() -> str:
        client = RelayKernelClient(b.url, kernel_id, channels=("shell",), auth={"token": TOKEN})
        clients.append(client)
        return "connected"

    def jupyter() -> str:
        clients.append(JupyterWS(b.url, kernel_id, token=TOKEN))
        return "connected"

    def model() -> int:
        return requests.get(
            f"{b.url}/api/kernels/{kernel_id}", headers=AUTH, timeout=30
        ).status_code

    def interrupt() -> int:
        return requests.post(
            f"{b.url}/api/kernels/{kernel_id}/interrupt", headers=AUTH, timeout=30
        ).status_code

    try:
        results = at_once(
            {"socketio": socketio, "jupyter": jupyter, "model": model, "interrupt": interrupt}
        )
        assert results == {
            "socketio": "connected",
            "jupyter": "connected",
            "model": 200,
            "interrupt": 204,
        }, results
        _, reply = clients[[isinstance(c, JupyterWS) for c in clients].index(True)].execute("1+1")
        assert reply["content"]["status"] == "ok"
    finally:
        for client in clients:
            client.close()
    unknown = requests.get(f"{b.url}/api/kernels/{'0' * 32}", headers=AUTH, timeout=30)
    assert unknown.status_code == 404, unknown.text
    stopped = requests.get(f"{b.url}/shutdown/{kernel_id}", headers=AUTH, timeout=60)
    assert stopped.status_code == 200, stopped.text


def test_a_session_on_a_relay_just_started_shares_a_kernel_spawned_on_another(
    redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory, relays: list[Relay]
) -> None:
    """B starts as A's kernel is spawned: at once, a session made on B for that kernel's id shares it (B
    starts no kernel of its own), and a session moved to it on B is not refused."""
    url = redis_server.database(10)
    a = fleet_relay(tmp_path_factory.mktemp("a"), url)
    relays.append(a)
    kernel_id, other_id = a.spawn(), a.spawn()
    b = fleet_relay(tmp_path_factory.mktemp("b"), url)
    relays.append(b)
    sessions = f"{b.url}/api/sessions"
    made = requests.post(
        sessions,
        json={"path": "a.ipynb", "type": "notebook", "kernel": {"id": kernel_id}},
        headers=AUTH,
        timeout=30,
    )
    assert made.status_code == 201 and made.json()["kernel"]["id"] == kernel_id, made.text
    moved = requests.patch(
        f"{sessions}/{made.json()['id']}",
        json={"kernel": {"id": other_id}},
        headers=AUTH,
        timeout=30,
    )
    assert moved.status_code == 200 and moved.json()["kernel"]["id"] == other_id, moved.text
    fleet_b = requests.get(f"{b.url}/api/health", headers=AUTH, timeout=10).json()["fleet"]
    assert fleet_b["owned_kernels"] == 0, fleet_b
    for each in (kernel_id, other_id):
        requests.get(f"{a.url}/shutdown/{each}", headers=AUTH, timeout=60)

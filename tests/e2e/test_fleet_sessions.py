"""
Jupyter sessions in a fleet of two real relays on one real Redis: a session belongs to its principal on every
relay, its mark in Redis keeps ids only and goes with its kernel, and /api/health shows the fleet only to a
holder of the relay's token.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest
import requests

from tests.conftest import Relay
from tests.e2e.test_fleet import AUTH, TOKEN, fleet_relay, ids
from tests.e2e.test_hardening_sessions import stream_text
from tests.e2e.test_relay_resume import wait
from tests.jupyter_ws import JupyterWS
from tests.redis_server import RedisServer, redis_server

pytestmark = pytest.mark.timeout(240)

__all__ = ["redis_server"]

DATABASE = 7


@pytest.fixture(scope="module")
def fleet(
    redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Relay, Relay]]:
    url = redis_server.database(DATABASE)
    a = fleet_relay(tmp_path_factory.mktemp("a"), url)
    b = fleet_relay(tmp_path_factory.mktemp("b"), url)
    try:
        yield a, b
    finally:
        a.stop()
        b.stop()


def redis_keys(server: RedisServer, pattern: str) -> list[str]:
    keys = subprocess.run(
        ["redis-cli", "-p", str(server.port), "-n", str(DATABASE), "--raw", "KEYS", pattern],
        capture_output=True,
        text=True,
        check=True,
        timeout=10,
    ).stdout.split()
    return sorted(keys)


def connections(relay: Relay, kernel_id: str) -> int:
    count: int = requests.get(
        f"{relay.url}/api/kernels/{kernel_id}", headers=AUTH, timeout=10
    ).json()["connections"]
    return count


def leave(relay: Relay, kernel_id: str, client: JupyterWS) -> None:
    """Close ``client`` and wait until ``relay`` has seen it go (and told the fleet where it stopped)."""
    before = connections(relay, kernel_id)
    client.close()
    wait(lambda: connections(relay, kernel_id) < before, 10, "the relay to see the client go")


def test_a_viewer_on_another_relay_takes_nothing_of_the_owners_session(
    fleet: tuple[Relay, Relay], redis_server: RedisServer
) -> None:
    """A read-only viewer on B with the owner's session_id resumes nothing; the owner resumes on B exactly."""
    a, b = fleet
    kernel_id = a.spawn()
    wait(lambda: kernel_id in ids(b), 10, "B to list A's kernel")
    viewer_token = requests.post(
        f"{a.url}/api/kernels/{kernel_id}/tokens",
        json={"access": "read-only"},
        headers=AUTH,
        timeout=10,
    ).json()["token"]
    # B knows the token once it answers 403 (outside its scope) rather than 401 (unknown).
    wait(
        lambda: (
            requests.get(
                f"{b.url}/api/kernels", params={"token": viewer_token}, timeout=10
            ).status_code
            == 403
        ),
        10,
        "B to honour A's kernel token",
    )
    owner = JupyterWS(a.url, kernel_id, token=TOKEN)
    # On B, so that B has seen the whole of each of its cells before the viewer connects there.
    other = JupyterWS(b.url, kernel_id, token=TOKEN)
    try:
        owner.execute("print('read', flush=True)")
        leave(a, kernel_id, owner)
        missed, _ = other.execute("print('missed', flush=True)")
        viewer = JupyterWS(b.url, kernel_id, token=viewer_token, session_id=owner.session_id)
        try:
            live, _ = other.execute("print('live', flush=True)")
            viewer.idle_after(live)
            assert not [m for m in viewer.received if m["parent_header"].get("msg_id") == missed]
        finally:
            leave(b, kernel_id, viewer)
        # The owner's and the viewer's, apart (``other``'s own may be there too, once shared).
        marks = redis_keys(redis_server, "kernel-relay:mark:*")
        assert len([key for key in marks if f"/{owner.session_id}" in key]) == 2, marks
        back = JupyterWS(b.url, kernel_id, token=TOKEN, session_id=owner.session_id)
        try:
            back.idle_after(live)
            assert stream_text(back, missed) == "missed\n" and stream_text(back, live) == "live\n"
        finally:
            back.close()
    finally:
        other.close()
        requests.delete(f"{a.url}/api/kernels/{kernel_id}", headers=AUTH, timeout=60)
    wait(
        lambda: redis_keys(redis_server, "kernel-relay:mark*") == [],
        10,
        "the kernel's marks to go with it",
    )


def test_health_shows_the_fleet_only_to_a_holder_of_the_relays_token(
    fleet: tuple[Relay, Relay],
) -> None:
    """Without the relay's token /api/health says the relay is up, and nothing of its fleet."""
    a, _ = fleet
    anonymous = requests.get(f"{a.url}/api/health", timeout=10)
    assert anonymous.json() == {"status": "ok"}
    full = requests.get(f"{a.url}/api/health", headers=AUTH, timeout=10).json()
    assert full["fleet"]["relay"] and full["fleet"]["relay"] not in anonymous.text

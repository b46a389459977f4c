"""
Users who share an address with an attacker (a NAT, a reverse proxy), on a real relay over loopback: an
authenticated client gets in past ~1,000 tokenless sockets from its own address on a relay limited to 1,024
files, and behind a trusted proxy each forwarded client has its own share while an untrusted peer's
X-Forwarded-For is ignored.
"""

from __future__ import annotations

import http.client
import socket
import time
from pathlib import Path

import pytest
import requests

from tests.conftest import Relay, relay_fixture
from tests.e2e.test_hardening_relay import TOKEN, _counter, _open, works
from tests.support import idle_websocket

pytestmark = pytest.mark.timeout(300)

#: Seconds after which every connection on probation (over its address's share, tokenless) is gone.
PROBATION_OVER = 5.0 + 1.5


#: A relay that may open 1,024 files, no more (soft and hard limit): 768 connections, 192 per address.
few_fds = relay_fixture(
    "--connect-timeout",
    "120",
    token=TOKEN,
    wrapper=("prlimit", "--nofile=1024:1024", "--"),
    scope="function",
)


def test_an_authenticated_client_gets_in_past_a_thousand_tokenless_sockets_from_its_address(
    few_fds: Relay,
) -> None:
    """~1,000 tokenless WebSockets from 127.0.0.1 on a 1,024-file relay; a client with the token from 127.0.0.1 still lists kernels, spawns and runs a cell."""
    held: list[socket.socket] = []
    try:
        for _ in range(1000):
            connection = idle_websocket(few_fds.port, "127.0.0.1")
            if connection is not None:
                held.append(connection)
        alive = sum(1 for connection in held if _open(connection))
        print(f"one address: {len(held)} of 1000 WebSockets upgraded, {alive} still open")
        assert alive <= 192 + 16, f"the relay held {alive} tokenless sockets from one address"
        listing = requests.get(f"{few_fds.url}/api/kernels", headers=few_fds.headers, timeout=10)
        assert listing.status_code == 200, listing.text
        kernel = few_fds.spawn()
        works(few_fds, kernel)
        assert few_fds.shutdown(kernel).status_code == 200
        metrics = requests.get(f"{few_fds.url}/metrics", headers=few_fds.headers, timeout=10).text
        assert _counter(metrics, 'kernel_relay_errors_total{kind="connection_evicted"}') > 0
        assert held_after_probation(held) <= 192
    finally:
        for connection in held:
            connection.close()


@pytest.fixture
def proxied(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> Relay:
    """A relay behind a trusted proxy at 127.0.0.1, four connections per client address."""
    log = tmp_path / "access.log"
    relay = Relay(
        tmp_path / "runtime",
        "--trusted-proxy",
        "127.0.0.1",
        "--max-connections-per-address",
        "4",
        "--connect-timeout",
        "120",
        "--access-log",
        str(log),
        token=TOKEN,
    )
    relay.access_log = log  # type: ignore[attr-defined]
    yield relay  # type: ignore[misc]
    relay.stop()


def held_after_probation(connections: list[socket.socket | None]) -> int:
    time.sleep(PROBATION_OVER)
    return sum(1 for connection in connections if connection is not None and _open(connection))


def test_behind_a_trusted_proxy_bounds_apply_per_forwarded_client(proxied: Relay) -> None:
    """Through the trusted proxy, each forwarded client holds its own four tokenless sockets; an untrusted peer's X-Forwarded-For is ignored, and logs name the forwarded client."""
    first = [idle_websocket(proxied.port, "127.0.0.1", "198.51.100.1") for _ in range(8)]
    second = [idle_websocket(proxied.port, "127.0.0.1", "6.6.6.6, 198.51.100.2") for _ in range(8)]
    # 127.0.0.2 is no trusted proxy: however many clients it claims, its sockets count as its own.
    spoofed = [idle_websocket(proxied.port, "127.0.0.2", f"198.51.100.{10 + n}") for n in range(8)]
    everyone = first + second + spoofed
    try:
        time.sleep(PROBATION_OVER)
        kept = [
            sum(1 for c in group if c is not None and _open(c))
            for group in (first, second, spoofed)
        ]
        print(f"held per forwarded client: {kept}")
        # The proxy's own address is not capped at four: each client behind it is.
        assert kept == [4, 4, 4]
        listing = requests.get(
            f"{proxied.url}/api/kernels",
            headers={**proxied.headers, "X-Forwarded-For": "198.51.100.1"},
            timeout=10,
        )
        assert listing.status_code == 200, listing.text
        untrusted = http.client.HTTPConnection(
            "127.0.0.1", proxied.port, timeout=10, source_address=("127.0.0.2", 0)
        )
        untrusted.request("GET", "/api/health", headers={"X-Forwarded-For": "198.51.100.99"})
        assert untrusted.getresponse().status == 200
        untrusted.close()
        time.sleep(0.5)
        logged = proxied.access_log.read_text()  # type: ignore[attr-defined]
        assert '"198.51.100.1" - - ' in logged
        assert '"127.0.0.2" - - ' in logged and "198.51.100.99" not in logged
    finally:
        for connection in everyone:
            if connection is not None:
                connection.close()

"""
The DNS rebinding guard: a relay without a token answers only Host names that cannot have been rebound.

A rebound page's requests carry the attacker's name in both Host and Origin, so they pass the origin policy as
same-origin; the end-to-end tests send exactly those headers to a real relay.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from kernel_relay.http.hosts import HostPolicy, host_name
from tests.conftest import Relay

REBOUND = "attacker.example"


@pytest.mark.parametrize(
    ("header", "name"),
    [
        ("localhost", "localhost"),
        ("LocalHost:3000", "localhost"),
        ("127.0.0.1:3000", "127.0.0.1"),
        ("[::1]:3000", "::1"),
        ("[::1]", "::1"),
        ("relay.example.com.", "relay.example.com"),
        ("", None),
        ("a:b:c", None),
        ("evil.example@127.0.0.1", None),
        ("127.0.0.1:3000/x", None),
        ("[::1", None),
        ("host:port", None),
    ],
)
def test_host_name_is_the_name_or_address_without_its_port(header: str, name: str | None) -> None:
    assert host_name(header) == name


def test_without_a_token_only_names_that_cannot_be_rebound_are_answered() -> None:
    """localhost (and under it), IP addresses and no Host at all pass; any other name does not."""
    policy = HostPolicy.from_options([], token_required=False)
    for host in (
        None,
        "localhost:3000",
        "app.localhost",
        "127.0.0.1:3000",
        "[::1]:3000",
        "10.1.2.3",
    ):
        assert policy.allows(host), host
    for host in (
        f"{REBOUND}:3000",
        REBOUND,
        "localhost.attacker.example",
        "127.0.0.1.nip.io",
        "",
        "a:b:c",
    ):
        assert not policy.allows(host), host


def test_allowed_names_are_added_and_a_token_or_star_answers_every_name() -> None:
    named = HostPolicy.from_options(["Relay.Internal", " "], token_required=False)
    assert named.allows("relay.internal:3000")
    assert not named.allows(f"{REBOUND}:3000")
    for policy in (
        HostPolicy.from_options([], token_required=True),
        HostPolicy.from_options(["*"], token_required=False),
    ):
        assert policy.allows(f"{REBOUND}:3000")


def _rebound(port: int, name: str = REBOUND) -> dict[str, str]:
    """The headers a page at ``http://name:port`` sends once ``name`` points at 127.0.0.1."""
    return {"Host": f"{name}:{port}", "Origin": f"http://{name}:{port}"}


def _upgrade_status(port: int, headers: dict[str, str]) -> bytes:
    """The status line of a WebSocket handshake to Engine.IO with these Host and Origin headers."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        raw.sendall(
            (
                "GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\n"
                f"Host: {headers['Host']}\r\nOrigin: {headers['Origin']}\r\n"
                "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode("ascii")
        )
        answer = b""
        while b"\r\n" not in answer:
            chunk = raw.recv(4096)
            if not chunk:
                break
            answer += chunk
    return answer.split(b"\r\n", 1)[0]


def test_a_rebound_page_can_neither_spawn_nor_join_a_relay_without_a_token(relay: Relay) -> None:
    """REST, the polling handshake and the WebSocket upgrade all answer 403; no kernel is started."""
    before = len(relay.kernels())
    spawn = requests.get(f"{relay.url}/spawn/python3", headers=_rebound(relay.port), timeout=30)
    assert spawn.status_code == 403
    assert "--allow-host" in spawn.json()["error"]
    assert len(relay.kernels()) == before
    polling = requests.get(
        f"{relay.url}/socket.io/?EIO=4&transport=polling", headers=_rebound(relay.port), timeout=10
    )
    assert polling.status_code == 403
    assert b" 403 " in _upgrade_status(relay.port, _rebound(relay.port))
    assert "DNS rebinding guard" in relay.output()


def test_localhost_and_ip_addresses_are_still_served(relay: Relay) -> None:
    for name in ("localhost", "127.0.0.1"):
        listing = requests.get(
            f"{relay.url}/api/kernels", headers=_rebound(relay.port, name), timeout=10
        )
        assert listing.status_code == 200, listing.text
        assert b" 101 " in _upgrade_status(relay.port, _rebound(relay.port, name))


@pytest.fixture(scope="module")
def named_relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Relay]:
    server = Relay(tmp_path_factory.mktemp("runtime"), "--allow-host", "relay.internal")
    try:
        yield server
    finally:
        server.stop()


def test_allow_host_admits_that_name_only(named_relay: Relay) -> None:
    port = named_relay.port
    allowed = requests.get(
        f"{named_relay.url}/api/kernels", headers=_rebound(port, "relay.internal"), timeout=10
    )
    assert allowed.status_code == 200, allowed.text
    refused = requests.get(f"{named_relay.url}/api/kernels", headers=_rebound(port), timeout=10)
    assert refused.status_code == 403


def test_a_relay_with_a_token_answers_any_name_that_brings_the_token(tmp_path: Path) -> None:
    """The token is the guard there: a rebound page does not have it, and a proxy may use any name."""
    with Relay(tmp_path / "runtime", token="s3cret-token") as server:
        headers = _rebound(server.port)
        assert (
            requests.get(f"{server.url}/api/kernels", headers=headers, timeout=10).status_code
            == 401
        )
        with_token = requests.get(
            f"{server.url}/api/kernels", headers={**headers, **server.headers}, timeout=10
        )
        assert with_token.status_code == 200, with_token.text

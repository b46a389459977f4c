"""Authentication and protected mode: the token on REST and socket.io, and refusing to listen exposed."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import requests
import socketio
from twisted.python import usage

from kernel_relay.auth import (
    TokenAuth,
    exposed_endpoints,
    generate_token,
    is_loopback_endpoint,
    token_from_auth_payload,
    token_from_authorization,
)
from kernel_relay.tap import Options
from tests.conftest import TWIST, Relay, kernel_fixture, relay_fixture
from tests.kernel_client import RelayKernelClient
from tests.support import ROOT, ensure_node_modules, free_port, node_available

TOKEN = "s3cret-" + "x" * 30


#: A relay on loopback that requires TOKEN.
secured = relay_fixture(token=TOKEN)


secured_kernel = kernel_fixture("secured")


# -- units ------------------------------------------------------------------------------------


def test_authorization_header_schemes() -> None:
    """'token <t>' and 'Bearer <t>' (any case) yield the token; Basic and empty values yield None."""
    assert token_from_authorization("token abc") == "abc"
    assert token_from_authorization("Bearer  abc ") == "abc"
    assert token_from_authorization("bearer abc") == "abc"
    assert token_from_authorization("Basic YWxhZGRpbjpvcGVu") is None
    assert token_from_authorization("Bearer") is None
    assert token_from_authorization(None) is None


def test_auth_payload_token() -> None:
    """Only a non-empty string under "token" in a dict payload counts as a token."""
    assert token_from_auth_payload({"token": "t"}) == "t"
    assert token_from_auth_payload({"token": 5}) is None
    assert token_from_auth_payload(["token"]) is None
    assert token_from_auth_payload(None) is None


def test_token_check() -> None:
    """A set token matches only itself; with no token every check passes."""
    auth = TokenAuth("abc")
    assert auth.check("abc")
    assert not auth.check("abd")
    assert not auth.check(None)
    assert not auth.check("")
    assert auth.check_any([None, "nope", "abc"])
    assert not auth.check_any([None, "nope"])
    assert TokenAuth().check(None)
    with pytest.raises(ValueError):
        TokenAuth("  ")


def test_generated_tokens_are_long_and_distinct() -> None:
    """generate_token makes URL-safe tokens of 43 characters, never the same twice."""
    tokens = {generate_token() for _ in range(50)}
    assert len(tokens) == 50
    assert all(len(token) == 43 and token.isascii() and " " not in token for token in tokens)


@pytest.mark.parametrize(
    ("description", "loopback"),
    [
        ("tcp:3000:interface=127.0.0.1", True),
        ("tcp:3000:interface=127.0.0.2", True),
        ("tcp6:3000:interface=\\:\\:1", True),
        ("ssl:3443:privateKey=k.pem:certKey=c.pem:interface=127.0.0.1", True),
        ("tcp:3000:interface=localhost", True),
        ("unix:/run/kernel-relay.sock", True),
        ("tcp:3000", False),
        ("3000", False),
        ("tcp:3000:interface=0.0.0.0", False),
        ("tcp6:3000:interface=\\:\\:", False),
        ("tcp:3000:interface=192.168.1.5", False),
        ("ssl:3443:privateKey=k.pem", False),
        ("systemd:domain=INET:index=0", False),
    ],
)
def test_loopback_endpoints(description: str, loopback: bool) -> None:
    """Only loopback interfaces and UNIX sockets count as unexposed endpoints."""
    assert is_loopback_endpoint(description) is loopback
    assert exposed_endpoints([description]) == ([] if loopback else [description])


# -- protected mode ---------------------------------------------------------------------------


def parse(*argv: str, env_token: str | None = None) -> Options:
    options = Options()
    previous = os.environ.pop("KERNEL_RELAY_TOKEN", None)
    if env_token is not None:
        os.environ["KERNEL_RELAY_TOKEN"] = env_token
    try:
        options.parseOptions(list(argv))
    finally:
        os.environ.pop("KERNEL_RELAY_TOKEN", None)
        if previous is not None:
            os.environ["KERNEL_RELAY_TOKEN"] = previous
    return options


def test_default_loopback_listener_needs_no_token() -> None:
    """The seed's way of starting (a bare port, loopback only) works without a token."""
    options = parse("3000")
    assert options["token"] is None
    assert all(is_loopback_endpoint(e) for e in options.endpoints())


def test_exposed_listener_without_token_is_refused() -> None:
    """Listening on 0.0.0.0 without a token is a usage error that names protected mode and the fixes."""
    with pytest.raises(usage.UsageError) as raised:
        parse("--listen", "tcp:3000:interface=0.0.0.0")
    message = str(raised.value)
    assert "protected mode" in message
    assert "--token" in message and "--no-auth" in message and "--generate-token" in message


@pytest.mark.parametrize(
    ("description", "named"),
    [("bogus:1", "Unknown endpoint type"), ("tcp:abc", "abc"), ("tcp:3000:colour=red", "colour")],
)
def test_a_malformed_endpoint_is_named_as_such(description: str, named: str) -> None:
    """A typo in --listen is a usage error naming it, with or without a token, not protected mode."""
    for extra in ((), ("--token", "abc")):
        with pytest.raises(usage.UsageError) as raised:
            parse("--listen", description, *extra)
        message = str(raised.value)
        assert message.startswith(f"--listen {description}: ") and named in message
        assert "protected mode" not in message


@pytest.mark.parametrize(
    "value", ["notanorigin", "app.example.com", "https://app.example.com/path"]
)
def test_an_allowed_origin_must_be_an_origin(value: str) -> None:
    """An --allow-origin that no browser could send (no scheme, a path) is a usage error, not a silent no-op."""
    with pytest.raises(usage.UsageError, match="is not an origin"):
        parse("--allow-origin", value)
    assert parse("--allow-origin", "https://*.example.com/")["allow-origin"] == [
        "https://*.example.com/"
    ]


def test_exposed_listener_with_token_or_no_auth_is_accepted() -> None:
    """A token (option or environment) or an explicit --no-auth lifts protected mode."""
    assert parse("--listen", "tcp:3000", "--token", "abc")["token"] == "abc"
    assert parse("--listen", "tcp:3000", env_token="fromenv")["token"] == "fromenv"
    assert parse("--listen", "tcp:3000", "--no-auth")["no-auth"]
    with pytest.raises(usage.UsageError):
        parse("--listen", "tcp:3000", "--no-auth", "--token", "abc")


def test_twist_refuses_to_start_exposed_without_token(tmp_path: Path) -> None:
    """`twist kernel-relay --listen tcp:PORT` without a token exits non-zero with a clear message."""
    port = free_port()
    env = {"PATH": "/usr/bin:/bin", "JUPYTER_RUNTIME_DIR": str(tmp_path)}
    result = subprocess.run(
        [*TWIST, "--listen", f"tcp:{port}"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env=env,
    )
    assert result.returncode != 0
    assert "protected mode" in result.stdout + result.stderr


def test_generate_token_prints_one_and_exits() -> None:
    """`twist kernel-relay --generate-token` prints a fresh token and exits 0."""
    result = subprocess.run(
        [*TWIST, "--generate-token"], capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert result.returncode == 0, result.stderr
    token = result.stdout.strip()
    assert len(token) == 43


# -- a live relay with a token ----------------------------------------------------------------


@pytest.mark.parametrize(
    "route", ["/api/kernels", "/api/kernelspecs", "/metrics", "/spawn/python3"]
)
def test_rest_without_token_is_401_json(secured: Relay, route: str) -> None:
    """Every REST route but /api/health answers 401 JSON to a request without the token."""
    response = requests.get(f"{secured.url}{route}", timeout=30)
    assert response.status_code == 401
    assert "Authentication required" in response.json()["error"]
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_rest_with_a_wrong_token_is_401(secured: Relay) -> None:
    """A wrong token in any accepted place is refused."""
    for kwargs in (
        {"headers": {"Authorization": "Bearer wrong"}},
        {"headers": {"Authorization": f"Basic {TOKEN}"}},
        {"params": {"token": TOKEN[:-1]}},
    ):
        response = requests.get(f"{secured.url}/api/kernels", timeout=30, **kwargs)  # type: ignore[arg-type]
        assert response.status_code == 401, kwargs


def test_rest_with_the_token_in_each_place(secured: Relay) -> None:
    """'token <t>', 'Bearer <t>' and ?token=<t> are each accepted."""
    for kwargs in (
        {"headers": {"Authorization": f"token {TOKEN}"}},
        {"headers": {"Authorization": f"Bearer {TOKEN}"}},
        {"params": {"token": TOKEN}},
    ):
        response = requests.get(f"{secured.url}/api/kernels", timeout=30, **kwargs)  # type: ignore[arg-type]
        assert response.status_code == 200, kwargs
        assert isinstance(response.json(), list)


def test_health_is_open(secured: Relay) -> None:
    """GET /api/health needs no token, so load balancers can probe it."""
    response = requests.get(f"{secured.url}/api/health", timeout=30)
    assert response.status_code == 200
    assert response.json()["status"] == "ok"


def test_namespace_connect_without_token_is_refused(secured: Relay, secured_kernel: str) -> None:
    """A socket.io client without auth gets a connect error saying authentication is required."""
    client = socketio.Client(reconnection=False)
    with pytest.raises(socketio.exceptions.ConnectionError) as raised:
        client.connect(secured.url, namespaces=[f"/iopub/{secured_kernel}"], wait_timeout=10)
    client.disconnect()
    assert "Authentication required" in str(raised.value) or "namespace" in str(raised.value)
    wrong = socketio.Client(reconnection=False)
    with pytest.raises(socketio.exceptions.ConnectionError):
        wrong.connect(
            secured.url,
            namespaces=[f"/shell/{secured_kernel}"],
            auth={"token": "wrong"},
            wait_timeout=10,
        )
    wrong.disconnect()


def test_refusal_message_reaches_the_client(secured: Relay, secured_kernel: str) -> None:
    """The CONNECT_ERROR carries the message 'Authentication required' to the client's handler."""
    refusals: list[object] = []
    client = socketio.Client(reconnection=False)
    namespace = f"/iopub/{secured_kernel}"
    client.on("connect_error", lambda data: refusals.append(data), namespace=namespace)
    with pytest.raises(socketio.exceptions.ConnectionError):
        client.connect(secured.url, namespaces=[namespace], wait_timeout=10)
    client.disconnect()
    assert refusals and "Authentication required" in str(refusals[0])


@pytest.mark.parametrize("transports", [["polling", "websocket"], ["websocket"]])
def test_kernel_round_trip_with_auth_payload(
    secured: Relay, secured_kernel: str, transports: list[str]
) -> None:
    """With auth {"token": ...} a client joins shell and iopub and runs code."""
    client = RelayKernelClient(
        secured.url,
        secured_kernel,
        ("shell", "iopub"),
        transports=transports,
        auth={"token": TOKEN},
    )
    try:
        _, reply = client.execute("6 * 7")
        assert reply["content"]["status"] == "ok"
    finally:
        client.close()


def test_token_in_handshake_header_is_accepted(secured: Relay, secured_kernel: str) -> None:
    """A client that can only set headers may send the token as Authorization on the handshake."""
    client = RelayKernelClient(
        secured.url,
        secured_kernel,
        ("shell",),
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    try:
        msg_id = client.send("shell", "kernel_info_request")
        assert client.reply_to("shell", msg_id)["content"]["status"] == "ok"
    finally:
        client.close()


def test_auth_failures_are_counted(secured: Relay) -> None:
    """Refused requests show up in kernel_relay_errors_total{kind="auth"}."""
    requests.get(f"{secured.url}/api/kernels", timeout=30)
    text = requests.get(f"{secured.url}/metrics", headers=secured.headers, timeout=30).text
    line = next(
        x for x in text.splitlines() if x.startswith('kernel_relay_errors_total{kind="auth"}')
    )
    assert float(line.split()[-1]) >= 1


def test_preflight_needs_no_token_and_cors_credentials_are_exact(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """A CORS preflight from an allowed origin is answered without a token; the real request needs it."""
    origin = "https://app.example.com"
    with Relay(
        tmp_path_factory.mktemp("runtime"), "--allow-origin", "https://*.example.com", token=TOKEN
    ) as relay:
        preflight = requests.options(
            f"{relay.url}/spawn/python3",
            headers={
                "Origin": origin,
                "Access-Control-Request-Method": "GET",
                "Access-Control-Request-Headers": "authorization",
            },
            timeout=30,
        )
        assert preflight.status_code == 204
        assert preflight.headers["Access-Control-Allow-Origin"] == origin
        assert preflight.headers["Access-Control-Allow-Credentials"] == "true"
        assert "Authorization" in preflight.headers["Access-Control-Allow-Headers"]
        unauthenticated = requests.get(
            f"{relay.url}/api/kernels", headers={"Origin": origin}, timeout=30
        )
        assert unauthenticated.status_code == 401
        # The browser can read the 401 (CORS headers are on it) and tell the user why.
        assert unauthenticated.headers["Access-Control-Allow-Origin"] == origin
        allowed = requests.get(
            f"{relay.url}/api/kernels",
            headers={"Origin": origin, "Authorization": f"Bearer {TOKEN}"},
            timeout=30,
        )
        assert allowed.status_code == 200
        foreign = requests.options(
            f"{relay.url}/spawn/python3", headers={"Origin": "https://evil.test"}, timeout=30
        )
        assert foreign.status_code == 403
        assert "Access-Control-Allow-Origin" not in foreign.headers


@pytest.mark.skipif(not node_available(), reason="Node and npm are not installed")
@pytest.mark.parametrize("generation", ["4", "2", "1"])
def test_node_clients_pass_the_token(secured: Relay, secured_kernel: str, generation: str) -> None:
    """socket.io-client 4 (auth option) and 1.x/2.x (namespace query) get in with the token, not without."""
    ensure_node_modules()
    script = ROOT / "tests" / "auth-node" / "auth_client.js"

    def attempt(token: str) -> dict[str, str]:
        completed = subprocess.run(
            ["node", str(script), secured.url, secured_kernel, token, generation],
            capture_output=True,
            text=True,
            timeout=90,
        )
        result: dict[str, str] = json.loads(completed.stdout.strip().splitlines()[-1])
        return result

    assert attempt(TOKEN) == {"status": "ok"}
    for token in ("", "wrong"):
        refused = attempt(token)
        assert "Authentication required" in refused["refused"], refused

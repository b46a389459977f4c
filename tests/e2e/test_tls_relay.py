"""TLS through a Twisted ``ssl:`` endpoint: HTTPS REST and a WSS/polling socket.io round trip."""

from __future__ import annotations

import datetime
import ipaddress
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import socketio
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.conftest import Relay
from tests.support import free_port, node_available, run_node, wait_for_port

TOKEN = "tls-token-" + "t" * 20


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A throwaway key and certificate for 127.0.0.1, written as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_path, cert_path = directory / "key.pem", directory / "cert.pem"
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return key_path, cert_path


@pytest.fixture(scope="module")
def tls_relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Relay, str, Path]]:
    """A relay with a token listening on ssl:<port> on 127.0.0.1 (beside its plain loopback port)."""
    directory = tmp_path_factory.mktemp("tls")
    key, cert = self_signed(directory)
    port = free_port()
    server = Relay(
        tmp_path_factory.mktemp("runtime"),
        "--listen",
        f"ssl:{port}:privateKey={key}:certKey={cert}:interface=127.0.0.1",
        token=TOKEN,
    )
    try:
        wait_for_port(port, server.process)
        yield server, f"https://127.0.0.1:{port}", cert
    finally:
        server.stop()


def test_https_rest_with_the_certificate(tls_relay: tuple[Relay, str, Path]) -> None:
    """Over HTTPS, verified against the throwaway certificate, the REST API spawns and shuts down."""
    _, url, cert = tls_relay
    headers = {"Authorization": f"Bearer {TOKEN}"}
    assert requests.get(f"{url}/api/health", verify=str(cert), timeout=30).json()["status"] == "ok"
    spawned = requests.get(f"{url}/spawn/python3", headers=headers, verify=str(cert), timeout=90)
    assert spawned.status_code == 200
    kernel_id = spawned.json()["id"]
    stopped = requests.get(
        f"{url}/shutdown/{kernel_id}", headers=headers, verify=str(cert), timeout=60
    )
    assert stopped.status_code == 200


def test_https_refuses_unverified_clients(tls_relay: tuple[Relay, str, Path]) -> None:
    """A client that does not trust the certificate cannot talk to the relay (it really is TLS)."""
    _, url, _ = tls_relay
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(f"{url}/api/health", timeout=30)


@pytest.mark.parametrize("transport", ["websocket", "polling"])
def test_node_client_over_tls(
    tls_relay: tuple[Relay, str, Path], transport: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stock socket.io-client over WSS (or HTTPS polling) runs code on a kernel and gets its output."""
    if not node_available():
        pytest.skip("node and npm are needed")
    relay, url, cert = tls_relay
    monkeypatch.setenv("NODE_EXTRA_CA_CERTS", str(cert))
    kernel_id = relay.spawn()
    try:
        completed = run_node("relay/tls_round_trip.js", url, kernel_id, TOKEN, transport)
        assert completed.returncode == 0, completed.stderr
        result = json.loads(completed.stdout.strip().splitlines()[-1])
        assert result["errors"] == []
        assert result["transport"] == transport
        assert result["replies"] == ["ok"] and "42\n" in result["outputs"]
    finally:
        relay.shutdown(kernel_id)


# WSS is tested with Node's socket.io-client above: python-socketio's WebSocket client drops about
# 1 WSS connection in 20 to 40 a few milliseconds after connecting, on this relay's code before and
# after stop 11 alike. The relay then reads EOF from the client and the client reports "TLS/SSL
# connection has been closed (EOF)"; a raw single-threaded WSS client made 60 of 60 round trips.
# The likely cause is that websocket-client reads and writes one ssl socket from two threads.
@pytest.mark.parametrize("transports", [["polling"]])
def test_wss_kernel_round_trip(
    tls_relay: tuple[Relay, str, Path], transports: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A python-socketio client over HTTPS polling runs code on a kernel and gets its output."""
    relay, url, cert = tls_relay
    # python-engineio's polling passes verify=True per request, which requests resolves from here.
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(cert))
    kernel_id = relay.spawn()
    session = requests.Session()
    session.verify = str(cert)
    client = socketio.Client(reconnection=False, http_session=session)
    outputs: list[str] = []
    replies: list[dict[str, object]] = []
    client.on(
        "msg",
        lambda m: outputs.append(m["content"].get("text", "")),
        namespace=f"/iopub/{kernel_id}",
    )
    client.on("msg", replies.append, namespace=f"/shell/{kernel_id}")
    try:
        client.connect(
            url,
            namespaces=[f"/iopub/{kernel_id}", f"/shell/{kernel_id}"],
            transports=transports,
            auth={"token": TOKEN},
            wait_timeout=20,
        )
        assert client.transport() == transports[0]
        client.emit(
            "msg",
            {"header": {"msg_type": "execute_request"}, "content": {"code": "print(40 + 2)"}},
            namespace=f"/shell/{kernel_id}",
        )
        for _ in range(300):
            if replies and "42\n" in outputs:
                break
            client.sleep(0.1)
        assert replies and "42\n" in outputs
    finally:
        client.disconnect()
        relay.shutdown(kernel_id)

"""
Bad input against a live relay over loopback (hypothesis): random and mutated HTTP requests, polling
payloads, WebSocket frames, socket.io packets and Jupyter messages. After each batch a fresh client
runs code end to end, and a client connected all along has lost no iopub message.
"""

from __future__ import annotations

import base64
import json
import socket
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import socketio
import websocket
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import Relay
from tests.kernel_client import RelayKernelClient

pytestmark = pytest.mark.timeout(600)

FUZZ = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    database=None,
)

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


class Witness:
    """A client connected for the whole module: each check it prints N lines and must get all N."""

    def __init__(self, relay: Relay, kernel_id: str) -> None:
        self.client = RelayKernelClient(relay.url, kernel_id, ("shell", "iopub"))
        self.round = 0

    def check(self) -> None:
        self.round += 1
        lines = 30
        msg_id, reply = self.client.execute(
            f"for i in range({lines}): print('round{self.round}-line', i, flush=True)", timeout=60
        )
        assert reply["content"]["status"] == "ok"
        text = "".join(m["content"]["text"] for m in self.client.iopub_for(msg_id, "stream"))
        assert text.count(f"round{self.round}-line") == lines
        assert not self.client.disconnected


@pytest.fixture(scope="module")
def fuzzed(relay: Relay, kernel_id: str) -> Iterator[tuple[Relay, str, Witness]]:
    witness = Witness(relay, kernel_id)
    try:
        yield relay, kernel_id, witness
    finally:
        witness.client.close()


def after_batch(relay: Relay, kernel_id: str, witness: Witness) -> None:
    """The relay is alive, a fresh client runs code, and the witness lost nothing."""
    assert relay.process.poll() is None, relay.output()[-2000:]
    fresh = RelayKernelClient(relay.url, kernel_id, ("shell", "iopub"))
    try:
        _, reply = fresh.execute("'fresh'")
        assert reply["content"]["status"] == "ok"
    finally:
        fresh.close()
    witness.check()


def send_raw(port: int, data: bytes) -> bytes:
    """Send bytes on a new connection and read what comes back until the server closes (or 5 s pass)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        chunks = []
        try:
            raw.sendall(data)
            while sum(map(len, chunks)) < 65536:
                chunk = raw.recv(4096)
                if not chunk:
                    break
                chunks.append(chunk)
        except (TimeoutError, ConnectionResetError, BrokenPipeError):
            pass
        return b"".join(chunks)


def polling_sid(relay: Relay) -> str:
    text = requests.get(f"{relay.url}/socket.io/?EIO=4&transport=polling", timeout=30).text
    sid: str = json.loads(text[1:])["sid"]
    return sid


@st.composite
def http_requests(draw: st.DrawFn, kernel_id: str) -> bytes:
    method = draw(st.sampled_from(["GET", "POST", "PUT", "OPTIONS", "DELETE", "HEAD", "GE\x00T"]))
    path = draw(
        st.sampled_from(
            [
                "/spawn/",
                "/shutdown/",
                "/api/kernels",
                "/api/kernelspecs",
                "/metrics",
                "/api/health",
                "/socket.io/",
                f"/shutdown/x{kernel_id}",
                "/",
            ]
        )
    ) + draw(st.text(alphabet=st.characters(codec="latin-1"), max_size=30))
    query = draw(
        st.sampled_from(["", "?EIO=4&transport=polling", "?EIO=9", "?sid=nope", "?token="])
    )
    headers = draw(
        st.lists(
            st.tuples(
                st.sampled_from(["Origin", "Host", "Content-Length", "Authorization", "X-Junk"]),
                st.text(
                    alphabet=st.characters(codec="latin-1", exclude_characters="\r\n"), max_size=40
                ),
            ),
            max_size=4,
        )
    )
    body = draw(st.binary(max_size=200))
    head = f"{method} {path}{query} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
    head += "".join(f"{name}: {value}\r\n" for name, value in headers)
    data = head.encode("latin-1") + f"Content-Length: {len(body)}\r\n\r\n".encode() + body
    if draw(st.booleans()):  # mutate a few bytes
        mutable = bytearray(data)
        for index in draw(st.lists(st.integers(0, len(mutable) - 1), max_size=5)):
            mutable[index] = draw(st.integers(0, 255))
        data = bytes(mutable)
    return data


def test_random_http_requests(fuzzed: tuple[Relay, str, Witness]) -> None:
    """Random and mutated HTTP requests never get a 5xx but the contract's JSON spawn/shutdown 500."""
    relay, kernel_id, witness = fuzzed
    answers: list[bytes] = []

    @FUZZ
    @given(data=st.data())
    def run(data: st.DataObject) -> None:
        request = data.draw(http_requests(kernel_id))
        answer = send_raw(relay.port, request)
        answers.append(answer[:12])
        if answer.startswith(b"HTTP/1.1 5"):
            # Ours (JSON; a HEAD answer has no body), never Twisted's "Processing Failed" page.
            assert b"Content-Type: application/json" in answer, answer[:300]

    run()
    assert sum(answer.startswith(b"HTTP/1.1 ") for answer in answers) > len(answers) // 2
    after_batch(relay, kernel_id, witness)


def test_non_ascii_host_is_a_json_400(fuzzed: tuple[Relay, str, Witness]) -> None:
    """A Host header that is not ASCII gets a JSON 400 on every route (Klein used to fail with a 500)."""
    relay, kernel_id, witness = fuzzed
    for path in ("/api/kernels", "/spawn/python3", "/", "/nothing"):
        answer = send_raw(
            relay.port,
            f"GET {path} HTTP/1.1\r\nConnection: close\r\nHost: ".encode() + b"\xc2\x8fL\r\n\r\n",
        )
        assert answer.startswith(b"HTTP/1.1 400"), answer[:200]
        assert b"Invalid Host header" in answer
    after_batch(relay, kernel_id, witness)


def test_a_path_that_is_not_utf8_is_a_json_400_without_a_traceback(
    fuzzed: tuple[Relay, str, Witness],
) -> None:
    """Klein logged such paths as critical errors with a traceback: anyone could fill the log with them."""
    relay, kernel_id, witness = fuzzed
    for path in ("/spawn/%ff%fe", "/%c3%28", "/api/kernels/%80/interrupt"):
        answer = send_raw(relay.port, f"GET {path} HTTP/1.1\r\nConnection: close\r\n\r\n".encode())
        assert answer.startswith(b"HTTP/1.1 400"), answer[:200]
        assert b"not UTF-8" in answer and b"application/json" in answer
    assert "Invalid encoding in PATH_INFO" not in relay.output()
    after_batch(relay, kernel_id, witness)


def test_random_polling_payloads(fuzzed: tuple[Relay, str, Witness]) -> None:
    """Random bodies POSTed to a polling session (bad packets, invalid UTF-8, bad base64) do no harm."""
    relay, kernel_id, witness = fuzzed
    payloads = st.one_of(
        st.binary(max_size=300),
        st.text(max_size=300).map(lambda t: t.encode("utf-8")),
        st.text(max_size=60).map(lambda t: b"b" + t.encode("utf-8")),
        st.binary(max_size=60).map(lambda b: b"b" + base64.b64encode(b) + b"!"),
        st.just(b"4" + b"\xff\xfe\xfd"),
        st.lists(st.text(max_size=20), max_size=5).map(lambda parts: "\x1e".join(parts).encode()),
    )

    @FUZZ
    @given(body=payloads)
    def run(body: bytes) -> None:
        sid = polling_sid(relay)
        response = requests.post(
            f"{relay.url}/socket.io/?EIO=4&transport=polling&sid={sid}", data=body, timeout=30
        )
        assert response.status_code < 500

    run()
    after_batch(relay, kernel_id, witness)


def test_random_websocket_frames(fuzzed: tuple[Relay, str, Witness]) -> None:
    """Random text and binary frames, invalid UTF-8 and stray socket.io packets over WebSocket do no harm."""
    relay, kernel_id, witness = fuzzed
    packets = st.one_of(
        st.text(max_size=200),
        st.binary(max_size=200),
        st.builds(
            lambda ns, data: f"4{ns}{data}",
            st.sampled_from(["2", "3", "5", "0", "1", "6"]),
            st.text(max_size=50),
        ),
        st.builds(
            lambda n, rest: f"45{n}-/shell/{kernel_id},{rest}",
            st.integers(-3, 5000),
            st.text(max_size=50),
        ),
        json_values.map(lambda v: f"42/shell/{kernel_id}," + json.dumps(["msg", v])),
        json_values.map(lambda v: f"42/iopub/{kernel_id}," + json.dumps(v)),
    )

    @FUZZ
    @given(frames=st.lists(packets, min_size=1, max_size=5), join_first=st.booleans())
    def run(frames: list[str | bytes], join_first: bool) -> None:
        ws = websocket.create_connection(
            f"ws://127.0.0.1:{relay.port}/socket.io/?EIO=4&transport=websocket", timeout=30
        )
        try:
            ws.recv()
            if join_first:
                ws.send(f"40/shell/{kernel_id},")
            for frame in frames:
                if isinstance(frame, bytes):
                    ws.send_binary(frame)
                else:
                    ws.send(frame)
            ws.send_frame(websocket.ABNF.create_frame(b"4\xff\xfe", websocket.ABNF.OPCODE_TEXT))
        except (websocket.WebSocketException, OSError):
            pass
        finally:
            ws.close()

    run()
    after_batch(relay, kernel_id, witness)


def test_random_jupyter_messages(fuzzed: tuple[Relay, str, Witness]) -> None:
    """Malformed Jupyter messages (wrong types, no header, huge content, bad buffers) get "error" events."""
    relay, kernel_id, witness = fuzzed
    client = socketio.Client(reconnection=False)
    errors: list[Any] = []
    namespace = f"/shell/{kernel_id}"
    client.on("error", errors.append, namespace=namespace)
    client.connect(relay.url, namespaces=[namespace], transports=["websocket"], wait_timeout=10)
    messages = st.one_of(
        json_values,
        st.builds(lambda c: {"content": c}, json_values),
        st.builds(lambda h: {"header": h, "content": {}}, json_values),
        st.builds(
            lambda t, c: {"header": {"msg_type": t}, "content": c},
            st.sampled_from(["execute_request", "kernel_info_request", "", "x" * 300]),
            json_values,
        ),
        st.builds(
            lambda b: {"header": {"msg_type": "comm_msg"}, "content": {}, "buffers": b},
            st.lists(
                st.one_of(st.binary(max_size=50), st.integers(), st.text(max_size=5)), max_size=4
            ),
        ),
    )
    sent = 0
    try:

        @FUZZ
        @given(message=messages)
        def run(message: Any) -> None:
            nonlocal sent
            client.emit("msg", message, namespace=namespace)
            sent += 1

        run()
        # A huge message and one with many attachments.
        client.emit(
            "msg",
            {"header": {"msg_type": "comm_msg"}, "content": {"data": "h" * 3_000_000}},
            namespace=namespace,
        )
        client.emit(
            "msg",
            {"header": {"msg_type": "comm_msg"}, "content": {}, "buffers": [b"b"] * 200},
            namespace=namespace,
        )
        client.emit("msg", ("a", "b"), namespace=namespace)
        client.sleep(1)
        connected = client.connected
    finally:
        client.disconnect()
        after_batch(relay, kernel_id, witness)
    assert connected, "a malformed Jupyter message cost the client its connection"
    assert errors, "malformed messages were dropped silently"
    after_batch(relay, kernel_id, witness)

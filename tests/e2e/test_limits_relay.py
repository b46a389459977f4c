"""Limits of a live relay: kernels, clients per kernel, message size both ways, slow clients, culling."""

from __future__ import annotations

import base64
import json
import socket
import threading
import time

import psutil
import pytest
import requests
import socketio
import websocket

from tests.conftest import Relay, kernel_fixture, relay_fixture
from tests.kernel_client import RelayKernelClient

#: The relay's memory measured: under `pytest -n` not beside another such file (tests/conftest.py).
pytestmark = [pytest.mark.timeout(240), pytest.mark.usefixtures("one_at_a_time")]

MAX_MESSAGE = 200_000


limited = relay_fixture(
    "--max-kernels",
    "2",
    "--max-clients-per-kernel",
    "2",
    "--max-message-size",
    str(MAX_MESSAGE),
)


limited_kernel = kernel_fixture("limited")


def test_max_kernels(limited: Relay, limited_kernel: str) -> None:
    """A spawn beyond --max-kernels answers the contract's 500 {"error"}; a slot freed is usable again."""
    second = limited.spawn()
    refused = requests.get(f"{limited.url}/spawn/python3", timeout=90)
    assert refused.status_code == 500
    assert "maximum of 2 kernels" in refused.json()["error"]
    assert len(limited.kernels()) == 2
    assert limited.shutdown(second).status_code == 200
    third = limited.spawn()
    assert limited.shutdown(third).status_code == 200


def test_max_clients_per_kernel(limited: Relay, limited_kernel: str) -> None:
    """A third client of a kernel is refused with a reason; one client on many namespaces counts once."""
    first = RelayKernelClient(limited.url, limited_kernel, ("shell", "iopub", "stdin", "control"))
    second = RelayKernelClient(limited.url, limited_kernel, ("iopub",))
    refusals: list[object] = []
    third = socketio.Client(reconnection=False)
    namespace = f"/iopub/{limited_kernel}"
    third.on("connect_error", lambda data: refusals.append(data), namespace=namespace)
    try:
        with pytest.raises(socketio.exceptions.ConnectionError):
            third.connect(limited.url, namespaces=[namespace], wait_timeout=10)
        assert refusals and "maximum of 2 clients" in str(refusals[0])
        _, reply = first.execute("1 + 1")
        assert reply["content"]["status"] == "ok"
    finally:
        third.disconnect()
        first.close()
        second.close()
    # Once they left, a new client gets in.
    fourth = RelayKernelClient(limited.url, limited_kernel, ("shell",))
    fourth.close()


def test_oversized_kernel_message_is_an_error_event(limited: Relay, limited_kernel: str) -> None:
    """Kernel output over --max-message-size is not forwarded: the client gets an "error" event naming it."""
    client = RelayKernelClient(limited.url, limited_kernel, ("shell", "iopub"))
    try:
        msg_id, reply = client.execute(f"print('z' * {MAX_MESSAGE * 2}, flush=True)")
        assert reply["content"]["status"] == "ok"
        client.wait_for(lambda: client.errors, what="an error event")
        error = client.errors[0]
        assert "exceeds the relay's limit" in error["message"]
        assert error["msg_type"] == "stream"
        assert error["parent_msg_id"] == msg_id
        assert not any("z" * 1000 in m["content"].get("text", "") for m in client.iopub_for(msg_id))
        small_id, _ = client.execute("print('small')")
        texts = [m["content"]["text"] for m in client.iopub_for(small_id, "stream")]
        assert "".join(texts) == "small\n"
    finally:
        client.close()


def test_oversized_client_message_drops_only_that_client(
    limited: Relay, limited_kernel: str
) -> None:
    """A client sending more than --max-message-size is disconnected; another client carries on."""
    bystander = RelayKernelClient(limited.url, limited_kernel, ("shell",))
    big = socketio.Client(reconnection=False)
    gone: list[str] = []
    big.on("disconnect", lambda *args: gone.append("x"), namespace=f"/shell/{limited_kernel}")
    big.connect(
        limited.url,
        namespaces=[f"/shell/{limited_kernel}"],
        transports=["websocket"],
        wait_timeout=10,
    )
    try:
        big.emit(
            "msg",
            {
                "header": {"msg_type": "execute_request"},
                "content": {"code": "#" + "x" * (MAX_MESSAGE * 2)},
            },
            namespace=f"/shell/{limited_kernel}",
        )
        deadline = time.monotonic() + 30
        while not gone and time.monotonic() < deadline:
            time.sleep(0.1)
        assert gone
        msg_id = bystander.send("shell", "kernel_info_request")
        assert bystander.reply_to("shell", msg_id)["content"]["status"] == "ok"
    finally:
        big.disconnect()
        bystander.close()


def raw_iopub_reader(
    url_port: int, kernel_id: str, receive_buffer: int | None = 32 * 1024
) -> websocket.WebSocket:
    """A WebSocket socket.io client joined to /iopub/<id>, with a small receive buffer by default."""
    sockopt = (
        [] if receive_buffer is None else [(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)]
    )
    ws = websocket.create_connection(
        f"ws://127.0.0.1:{url_port}/socket.io/?EIO=4&transport=websocket",
        timeout=30,
        sockopt=sockopt,
    )
    opened = ws.recv()
    assert opened.startswith("0{")
    ws.send(f"40/iopub/{kernel_id},")
    joined = ws.recv()
    assert joined.startswith(f"40/iopub/{kernel_id},"), joined
    return ws


def count_stream_bytes(ws: websocket.WebSocket, expected: int, counted: list[int]) -> None:
    """Read iopub packets until ``expected`` characters of stream text arrived (or the socket ends)."""
    while counted[0] < expected:
        try:
            frame = ws.recv()
        except Exception:
            return
        if isinstance(frame, str) and frame.startswith("42/iopub/"):
            event = json.loads(frame[frame.index(",") + 1 :])
            message = event[1]
            if message["header"]["msg_type"] == "stream":
                counted[0] += message["content"]["text"].count("y")
        elif frame == "2":
            ws.send("3")


def test_slow_client_is_dropped_and_others_lose_nothing(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """An iopub client that stops reading is dropped as "slow client"; a reading client gets every byte."""
    # 2 MB/s for 6 s: three times the slow client's bound, and a pace the reading client keeps up with
    # on a loaded machine (at 5 MB/s, beside three test workers, it was dropped as slow too).
    chunk, count = 100_000, 120
    with Relay(tmp_path_factory.mktemp("runtime"), "--max-buffered-bytes", "4000000") as relay:
        kernel_id = relay.spawn()
        shell = RelayKernelClient(relay.url, kernel_id, ("shell",))
        reader = raw_iopub_reader(relay.port, kernel_id)
        slow = raw_iopub_reader(relay.port, kernel_id)
        counted = [0]
        thread = threading.Thread(
            target=count_stream_bytes, args=(reader, chunk * count, counted), daemon=True
        )
        thread.start()
        try:
            msg_id = shell.send(
                "shell",
                "execute_request",
                {
                    "code": f"import time\nfor i in range({count}):\n"
                    f"    print('y' * {chunk}, flush=True); time.sleep(0.05)",
                    "silent": False,
                },
            )
            reply = shell.reply_to("shell", msg_id, timeout=120)
            assert reply["content"]["status"] == "ok"
            thread.join(60)
            assert counted[0] == chunk * count
            deadline = time.monotonic() + 30
            while "slow client" not in relay.output() and time.monotonic() < deadline:
                time.sleep(0.2)
            assert "slow client" in relay.output()
            metrics = requests.get(f"{relay.url}/metrics", timeout=30).text
            assert 'kernel_relay_errors_total{kind="slow_client"} 1.0' in metrics
        finally:
            slow.close()
            reader.close()
            shell.close()
            relay.shutdown(kernel_id)


def binary_event_of(reader: websocket.WebSocket, msg_id: str, attachments: int) -> str:
    """
    Read (answering pings) up to the binary event, of ``attachments`` attachments, that carries
    ``msg_id``; its attachments are the next frames.
    """
    while True:
        text = reader.recv()
        if text == "2":
            reader.send("3")
        elif isinstance(text, str) and text.startswith(f"45{attachments}-") and msg_id in text:
            return text


def display_code(char: str, size: int, buffers: str) -> str:
    """Kernel code publishing a display_data of ``size`` times ``char`` with ``buffers`` (Python code)."""
    return (
        "k = get_ipython().kernel\n"
        "k.session.send(k.iopub_socket, 'display_data',\n"
        f"    {{'data': {{'text/plain': {char!r} * {size}}}, 'metadata': {{}}}},\n"
        f"    parent=k.get_parent('shell'), buffers={buffers})"
    )


def test_max_payload_limits_what_clients_send_not_what_they_receive(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """
    Kernel output bigger than --max-payload reaches WebSocket clients whole, binary buffer included.

    (Autobahn applies its incoming message limit to outgoing messages too; when it framed our
    messages, a large buffer raised after its socket.io header had gone out.)
    """
    limit, size = 100_000, 300_000
    with Relay(tmp_path_factory.mktemp("runtime"), "--max-payload", str(limit)) as relay:
        kernel_id = relay.spawn()
        client = RelayKernelClient(relay.url, kernel_id, ("shell", "iopub"), ["websocket"])
        try:
            code = display_code("x", size, f"[bytes(range(256)) * {size // 256}]")
            msg_id, reply = client.execute(code)
            assert reply["content"]["status"] == "ok"
            (display,) = client.wait_for(lambda: client.iopub_for(msg_id, "display_data"))
            assert display["content"]["data"]["text/plain"] == "x" * size
            assert display["buffers"] == [bytes(range(256)) * (size // 256)]
            assert client.errors == [] and client.disconnected == []
        finally:
            client.close()
            relay.shutdown(kernel_id)


def test_large_kernel_output_reaches_every_client_whole(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """
    A 3 MB display text and a 3 MB buffer reach a WebSocket and a polling client byte for byte, in order.

    Frames of 64 KiB or more are passed on as views of the kernel's ZMQ message, and sent to a
    WebSocket from that memory while its socket takes them; both clients share them. Both iopub
    clients are raw: python-socketio's client handles each Engine.IO message in a thread of its own
    (over WebSocket and polling alike), so it may put a packet's attachments out of order by itself.
    """
    size = 3 * 1024 * 1024 + 7
    expected = (bytes(range(251)) * (size // 251 + 1))[:size]
    with Relay(tmp_path_factory.mktemp("runtime")) as relay:
        kernel_id = relay.spawn()
        poller = requests.Session()
        base = f"{relay.url}/socket.io/?EIO=4&transport=polling"
        handshake = poller.get(base, timeout=30).text
        polling = f"{base}&sid={json.loads(handshake[1:])['sid']}"
        poller.post(polling, data=f"40/iopub/{kernel_id},", timeout=30).raise_for_status()
        reader = raw_iopub_reader(relay.port, kernel_id, receive_buffer=None)
        shell = RelayKernelClient(relay.url, kernel_id, ("shell",), ["websocket"])
        try:
            code = display_code(
                "y", size, f"[(bytes(range(251)) * {size // 251 + 1})[:{size}], b'small']"
            )
            msg_id, reply = shell.execute(code)
            assert reply["content"]["status"] == "ok"

            text = binary_event_of(reader, msg_id, 2)
            event = json.loads(text[text.index(",") + 1 :])
            assert event[1]["content"]["data"]["text/plain"] == "y" * size
            assert [reader.recv(), reader.recv()] == [expected, b"small"]

            records: list[str] = []
            deadline = time.monotonic() + 60
            while not any(r.startswith("452-") and msg_id in r for r in records):
                assert time.monotonic() < deadline, "no display_data on the polling client"
                records += poller.get(polling, timeout=60).text.split("\x1e")
            at = next(i for i, r in enumerate(records) if r.startswith("452-") and msg_id in r)
            while len(records) < at + 3:
                records += poller.get(polling, timeout=60).text.split("\x1e")
            event = json.loads(records[at][records[at].index(",") + 1 :])
            assert event[1]["content"]["data"]["text/plain"] == "y" * size
            assert event[1]["buffers"] == [
                {"_placeholder": True, "num": 0},
                {"_placeholder": True, "num": 1},
            ]
            assert records[at + 1] == "b" + base64.b64encode(expected).decode()
            assert records[at + 2] == "b" + base64.b64encode(b"small").decode()
        finally:
            reader.close()
            shell.close()
            relay.shutdown(kernel_id)


def test_kernel_buffers_do_not_pile_up_in_the_relay(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """
    Sixteen 4 MB kernel buffers pass through the relay without its memory growing by theirs: each
    is freed once sent. (The socket.io encoder once kept every buffer in a reference cycle until
    the cyclic garbage collector ran: about 10 MB more resident per 10 MB buffer, and a fresh
    page fault for each of its pages.)
    """
    size, count = 4 * 1024 * 1024, 16
    with Relay(tmp_path_factory.mktemp("runtime")) as relay:
        kernel_id = relay.spawn()
        reader = raw_iopub_reader(relay.port, kernel_id, receive_buffer=None)
        shell = RelayKernelClient(relay.url, kernel_id, ("shell",), ["websocket"])
        process = psutil.Process(relay.process.pid)
        resident: list[int] = []
        try:
            for _ in range(count):
                msg_id, reply = shell.execute(display_code("z", 1, f"[b'b' * {size}]"))
                assert reply["content"]["status"] == "ok"
                binary_event_of(reader, msg_id, 1)
                assert reader.recv() == b"b" * size
                resident.append(process.memory_info().rss)
        finally:
            reader.close()
            shell.close()
            relay.shutdown(kernel_id)
    # From the fourth on (the iopub journal holds up to 8 MiB of recent messages by default).
    grown = resident[-1] - resident[3]
    assert grown < 6 * size, f"relay RSS grew by {grown / 1e6:.0f} MB over {count - 4} buffers"


def test_idle_kernels_are_culled(tmp_path_factory: pytest.TempPathFactory) -> None:
    """--cull-idle-timeout shuts down an idle kernel without clients but spares one with a client."""
    with Relay(
        tmp_path_factory.mktemp("runtime"),
        "--cull-idle-timeout",
        "4",
        "--cull-interval",
        "0.5",
    ) as relay:
        lonely = relay.spawn()
        watched = relay.spawn()
        client = RelayKernelClient(relay.url, watched, ("iopub",))
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                ids = {kernel["id"] for kernel in relay.kernels()}
                if lonely not in ids:
                    break
                time.sleep(0.25)
            ids = {kernel["id"] for kernel in relay.kernels()}
            assert lonely not in ids
            assert watched in ids
            assert "Culling kernel" in relay.output()
            events = [json.loads(x) for x in relay.output().splitlines() if x.startswith("{")]
            culled = [e for e in events if e.get("log_format", "").startswith("Culling kernel {")]
            assert culled and culled[0]["kernel_id"] == lonely
        finally:
            client.close()
            relay.shutdown(watched)


def test_cull_connected_culls_kernels_with_clients(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """With --cull-connected an idle kernel goes even while a client is connected, which is told so."""
    with Relay(
        tmp_path_factory.mktemp("runtime"),
        "--cull-idle-timeout",
        "2",
        "--cull-interval",
        "0.5",
        "--cull-connected",
    ) as relay:
        kernel_id = relay.spawn()
        client = RelayKernelClient(relay.url, kernel_id, ("iopub",))
        try:
            client.wait_for(lambda: client.disconnected, timeout=60, what="a disconnect")
            dead = [
                m for m in client.received["iopub"] if m["content"].get("execution_state") == "dead"
            ]
            assert dead
            assert kernel_id not in {kernel["id"] for kernel in relay.kernels()}
        finally:
            client.close()

"""
The Jupyter kernel WebSocket front with real kernels, framed by Jupyter Server's own serializers (v1 and
legacy): routing, buffers, guards, resume by session_id, kernel death, bad frames.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest
import requests
import websocket

from kernel_relay.fronts.jupyter_connection import UNREAD_SECONDS
from tests.conftest import Relay, relay_fixture
from tests.jupyter_ws import V1, JupyterWS
from tests.kernel_client import RelayKernelClient

pytestmark = pytest.mark.timeout(240)

TOKEN = "jupyter-front-token-0123456789abcdef"
PROTOCOLS = ["v1", "legacy"]

relay = relay_fixture()
guarded = relay_fixture(token=TOKEN)
small_journal = relay_fixture("--iopub-replay-bytes", "4096")

ECHO_COMM = """
def _echo(comm, open_msg):
    @comm.on_msg
    def _got(msg):
        comm.send({"echo": msg["content"]["data"]}, buffers=msg["buffers"])
get_ipython().kernel.comm_manager.register_target("echo", _echo)
"""


def start(relay: Relay) -> str:
    response = requests.post(
        f"{relay.url}/api/kernels", json={"name": "python3"}, headers=relay.headers, timeout=90
    )
    assert response.status_code == 201, response.text
    kernel_id: str = response.json()["id"]
    return kernel_id


@pytest.fixture(scope="module")
def kernel(relay: Relay) -> Iterator[str]:
    kernel_id = start(relay)
    yield kernel_id
    requests.delete(f"{relay.url}/api/kernels/{kernel_id}", timeout=60)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_execute_gives_stream_result_and_reply(relay: Relay, kernel: str, protocol: str) -> None:
    """The subprotocol is chosen as offered; a cell's output and reply arrive as Jupyter Server frames them."""
    client = JupyterWS(relay.url, kernel, protocol=protocol)
    try:
        assert client.subprotocol == (V1 if protocol == "v1" else None)
        msg_id, reply = client.execute("print('hello'); 6*7")
        assert reply["channel"] == "shell" and reply["content"]["status"] == "ok"
        assert [m["content"]["text"] for m in client.iopub_for(msg_id, "stream")] == ["hello\n"]
        (result,) = client.iopub_for(msg_id, "execute_result")
        assert result["content"]["data"]["text/plain"] == "42"
    finally:
        client.close()


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_comm_buffer_travels_both_ways_byte_exact(
    relay: Relay, kernel: str, protocol: str
) -> None:
    """Binary buffers go to the kernel and come back unchanged, in both framings."""
    client = JupyterWS(relay.url, kernel, protocol=protocol)
    try:
        client.execute(ECHO_COMM)
        comm_id = f"c-{protocol}"
        client.send("shell", "comm_open", {"comm_id": comm_id, "target_name": "echo", "data": {}})
        payload = bytes(range(256)) * 256
        client.send("shell", "comm_msg", {"comm_id": comm_id, "data": {"n": 1}}, [payload, b"\x00"])
        echoed = client.wait_for(
            lambda m: m["header"]["msg_type"] == "comm_msg" and m["content"]["comm_id"] == comm_id
        )
        assert echoed["content"]["data"] == {"echo": {"n": 1}}
        assert echoed["buffers"] == [payload, b"\x00"]
    finally:
        client.close()


def test_replies_reach_only_the_asking_client_across_both_fronts(relay: Relay, kernel: str) -> None:
    """A v1, a legacy and a socket.io client on one kernel: each gets its own replies, all get iopub."""
    first, second = JupyterWS(relay.url, kernel), JupyterWS(relay.url, kernel, protocol="legacy")
    sio = RelayKernelClient(relay.url, kernel, ("shell", "iopub"))
    try:
        mine, _ = first.execute("a = 1")
        theirs, _ = second.execute("b = 2")
        sio_id, _ = sio.execute("c = 3")
        second.idle_after(sio_id)
        first.idle_after(sio_id)
        for client, own in ((first, mine), (second, theirs)):
            replies = [m for m in client.received if m["channel"] == "shell"]
            assert [m["parent_header"]["msg_id"] for m in replies] == [own]
        assert first.iopub_for(theirs, "execute_input") and second.iopub_for(mine, "execute_input")
        assert sio.iopub_for(mine, "execute_input")
        assert sio.reply_to("shell", sio_id)["parent_header"]["msg_id"] == sio_id
    finally:
        first.close()
        second.close()
        sio.close()


def test_input_request_goes_to_the_asker_and_its_answer_is_heard(relay: Relay, kernel: str) -> None:
    client = JupyterWS(relay.url, kernel)
    try:
        msg_id = client.send(
            "shell", "execute_request", {"code": "x = input('name? ')", "allow_stdin": True}
        )
        request = client.wait_for(lambda m: m["header"]["msg_type"] == "input_request")
        assert request["channel"] == "stdin" and request["content"]["prompt"] == "name? "
        client.send("stdin", "input_reply", {"value": "relay"})
        client.reply_to(msg_id)
        _, reply = client.execute("assert x == 'relay'")
        assert reply["content"]["status"] == "ok"
    finally:
        client.close()


def test_guards_answer_before_the_upgrade(guarded: Relay) -> None:
    """No token: 401; unknown kernel: 404; a read-only kernel token may read iopub but not send."""
    kernel = start(guarded)
    try:
        for token in (None, "wrong"):
            with pytest.raises(websocket.WebSocketBadStatusException) as refused:
                JupyterWS(guarded.url, kernel, token=token)
            assert refused.value.status_code == 401
        with pytest.raises(websocket.WebSocketBadStatusException) as missing:
            JupyterWS(guarded.url, "no-such-kernel", token=TOKEN)
        assert missing.value.status_code == 404
        full = JupyterWS(guarded.url, kernel, token=TOKEN, token_in_query=True)
        issued = requests.post(
            f"{guarded.url}/api/kernels/{kernel}/tokens",
            json={"access": "read-only"},
            headers=guarded.headers,
            timeout=10,
        ).json()["token"]
        viewer = JupyterWS(guarded.url, kernel, token=issued)
        refused_id = viewer.send("shell", "execute_request", {"code": "1"})
        error = viewer.wait_for(lambda m: m["parent_header"].get("msg_id") == refused_id)
        assert error["header"]["msg_type"] == "stream" and error["content"]["name"] == "stderr"
        assert "may not send on shell" in error["content"]["text"]
        msg_id, _ = full.execute("print('seen')")
        viewer.wait_for(
            lambda m: (
                m["parent_header"].get("msg_id") == msg_id and m["header"]["msg_type"] == "stream"
            )
        )
        full.close()
        viewer.close()
    finally:
        requests.delete(f"{guarded.url}/api/kernels/{kernel}", headers=guarded.headers, timeout=60)


def lines_of(client: JupyterWS, msg_id: str) -> list[str]:
    text = "".join(m["content"]["text"] for m in client.iopub_for(msg_id, "stream"))
    return text.splitlines()


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_session_that_reconnects_gets_what_it_missed_exactly_once(
    relay: Relay, kernel: str, protocol: str
) -> None:
    """
    Disconnect in the middle of a cell; the same session_id comes back and reads every line, in order, at most
    those of the last quarter second before it closed again (a Jupyter client acknowledges nothing).
    """
    client = JupyterWS(relay.url, kernel, protocol=protocol)
    code = "import time\nfor i in range(30):\n    print(i, flush=True)\n    time.sleep(0.05)"
    msg_id = client.send("shell", "execute_request", {"code": code})
    client.wait_for(lambda m: m["header"]["msg_type"] == "stream")
    reading = time.monotonic() + 2 * UNREAD_SECONDS
    while time.monotonic() < reading:
        client.recv(0.05)
    client.close()
    time.sleep(0.6)
    back = JupyterWS(relay.url, kernel, protocol=protocol, session_id=client.session_id)
    try:
        back.idle_after(msg_id)
        before, after = lines_of(client, msg_id), lines_of(back, msg_id)
        again = [line for line in after if line in before]
        assert before + after[len(again) :] == [str(i) for i in range(30)]
        assert after[: len(again)] == again and len(again) <= UNREAD_SECONDS / 0.05 + 1
        assert not back.iopub_for(msg_id, "execute_input")  # that one was read long before
    finally:
        back.close()


def test_a_lost_gap_is_shown_in_the_cell_it_cut(small_journal: Relay) -> None:
    """Past the journal's bound, the returning session is told on stderr, parented to its last cell."""
    kernel = start(small_journal)
    client = JupyterWS(small_journal.url, kernel)
    try:
        msg_id = client.send(
            "shell",
            "execute_request",
            {
                "code": "import time\nprint('start', flush=True)\ntime.sleep(0.5)\nfor i in range(200): print('x' * 100, flush=True)"
            },
        )
        client.wait_for(lambda m: m["header"]["msg_type"] == "stream")
        client.close()
        time.sleep(2.0)
        back = JupyterWS(small_journal.url, kernel, session_id=client.session_id)
        notice = back.wait_for(
            lambda m: (
                m["header"]["msg_type"] == "stream"
                and "kernel_relay" in m["metadata"]
                and m["metadata"]["kernel_relay"]["event"] == "replay_gap"
            )
        )
        assert notice["parent_header"]["msg_id"] == msg_id
        assert notice["content"]["name"] == "stderr" and "lost" in notice["content"]["text"]
        back.close()
    finally:
        requests.delete(f"{small_journal.url}/api/kernels/{kernel}", timeout=60)


def test_a_deleted_kernel_is_dead_and_its_socket_closes_with_the_reason(relay: Relay) -> None:
    kernel = start(relay)
    client = JupyterWS(relay.url, kernel, protocol="legacy")
    client.execute("1")
    assert requests.delete(f"{relay.url}/api/kernels/{kernel}", timeout=60).status_code == 204
    with pytest.raises(ConnectionError) as closed:
        client.wait_for(lambda m: False, timeout=30)
    states = [
        m["content"].get("execution_state")
        for m in client.received
        if m["header"]["msg_type"] == "status"
    ]
    assert states[-1] == "dead"
    # The close frame: code 1000, then the reason.
    expected = b"\x03\xe8kernel shutdown"
    assert str(closed.value) == f"closed: {expected!r}"


def test_malformed_frames_are_told_and_the_connection_carries_on(relay: Relay, kernel: str) -> None:
    client = JupyterWS(relay.url, kernel)
    try:
        for frame in (b"\x00" * 3, b"\x07" + b"\x00" * 63, b"\xff" * 80):
            client.ws.send_binary(frame)
        client.ws.send("a text frame in v1")
        notices = [
            client.wait_for(
                lambda m, n=n: (
                    m["header"]["msg_type"] == "stream"
                    and sum(
                        "malformed frame" in x["content"].get("text", "") for x in client.received
                    )
                    > n
                )
            )
            for n in range(4)
        ]
        assert len(notices) == 4
        _, reply = client.execute("1 + 1")
        assert reply["content"]["status"] == "ok"
    finally:
        client.close()


def test_plain_http_on_the_channels_path_is_a_clear_error(relay: Relay, kernel: str) -> None:
    response = requests.get(f"{relay.url}/api/kernels/{kernel}/channels", timeout=10)
    assert response.status_code == 400 and "WebSocket" in response.json()["message"]
    assert (
        requests.post(f"{relay.url}/api/kernels/{kernel}/channels", timeout=10).status_code == 405
    )


def test_a_reply_to_a_request_of_the_last_connection_reaches_the_session_that_comes_back(
    relay: Relay, kernel: str
) -> None:
    """The session's ZMQ identity stays the same, so the kernel's late reply finds the new connection."""
    client = JupyterWS(relay.url, kernel)

    def connections() -> int:
        count: int = requests.get(f"{relay.url}/api/kernels/{kernel}", timeout=10).json()[
            "connections"
        ]
        return count

    with_it = connections()
    msg_id = client.send("shell", "execute_request", {"code": "import time; time.sleep(8)"})
    client.close()
    # Once the relay has seen it go (a connection of a session still open gets an identity of its own),
    # which a loaded machine may take seconds to do; the cell outlasts that wait.
    deadline = time.monotonic() + 6
    while connections() >= with_it and time.monotonic() < deadline:
        time.sleep(0.02)
    assert connections() < with_it, "the relay did not see the first connection close within 6 s"
    back = JupyterWS(relay.url, kernel, session_id=client.session_id)
    try:
        assert back.reply_to(msg_id)["content"]["status"] == "ok"
    finally:
        back.close()


def test_two_live_connections_of_one_session_are_both_served(relay: Relay, kernel: str) -> None:
    """JupyterLab's server may open a second connection of a session beside a live one: each gets its replies."""
    first = JupyterWS(relay.url, kernel)
    second = JupyterWS(relay.url, kernel, session_id=first.session_id)
    try:
        mine, reply = first.execute("1")
        theirs, other = second.execute("2")
        assert reply["content"]["status"] == other["content"]["status"] == "ok"
        assert [
            m["parent_header"]["msg_id"] for m in first.received if m["channel"] == "shell"
        ] == [mine]
        assert [
            m["parent_header"]["msg_id"] for m in second.received if m["channel"] == "shell"
        ] == [theirs]
    finally:
        first.close()
        second.close()


slow_limit = relay_fixture("--max-buffered-bytes", str(8 * 1024 * 1024))


def test_a_client_that_stops_reading_is_closed_as_slow_and_others_carry_on(
    slow_limit: Relay,
) -> None:
    """Once more than --max-buffered-bytes wait for a connection it is closed, said so, never silently fed."""
    kernel = start(slow_limit)
    sleeper = JupyterWS(slow_limit.url, kernel)
    sleeper.ws.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    worker = JupyterWS(slow_limit.url, kernel)
    try:
        code = "import time\nfor _ in range(300):\n    print('z' * 100_000)\n    time.sleep(0.005)"
        _, reply = worker.execute(code, timeout=120)
        assert reply["content"]["status"] == "ok"
        deadline = time.monotonic() + 30
        while "slow client" not in slow_limit.output() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert (
            "Closing Jupyter client" in slow_limit.output() and "slow client" in slow_limit.output()
        )
        metrics = requests.get(f"{slow_limit.url}/metrics", timeout=10).text
        assert 'kernel_relay_errors_total{kind="slow_client"} 1.0' in metrics
        _, reply = worker.execute("1")
        assert reply["content"]["status"] == "ok"
    finally:
        sleeper.close()
        worker.close()
        requests.delete(f"{slow_limit.url}/api/kernels/{kernel}", timeout=60)

"""
Jupyter sessions that belong to their owner, session marks that keep ids only and go with their kernel, and
the smaller holes of the third hardening review (deep JSON, refusal logs, tokens in logs, the health route),
tried against a real relay on loopback.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import quote

import psutil
import pytest
import requests
import websocket

from kernel_relay.fronts.jupyter_connection import UNREAD_SECONDS
from tests.conftest import Relay, relay_fixture
from tests.jupyter_ws import JupyterWS, new_message

#: The relay's memory measured: under `pytest -n` not beside another such file (tests/conftest.py).
pytestmark = [pytest.mark.timeout(300), pytest.mark.usefixtures("one_at_a_time")]

TOKEN = "sessions-token-" + "s" * 30
AUTH = {"Authorization": f"Bearer {TOKEN}"}
MiB = 1024 * 1024

guarded = relay_fixture(token=TOKEN)


def start(relay: Relay) -> str:
    response = requests.post(
        f"{relay.url}/api/kernels", json={"name": "python3"}, headers=AUTH, timeout=90
    )
    assert response.status_code == 201, response.text
    kernel_id: str = response.json()["id"]
    return kernel_id


def stop(relay: Relay, kernel_id: str) -> None:
    requests.delete(f"{relay.url}/api/kernels/{kernel_id}", headers=AUTH, timeout=60)


def issue(relay: Relay, kernel_id: str, access: str) -> str:
    response = requests.post(
        f"{relay.url}/api/kernels/{kernel_id}/tokens",
        json={"access": access},
        headers=AUTH,
        timeout=10,
    )
    assert response.status_code == 201, response.text
    token: str = response.json()["token"]
    return token


def connections(relay: Relay, kernel_id: str) -> int:
    response = requests.get(f"{relay.url}/api/kernels/{kernel_id}", headers=AUTH, timeout=10)
    count: int = response.json()["connections"]
    return count


def until(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not within {timeout}s: {what}"
        time.sleep(0.05)


def leave(relay: Relay, kernel_id: str, client: JupyterWS) -> None:
    """Close ``client`` and wait until the relay has seen it go."""
    before = connections(relay, kernel_id)
    client.close()
    until(lambda: connections(relay, kernel_id) < before, "the relay to see the client go")


def stream_text(client: JupyterWS, msg_id: str) -> str:
    return "".join(m["content"]["text"] for m in client.iopub_for(msg_id, "stream"))


@pytest.fixture
def kernel(guarded: Relay) -> Iterator[str]:
    kernel_id = start(guarded)
    yield kernel_id
    stop(guarded, kernel_id)


def test_a_viewer_presenting_the_owners_session_id_takes_neither_its_output_nor_its_resume_point(
    guarded: Relay, kernel: str
) -> None:
    """A read-only viewer with the owner's session_id gets a session of its own; the owner resumes exactly."""
    owner = JupyterWS(guarded.url, kernel, token=TOKEN)
    owner.execute("print('read', flush=True)")
    time.sleep(2 * UNREAD_SECONDS)  # read for sure: what came just before a close comes again
    leave(guarded, kernel, owner)
    other = JupyterWS(guarded.url, kernel, token=TOKEN)
    viewer: JupyterWS | None = None
    try:
        missed, _ = other.execute("print('missed', flush=True)")
        viewer = JupyterWS(
            guarded.url,
            kernel,
            token=issue(guarded, kernel, "read-only"),
            session_id=owner.session_id,
        )
        live, _ = other.execute("print('live', flush=True)")
        viewer.idle_after(live)
        assert stream_text(viewer, live) == "live\n"
        assert not [m for m in viewer.received if m["parent_header"].get("msg_id") == missed]
        leave(guarded, kernel, viewer)
        back = JupyterWS(guarded.url, kernel, token=TOKEN, session_id=owner.session_id)
        try:
            back.idle_after(live)
            assert stream_text(back, missed) == "missed\n" and stream_text(back, live) == "live\n"
            assert [
                m["header"]["msg_type"]
                for m in back.received
                if m["header"]["msg_type"] == "stream"
            ] == [
                "stream",
                "stream",
            ]
        finally:
            back.close()
    finally:
        other.close()
        if viewer is not None:
            viewer.close()


def test_another_full_token_presenting_the_owners_session_id_gets_none_of_its_replies(
    guarded: Relay, kernel: str
) -> None:
    """A full kernel token of someone else with the owner's session_id: no owner's reply; the owner resumes."""
    owner = JupyterWS(guarded.url, kernel, token=TOKEN)
    owner.execute("1")
    cell = owner.send(
        "shell", "execute_request", {"code": "import time; time.sleep(2); print('done')"}
    )
    owner.wait_for(
        lambda m: (
            m["header"]["msg_type"] == "execute_input" and m["parent_header"]["msg_id"] == cell
        )
    )
    time.sleep(2 * UNREAD_SECONDS)  # read for sure: what came just before a close comes again
    leave(guarded, kernel, owner)
    intruder = JupyterWS(
        guarded.url, kernel, token=issue(guarded, kernel, "full"), session_id=owner.session_id
    )
    try:
        intruder.idle_after(cell)
        _, reply = intruder.execute(
            "2"
        )  # the kernel answered the owner's cell long before this one
        assert reply["content"]["status"] == "ok"
        assert not [
            m
            for m in intruder.received
            if m["channel"] == "shell" and m["parent_header"].get("msg_id") == cell
        ]
        leave(guarded, kernel, intruder)
        back = JupyterWS(guarded.url, kernel, token=TOKEN, session_id=owner.session_id)
        try:
            back.idle_after(cell)
            assert stream_text(back, cell) == "done\n"
            assert not back.iopub_for(cell, "execute_input"), "the owner had read that one"
        finally:
            back.close()
    finally:
        intruder.close()


@pytest.mark.parametrize("session_id", ["s" * 300, "\u00e9" * 150, "two words", "tab\there"])
def test_an_overlong_or_malformed_session_id_is_refused_before_the_upgrade(
    guarded: Relay, kernel: str, session_id: str
) -> None:
    """A session_id that is not 1 to 128 printable ASCII characters is a clear 400; nothing is half-attached."""
    before = connections(guarded, kernel)
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        JupyterWS(guarded.url, kernel, token=TOKEN, session_id=quote(session_id))
    assert refused.value.status_code == 400
    response = requests.get(
        f"{guarded.url}/api/kernels/{kernel}/channels",
        params={"session_id": session_id},
        headers={
            **AUTH,
            "Connection": "Upgrade",
            "Upgrade": "websocket",
            "Sec-WebSocket-Version": "13",
            "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        },
        timeout=10,
    )
    assert response.status_code == 400
    assert "session_id must be 1 to 128 printable ASCII" in response.json()["message"]
    assert connections(guarded, kernel) == before
    client = JupyterWS(guarded.url, kernel, token=TOKEN)
    try:
        assert client.execute("1")[1]["content"]["status"] == "ok"
    finally:
        client.close()
    assert "Unhandled" not in guarded.output() and "Traceback" not in guarded.output()


def rss(relay: Relay) -> int:
    return int(psutil.Process(relay.process.pid).memory_info().rss)


def test_sessions_with_big_headers_leave_no_memory_once_their_kernel_stops(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """300 sessions whose requests had 1 MB headers: the relay's memory is back once the kernel stops."""
    # Big blocks come from mmap and go back to the system when freed, so RSS counts live memory.
    relay = Relay(
        tmp_path_factory.mktemp("runtime"),
        "--iopub-replay-bytes",
        str(MiB),
        token=TOKEN,
        env={"MALLOC_MMAP_THRESHOLD_": "131072"},
    )
    try:
        warm = start(relay)
        client = JupyterWS(relay.url, warm, token=TOKEN)
        client.execute("1")
        client.close()
        stop(relay, warm)
        kernel_id = start(relay)
        before = rss(relay)
        for _ in range(300):
            client = JupyterWS(relay.url, kernel_id, token=TOKEN)
            request = new_message("kernel_info_request", {}, client.session_id)
            # The request's header comes back as the parent of everything it causes.
            request["header"]["padding"] = "x" * MiB
            client.send_message("shell", request, [])
            client.idle_after(request["header"]["msg_id"])
            client.close()
        grown = rss(relay) - before
        stop(relay, kernel_id)
        time.sleep(1)
        left = rss(relay) - before
        assert left < 64 * MiB, (
            f"{left / MiB:.0f} MB still held ({grown / MiB:.0f} MB while running)"
        )
    finally:
        relay.stop()


def log_events(relay: Relay) -> list[dict[str, Any]]:
    """The relay's log events (``twist`` writes JSON text sequences: each event after a ``\\x1e``)."""
    events = []
    for line in relay.output().split("\x1e"):
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict):
            events.append(event)
    return events


def deep(levels: int) -> str:
    return "[" * levels + "]" * levels


def v1_frame(content: str) -> bytes:
    """A v1 execute_request frame whose content is ``content``, JSON text as it is."""
    reference = pytest.importorskip("jupyter_server.services.kernels.connection.base")
    header = new_message("execute_request", {}, "s")["header"]
    parts = [json.dumps(header).encode(), b"{}", b"{}", content.encode()]
    frame: bytes = reference.serialize_msg_to_ws_v1(parts, "shell")
    return frame


@pytest.mark.parametrize("levels", [300, 5_000, 200_000])
def test_deep_json_on_the_jupyter_front_is_a_clear_error_and_the_connection_carries_on(
    guarded: Relay, kernel: str, levels: int
) -> None:
    """JSON nested past the bound is told as a malformed frame, not a traceback; the socket still serves."""
    client = JupyterWS(guarded.url, kernel, token=TOKEN)
    try:
        client.ws.send_binary(v1_frame('{"code": ' + deep(levels) + "}"))
        notice = client.wait_for(lambda m: "malformed frame" in m["content"].get("text", ""))
        assert "nested more than 256 levels deep" in notice["content"]["text"]
        assert client.execute("1")[1]["content"]["status"] == "ok"
    finally:
        client.close()
    output = guarded.output()
    assert "RecursionError" not in output and "Traceback" not in output


@pytest.mark.parametrize("levels", [300, 5_000])
def test_deep_json_on_the_socketio_front_is_refused_without_a_traceback(
    guarded: Relay, kernel: str, levels: int
) -> None:
    """A socket.io packet nested past the bound closes that client (the protocol's rule) and logs one clear line."""
    ws = websocket.create_connection(
        f"ws://127.0.0.1:{guarded.port}/socket.io/?EIO=4&transport=websocket&token={TOKEN}",
        timeout=10,
    )
    try:
        assert ws.recv().startswith("0")
        ws.send(f"40/shell/{kernel},")
        assert ws.recv().startswith(f"40/shell/{kernel},")
        header = json.dumps(new_message("comm_msg", {}, "s")["header"])
        ws.send(
            f'42/shell/{kernel},["msg",{{"header":{header},"parent_header":{{}},"metadata":{{}},'
            f'"content":{{"comm_id":"c","data":{deep(levels)}}}}}]'
        )
        with pytest.raises((websocket.WebSocketConnectionClosedException, ConnectionError)):
            while ws.recv():
                pass
            raise ConnectionError("closed")
    finally:
        ws.close()
    until(
        lambda: "nested more than 256 levels deep" in guarded.output(),
        "the relay to log why it closed the client",
    )
    output = guarded.output()
    assert "RecursionError" not in output and "Traceback" not in output
    client = JupyterWS(guarded.url, kernel, token=TOKEN)
    try:
        assert client.execute("1")[1]["content"]["status"] == "ok"
    finally:
        client.close()


def test_twenty_thousand_refused_messages_write_a_bounded_log(guarded: Relay, kernel: str) -> None:
    """Each refusal is told to the client, but the log takes a few lines and one saying how many were not logged."""
    viewer = JupyterWS(guarded.url, kernel, token=issue(guarded, kernel, "read-only"))
    try:
        before = guarded.output().count("Refused a message from")
        frame = v1_frame("{}")
        for _ in range(40):
            for _ in range(500):
                viewer.ws.send_binary(frame)
            # Read what the relay said so far: a client that never reads stops being read (back-pressure).
            while viewer.recv(timeout=0.01) is not None:
                pass
        last = viewer.send("shell", "execute_request", {"code": "1"})
        viewer.wait_for(lambda m: m["parent_header"].get("msg_id") == last, timeout=120)
        told = [
            m for m in viewer.received if "may not send on shell" in m["content"].get("text", "")
        ]
        assert len(told) == 20_001
    finally:
        viewer.close()
    logged = guarded.output().count("Refused a message from") - before
    assert 0 < logged <= 20, logged

    def held_back() -> int:
        return sum(
            event.get("count", 0)
            for event in log_events(guarded)
            if "were not logged" in event.get("log_format", "") and event.get("what") == "refusals"
        )

    # One line per 10-second window: on a loaded machine the refusals span two windows, told 10 s apart.
    until(lambda: held_back() + logged >= 20_001, "the relay to say how many it did not log", 30)
    assert held_back() + logged >= 20_001


def test_no_token_reaches_the_logs(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Tokens in ?token= and Authorization, right or wrong, appear neither in the relay's log nor its access log."""
    access_log = tmp_path_factory.mktemp("logs") / "access.log"
    relay = Relay(tmp_path_factory.mktemp("runtime"), "--access-log", str(access_log), token=TOKEN)
    wrong = "wrong-token-" + "w" * 20
    try:
        kernel_id = start(relay)
        scoped = issue(relay, kernel_id, "full")
        for token in (TOKEN, wrong, scoped):
            requests.get(f"{relay.url}/api/kernels?token={token}", timeout=10)
            requests.get(
                f"{relay.url}/api/kernels", headers={"Authorization": f"token {token}"}, timeout=10
            )
            requests.get(
                f"{relay.url}/api/health?token={token}",
                headers={"Referer": f"http://x/?token={token}"},
                timeout=10,
            )
            requests.get(
                f"{relay.url}/socket.io/?EIO=4&transport=polling&token={token}", timeout=10
            )
            try:
                JupyterWS(relay.url, kernel_id, token=token, token_in_query=True).close()
            except websocket.WebSocketBadStatusException:
                pass
        stop(relay, kernel_id)
    finally:
        relay.stop()
    logged = access_log.read_text()
    assert "GET /api/kernels?token=***" in logged and "/channels?session_id=" in logged
    for token in (TOKEN, wrong, scoped):
        assert token not in logged and token not in relay.output()


def test_health_without_a_token_says_only_that_the_relay_is_up(guarded: Relay) -> None:
    """/api/health tells anyone that the relay is up, and the rest only to a holder of its token."""
    assert requests.get(f"{guarded.url}/api/health", timeout=10).json() == {"status": "ok"}
    wrong = requests.get(f"{guarded.url}/api/health?token=nope", timeout=10).json()
    assert wrong == {"status": "ok"}
    full = requests.get(f"{guarded.url}/api/health", headers=AUTH, timeout=10).json()
    assert full["status"] == "ok" and "version" in full and "kernels" in full

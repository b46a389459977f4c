"""
Where a Jupyter session resumes after a close its client began, against a real relay and kernel: never past
what the client may have read (issue 30: the chaos run's Jupyter watchers lost lines without notice).
"""

from __future__ import annotations

import os
import signal
import time
import uuid

import pytest
import websocket

from tests.conftest import Relay, kernel_fixture, relay_fixture
from tests.jupyter_ws import JupyterWS

pytestmark = pytest.mark.timeout(180)

relay = relay_fixture()
kernel_id = kernel_fixture("relay")

LOOP = "import time\nfor i in range({n}):\n    print(i, flush=True)\n    time.sleep(0.01)"


def lines_of(client: JupyterWS, cell: str) -> list[int]:
    """The numbers the cell printed that ``client`` read, in order (one per stream message or more)."""
    return [
        int(word)
        for m in client.received
        if m["channel"] == "iopub"
        and m["header"]["msg_type"] == "stream"
        and m["parent_header"].get("msg_id") == cell
        for word in m["content"]["text"].split()
    ]


def told_gap(client: JupyterWS) -> bool:
    return any(
        m["metadata"].get("kernel_relay", {}).get("event") == "replay_gap" for m in client.received
    )


def read_until(client: JupyterWS, done: object, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        message = client.recv(1.0)
        if message is not None and done(message):  # type: ignore[operator]
            return
    raise AssertionError("timed out")


def idle(cell: str) -> object:
    return lambda m: (
        m["header"]["msg_type"] == "status"
        and m["content"].get("execution_state") == "idle"
        and m["parent_header"].get("msg_id") == cell
    )


def resume_and_check(relay: Relay, kernel_id: str, session: str, cell: str, read: int) -> None:
    """The session comes back: it gets every line after ``read`` (some again, maybe), or is told of a gap."""
    back = JupyterWS(relay.url, kernel_id, session_id=session)
    try:
        read_until(back, idle(cell))
        after = lines_of(back, cell)
        missing = sorted(set(range(read + 1, max(after, default=read) + 1)) - set(after))
        assert not missing or told_gap(back), (
            f"lost without notice: {missing[:10]}... ({len(missing)})"
        )
        assert after and after[-1] >= read + 1
    finally:
        back.ws.close()


def test_a_session_whose_relay_froze_as_it_closed_resumes_before_what_came_after(
    relay: Relay, kernel_id: str
) -> None:
    """A client that closes while its relay is frozen has read nothing the relay hands on once it thaws."""
    session = uuid.uuid4().hex
    client = JupyterWS(relay.url, kernel_id, session_id=session)
    cell = client.send("shell", "execute_request", {"code": LOOP.format(n=300), "silent": False})
    read_until(client, lambda m: len(lines_of(client, cell)) >= 20)
    os.kill(relay.process.pid, signal.SIGSTOP)
    try:
        time.sleep(0.2)
        # Whatever was already on its way is read; then the client closes and goes (as websocket-client's
        # close() does when no answer comes).
        client.ws.settimeout(0.2)
        try:
            while True:
                opcode, data = client.ws.recv_data(control_frame=True)
                if opcode in (websocket.ABNF.OPCODE_TEXT, websocket.ABNF.OPCODE_BINARY):
                    client.received.append(client._decode(opcode, data))
        except websocket.WebSocketTimeoutException:
            pass
        read = max(lines_of(client, cell))
        client.ws.send_close()
        time.sleep(1.0)  # the kernel prints on meanwhile
    finally:
        os.kill(relay.process.pid, signal.SIGCONT)
    time.sleep(0.5)  # the relay hands the backlog on, then sees the close
    client.ws.shutdown()
    time.sleep(0.5)
    resume_and_check(relay, kernel_id, session, cell, read)

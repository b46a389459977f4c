"""
The relay's overall buffer bound on both fronts, tried against a real relay on loopback: non-reading Jupyter
viewers of a flooding kernel, and a hundred resuming sessions that never read their replay. Each stays within
the configured bounds, the memory comes back once they close, and an authenticated client keeps working.
"""

from __future__ import annotations

import json
import socket
import time
import uuid

import pytest
import websocket

from tests.conftest import Relay, relay_fixture
from tests.jupyter_ws import V1
from tests.kernel_client import RelayKernelClient
from tests.relay_memory import counter, peak_rss, read_only_token, rss, settled_rss

#: The relay's memory measured: under `pytest -n` not beside another such file (tests/conftest.py).
pytestmark = [pytest.mark.timeout(300), pytest.mark.usefixtures("one_at_a_time")]

TOKEN = "budget-" + "t" * 30
MiB = 1024 * 1024
#: What a relay's resident memory may grow by beyond its bounds (allocator slack, the kernel's messages in
#: flight, Twisted's copy of a transport's buffer as it writes).
MARGIN = 48 * MiB


def works(relay: Relay, kernel_id: str) -> float:
    """An authenticated client runs a cell on ``kernel_id``; the seconds its reply took."""
    client = RelayKernelClient(relay.url, kernel_id, ("shell", "iopub"), auth={"token": TOKEN})
    try:
        began = time.monotonic()
        _, reply = client.execute("6 * 7")
        assert reply["content"]["status"] == "ok"
        return time.monotonic() - began
    finally:
        client.close()


def jupyter_viewer(
    relay: Relay, kernel_id: str, token: str, session_id: str
) -> websocket.WebSocket:
    """A v1 channels WebSocket with a tiny receive buffer, which the test never reads."""
    return websocket.create_connection(
        f"ws://127.0.0.1:{relay.port}/api/kernels/{kernel_id}/channels?session_id={session_id}",
        subprotocols=[V1],
        header=[f"Authorization: token {token}"],
        timeout=30,
        sockopt=((socket.SOL_SOCKET, socket.SO_RCVBUF, 4096),),
    )


def socketio_viewer(relay: Relay, kernel_id: str, token: str, since: int) -> websocket.WebSocket:
    """An EIO 4 WebSocket joined to the kernel's iopub from ``since``, with a tiny receive buffer, never read."""
    viewer = websocket.create_connection(
        f"ws://127.0.0.1:{relay.port}/socket.io/?EIO=4&transport=websocket",
        timeout=30,
        sockopt=((socket.SOL_SOCKET, socket.SO_RCVBUF, 4096),),
    )
    assert viewer.recv().startswith("0{")
    viewer.send(f"40/iopub/{kernel_id},{json.dumps({'token': token, 'since': since})}")
    return viewer


def close_all(connections: list[websocket.WebSocket]) -> None:
    for connection in connections:
        try:
            connection.close(timeout=0.1)
        except Exception:
            connection.shutdown()


# -- a flooding kernel and viewers that never read -----------------------------------------------------------


#: The flooding kernel's journal is kept by design (8 MiB by default); kept small here, the memory left after
#: the viewers close is theirs to give back.
flooded = relay_fixture(
    "--max-buffered-bytes",
    str(32 * MiB),
    "--max-total-buffered-bytes",
    str(64 * MiB),
    "--iopub-replay-bytes",
    str(MiB),
    token=TOKEN,
    scope="function",
)

FLOOD = (
    "import time\nend = time.time() + {seconds}\n"
    "while time.time() < end:\n    print('f' * 100_000, flush=True)\n    time.sleep(0.005)"
)


@pytest.mark.parametrize("front", ["jupyter", "socketio"])
def test_non_reading_viewers_of_a_flood_stay_within_the_overall_bound(
    flooded: Relay, front: str
) -> None:
    """
    Sixteen read-only viewers that never read a flooding kernel's output, on either front, hold no more than
    --max-total-buffered-bytes (counted in kernel_relay_buffered_bytes); their memory comes back once they close.
    """
    kernel, other = flooded.spawn(), flooded.spawn()
    token = read_only_token(flooded, kernel)
    works(flooded, other)
    before = rss(flooded)
    writer = RelayKernelClient(flooded.url, kernel, ("shell",), auth={"token": TOKEN})
    viewers: list[websocket.WebSocket] = []
    gauge = [0.0]
    try:
        with peak_rss(flooded, gauge) as peak:
            msg_id = writer.send(
                "shell", "execute_request", {"code": FLOOD.format(seconds=12), "silent": False}
            )
            for _ in range(16):
                if front == "jupyter":
                    viewers.append(jupyter_viewer(flooded, kernel, token, uuid.uuid4().hex))
                else:
                    viewers.append(socketio_viewer(flooded, kernel, token, 0))
            time.sleep(3)
            took = works(flooded, other)
            reply = writer.reply_to("shell", msg_id, timeout=120)
            assert reply["content"]["status"] == "ok"
            grown = peak() - before
    finally:
        close_all(viewers)
        writer.close()
    after = settled_rss(flooded, before + 16 * MiB)
    print(
        f"{front}: 16 viewers of a flood: RSS peak {grown / MiB:+.0f} MiB over {before / MiB:.0f} MiB, "
        f"{(after - before) / MiB:+.0f} MiB after they closed; gauge at most {gauge[0] / MiB:.1f} MiB; "
        f"an authenticated cell took {took:.2f}s"
    )
    assert 0 < gauge[0] <= 64 * MiB + MiB, f"kernel_relay_buffered_bytes was up to {gauge[0]:.0f}"
    assert grown < 64 * MiB + MARGIN, f"relay RSS grew by {grown / MiB:.0f} MiB with 16 viewers"
    assert after - before < 16 * MiB, f"relay RSS stayed {(after - before) / MiB:.0f} MiB up"
    assert counter(flooded, 'kernel_relay_errors_total{kind="slow_client"}') > 0
    assert flooded.shutdown(kernel).status_code == 200
    assert flooded.shutdown(other).status_code == 200


# -- a hundred sessions resuming from 0 ---------------------------------------------------------------------


resumed = relay_fixture(token=TOKEN, scope="function")


@pytest.mark.parametrize("front", ["jupyter", "socketio"])
def test_replays_to_a_hundred_resuming_sessions_are_streamed(resumed: Relay, front: str) -> None:
    """
    A hundred sessions that resume from sequence 0 once the journal holds ~8 MiB, and never read, do not each
    get a copy of the journal: replays are streamed as their sockets drain; memory comes back once they close.
    """
    kernel, other = resumed.spawn(), resumed.spawn()
    token = read_only_token(resumed, kernel)
    sessions = [uuid.uuid4().hex for _ in range(100)]
    if front == "jupyter":
        # Each session's mark: it connected, saw nothing, and left.
        close_all([jupyter_viewer(resumed, kernel, token, session) for session in sessions])
    writer = RelayKernelClient(resumed.url, kernel, ("shell",), auth={"token": TOKEN})
    try:
        # One message a line: the journal (8 MiB) keeps them all.
        code = "for _ in range(80): print('r' * 100_000, flush=True)"
        _, reply = writer.execute(code, timeout=60)
        assert reply["content"]["status"] == "ok"
    finally:
        writer.close()
    works(resumed, other)
    before = rss(resumed)
    viewers: list[websocket.WebSocket] = []
    try:
        with peak_rss(resumed) as peak:
            for session in sessions:
                if front == "jupyter":
                    viewers.append(jupyter_viewer(resumed, kernel, token, session))
                else:
                    viewers.append(socketio_viewer(resumed, kernel, token, 0))
            time.sleep(3)
            took = works(resumed, other)
            grown = peak() - before
    finally:
        close_all(viewers)
    after = settled_rss(resumed, before + 16 * MiB)
    print(
        f"{front}: 100 resuming sessions: RSS peak {grown / MiB:+.0f} MiB over {before / MiB:.0f} MiB, "
        f"{(after - before) / MiB:+.0f} MiB after they closed; an authenticated cell took {took:.2f}s"
    )
    assert grown < 64 * MiB, f"relay RSS grew by {grown / MiB:.0f} MiB with 100 resuming sessions"
    assert after - before < 16 * MiB, f"relay RSS stayed {(after - before) / MiB:.0f} MiB up"
    assert resumed.shutdown(kernel).status_code == 200
    assert resumed.shutdown(other).status_code == 200

"""
``input()`` sent right after connecting reaches the client, on both fronts, every time: the relay sends a new
client's requests to the kernel only once that client's own stdin socket is connected (else the kernel's
``input_request`` goes to an identity its stdin ROUTER does not know yet, and ZeroMQ drops it).

``STDIN_RACE_TRIES`` sets the number of tries per front (the issue's "done" run used 500).
"""

from __future__ import annotations

import os
from collections.abc import Callable

import requests

from tests.conftest import Relay, kernel_fixture, relay_fixture
from tests.jupyter_ws import JupyterWS
from tests.kernel_client import RelayKernelClient

relay = relay_fixture()
kernel = kernel_fixture("relay")

TRIES = int(os.environ.get("STDIN_RACE_TRIES", "200"))
#: An input_request that has not come in this long is lost (it comes within milliseconds when it comes).
LOST_AFTER = 5.0
INPUT_CODE = "answer = input('who? ')"


def _interrupt(relay: Relay, kernel_id: str) -> None:
    requests.post(
        f"{relay.url}/api/kernels/{kernel_id}/interrupt", headers=relay.headers, timeout=10
    )


def _count_lost(relay: Relay, kernel_id: str, try_once: Callable[[], bool]) -> int:
    lost = 0
    for _ in range(TRIES):
        if not try_once():
            lost += 1
            _interrupt(relay, kernel_id)  # the cell waits for an answer that will never come
    return lost


def test_input_right_after_connecting_reaches_a_jupyter_client(relay: Relay, kernel: str) -> None:
    """An execute_request with input() sent as soon as the channels WebSocket opens gets its input_request."""

    def try_once() -> bool:
        client = JupyterWS(relay.url, kernel, protocol="v1", token=relay.token)
        try:
            msg_id = client.send(
                "shell", "execute_request", {"code": INPUT_CODE, "allow_stdin": True}
            )
            try:
                client.wait_for(
                    lambda m: (
                        m["header"]["msg_type"] == "input_request"
                        and m["parent_header"].get("msg_id") == msg_id
                    ),
                    LOST_AFTER,
                )
            except AssertionError:
                return False
            client.send("stdin", "input_reply", {"value": "me"})
            client.idle_after(msg_id)
            return True
        finally:
            client.close()

    lost = _count_lost(relay, kernel, try_once)
    assert lost == 0, f"{lost} of {TRIES} input_requests never reached the Jupyter client"


def test_input_right_after_connecting_reaches_a_socketio_client(relay: Relay, kernel: str) -> None:
    """An execute_request with input() sent as soon as the socket.io namespaces join gets its input_request."""

    def try_once() -> bool:
        client = RelayKernelClient(
            relay.url, kernel, ("shell", "stdin", "iopub"), transports=["websocket"]
        )
        try:
            msg_id = client.send(
                "shell", "execute_request", {"code": INPUT_CODE, "allow_stdin": True}
            )
            try:
                client.wait_for(
                    lambda: any(
                        m["parent_header"].get("msg_id") == msg_id for m in client.received["stdin"]
                    ),
                    LOST_AFTER,
                    "input_request",
                )
            except AssertionError:
                return False
            client.send("stdin", "input_reply", {"value": "me"})
            client.wait_idle(msg_id)
            return True
        finally:
            client.close()

    lost = _count_lost(relay, kernel, try_once)
    assert lost == 0, f"{lost} of {TRIES} input_requests never reached the socket.io client"

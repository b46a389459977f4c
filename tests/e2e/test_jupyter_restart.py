"""
A restart a client asked for, as Jupyter Server tells it: Jupyter clients see no ``status: restarting``
(``@jupyterlab/services`` reads it as "the server restarted a dead kernel"); socket.io clients still do.
"""

from __future__ import annotations

import pytest
import requests

from tests.conftest import Relay
from tests.jupyter_ws import JupyterWS
from tests.kernel_client import RelayKernelClient


def _states(messages: list[dict[str, object]]) -> list[str]:
    return [
        str(m["content"]["execution_state"])  # type: ignore[index]
        for m in messages
        if m["channel"] == "iopub" and m["header"]["msg_type"] == "status"  # type: ignore[index]
    ]


@pytest.mark.parametrize("protocol", ["v1", "legacy"])
def test_a_requested_restart_is_no_restarting_status_for_jupyter_clients(
    relay: Relay, protocol: str
) -> None:
    """After POST .../restart a Jupyter client saw no restarting status, a socket.io client did."""
    kernel_id = relay.spawn()
    jupyter = JupyterWS(relay.url, kernel_id, protocol=protocol, token=relay.token)
    sio = RelayKernelClient(relay.url, kernel_id, ("shell", "iopub"), transports=["websocket"])
    try:
        jupyter.execute("x = 1")
        response = requests.post(
            f"{relay.url}/api/kernels/{kernel_id}/restart", headers=relay.headers, timeout=90
        )
        assert response.status_code == 200, response.text
        _, reply = jupyter.execute("print('back')", timeout=60)
        assert reply["content"]["status"] == "ok"
        sio.wait_for(
            lambda: any(
                m["content"].get("execution_state") == "restarting" for m in sio.received["iopub"]
            ),
            what="restarting on socket.io",
        )
        assert "restarting" not in _states(jupyter.received)
        assert "starting" in _states(jupyter.received)
    finally:
        jupyter.close()
        sio.close()
        relay.shutdown(kernel_id)

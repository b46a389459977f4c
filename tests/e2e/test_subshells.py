"""
Kernel protocol 5.5 subshells through the relay (ipykernel 7): two clients, one on each front, each create a
subshell on control and run a cell in it; the cells run at the same time and each reply reaches its asker.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from tests.conftest import Relay, kernel_fixture, relay_fixture
from tests.jupyter_ws import JupyterWS, new_message
from tests.kernel_client import RelayKernelClient

relay = relay_fixture()
kernel = kernel_fixture("relay")


def _supports_subshells(client: JupyterWS) -> bool:
    msg_id = client.send("shell", "kernel_info_request", {})
    features = client.reply_to(msg_id)["content"].get("supported_features", [])
    return "kernel subshells" in features


def _sio_send(
    client: RelayKernelClient, channel: str, msg_type: str, content: dict[str, Any], **header: Any
) -> str:
    msg_id = uuid.uuid4().hex
    message = {
        "header": {"msg_id": msg_id, "msg_type": msg_type, "session": client.session, **header},
        "content": content,
    }
    client.sio.emit("msg", message, namespace=client.namespace(channel))
    return msg_id


def test_two_subshells_run_cells_concurrently_each_reply_at_its_asker(
    relay: Relay, kernel: str
) -> None:
    """A Jupyter and a socket.io client each run a cell in a subshell of their own, side by side."""
    jupyter = JupyterWS(relay.url, kernel, protocol="v1")
    sio = RelayKernelClient(
        relay.url, kernel, ("shell", "control", "iopub"), transports=["websocket"]
    )
    try:
        if not _supports_subshells(jupyter):
            pytest.skip("the kernel does not support subshells (ipykernel 7 does)")
        created = jupyter.send("control", "create_subshell_request", {})
        jupyter_subshell = jupyter.reply_to(created)["content"]["subshell_id"]
        created = _sio_send(sio, "control", "create_subshell_request", {})
        sio_subshell = sio.reply_to("control", created)["content"]["subshell_id"]
        assert jupyter_subshell != sio_subshell

        slow = new_message(
            "execute_request",
            {"code": "import time\nprint('slow start', flush=True)\ntime.sleep(3)\n'slow'"},
            jupyter.session_id,
        )
        slow["header"]["subshell_id"] = jupyter_subshell
        jupyter.send_message("shell", slow, [])
        slow_id = slow["header"]["msg_id"]
        jupyter.wait_for(
            lambda m: (
                m["channel"] == "iopub"
                and m["header"]["msg_type"] == "stream"
                and m["parent_header"].get("msg_id") == slow_id
            )
        )
        fast_id = _sio_send(
            sio, "shell", "execute_request", {"code": "'fast'"}, subshell_id=sio_subshell
        )
        fast_reply = sio.reply_to("shell", fast_id, timeout=30)
        assert fast_reply["content"]["status"] == "ok"
        # The slow cell is still running: its reply has not come yet.
        assert not any(
            m["channel"] == "shell" and m["parent_header"].get("msg_id") == slow_id
            for m in jupyter.received
        )
        slow_reply = jupyter.reply_to(slow_id, timeout=30)
        assert slow_reply["content"]["status"] == "ok"
        # Each reply went to its asker only.
        assert not any(m["parent_header"].get("msg_id") == slow_id for m in sio.received["shell"])
        assert not any(
            m["channel"] == "shell" and m["parent_header"].get("msg_id") == fast_id
            for m in jupyter.received
        )
        deleted = jupyter.send(
            "control", "delete_subshell_request", {"subshell_id": jupyter_subshell}
        )
        assert jupyter.reply_to(deleted)["content"]["status"] == "ok"
        deleted = _sio_send(
            sio, "control", "delete_subshell_request", {"subshell_id": sio_subshell}
        )
        assert sio.reply_to("control", deleted)["content"]["status"] == "ok"
    finally:
        jupyter.close()
        sio.close()

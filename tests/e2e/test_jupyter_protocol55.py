"""
Kernel protocol 5.5 kept through the relay (ipykernel 7): the kernel's execution state stays right while
subshells and control requests run beside a cell, and ``iopub_welcome`` (sent by an XPUB iopub on each new
subscription) neither breaks resume nor counts as any cell's output.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
import requests

from tests.conftest import Relay, relay_fixture
from tests.e2e.test_relay_resume import IopubWatcher
from tests.jupyter_ws import JupyterWS, new_message

pytestmark = pytest.mark.timeout(300)

Message = dict[str, Any]

relay = relay_fixture()


def _state(relay: Relay, kernel_id: str) -> str:
    response = requests.get(f"{relay.url}/api/kernels/{kernel_id}", timeout=10)
    response.raise_for_status()
    state: str = response.json()["execution_state"]
    return state


def _wait_state(relay: Relay, kernel_id: str, wanted: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while (state := _state(relay, kernel_id)) != wanted:
        assert time.monotonic() < deadline, f"execution_state stayed {state!r}, not {wanted!r}"
        time.sleep(0.1)


def _run_in(client: JupyterWS, code: str, subshell: str | None) -> str:
    message = new_message("execute_request", {"code": code, "silent": False}, client.session_id)
    if subshell is not None:
        message["header"]["subshell_id"] = subshell
    client.send_message("shell", message, [])
    msg_id: str = message["header"]["msg_id"]
    return msg_id


def _started(client: JupyterWS, msg_id: str) -> None:
    """Wait for the cell's own first line (it runs its user code from then on)."""
    client.wait_for(
        lambda m: (
            m["channel"] == "iopub"
            and m["header"]["msg_type"] == "stream"
            and m["parent_header"].get("msg_id") == msg_id
        ),
        60,
    )


SLOW = "import time\nprint('started', flush=True)\ntime.sleep(8)\n'slow'"


def test_a_kernel_stays_busy_while_a_subshell_runs_a_cell(relay: Relay) -> None:
    """While a subshell's cell runs, a finished cell elsewhere or a control request does not make the
    kernel read idle (in /api/kernels, which the culler and JupyterLab's kernel list go by)."""
    kernel_id = relay.spawn()
    client = JupyterWS(relay.url, kernel_id)
    try:
        info = client.reply_to(client.send("shell", "kernel_info_request", {}))
        if "kernel subshells" not in info["content"].get("supported_features", []):
            pytest.skip("the kernel does not support subshells (ipykernel 7 does)")
        created = client.send("control", "create_subshell_request", {})
        subshell = client.reply_to(created)["content"]["subshell_id"]
        slow = _run_in(client, SLOW, subshell)
        _started(client, slow)
        _wait_state(relay, kernel_id, "busy")

        fast = _run_in(client, "'fast'", None)  # the main shell, beside the subshell
        assert client.reply_to(fast, 30)["content"]["status"] == "ok"
        client.idle_after(fast)
        asked = client.send("control", "kernel_info_request", {})
        client.reply_to(asked)
        client.idle_after(asked)
        assert _state(relay, kernel_id) == "busy"
        # The subshell's cell is still running: its reply has not come yet.
        assert not [
            m
            for m in client.received
            if m["channel"] == "shell" and m["parent_header"].get("msg_id") == slow
        ]

        assert client.reply_to(slow, 30)["content"]["status"] == "ok"
        client.idle_after(slow)
        _wait_state(relay, kernel_id, "idle")
    finally:
        client.close()
        relay.shutdown(kernel_id)


def test_the_culler_spares_a_kernel_whose_subshell_runs_a_silent_cell(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """A cell that prints nothing for longer than --cull-idle-timeout in a subshell, after the main
    shell's cell finished, is left to finish: the kernel is busy, not idle."""
    with Relay(
        tmp_path_factory.mktemp("runtime"),
        "--cull-idle-timeout",
        "4",
        "--cull-interval",
        "0.5",
        "--cull-connected",
    ) as culling:
        kernel_id = culling.spawn()
        client = JupyterWS(culling.url, kernel_id)
        try:
            created = client.send("control", "create_subshell_request", {})
            subshell = client.reply_to(created)["content"].get("subshell_id")
            if subshell is None:
                pytest.skip("the kernel does not support subshells (ipykernel 7 does)")
            silent = "import time\nprint('started', flush=True)\ntime.sleep(12)\n'done'"
            slow = _run_in(client, silent, subshell)
            _started(client, slow)
            fast = _run_in(client, "'fast'", None)
            client.reply_to(fast, 30)
            client.idle_after(fast)
            reply = client.reply_to(slow, 60)
            assert reply["content"]["status"] == "ok"
            assert "Culling kernel {kernel_id}" not in culling.output()
        finally:
            client.close()
            culling.shutdown(kernel_id)


def _wait(predicate: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _idle_after(messages: list[Message], msg_id: str) -> bool:
    return any(
        m["header"]["msg_type"] == "status"
        and m["parent_header"].get("msg_id") == msg_id
        and m["content"]["execution_state"] == "idle"
        for m in messages
    )


def _seqs(messages: list[Message]) -> list[int]:
    return [int(m["metadata"]["relay_seq"]) for m in messages]


def test_iopub_welcome_after_a_restart_is_resumed_like_any_message_and_is_no_cell_output(
    relay: Relay,
) -> None:
    """The new kernel process's iopub_welcome reaches clients numbered in line, a watcher resuming from
    before the restart gets exactly what a watcher that stayed saw, and no cell's output includes it."""
    kernel_id = relay.spawn()
    stayed = IopubWatcher(relay.url, kernel_id)
    leaving = IopubWatcher(relay.url, kernel_id)
    client = JupyterWS(relay.url, kernel_id)
    resumed = None
    try:
        first, _ = client.execute("1")
        for watcher in (stayed, leaving):
            _wait(
                lambda w=watcher: _idle_after(w.received(), first), "the watchers to see the cell"
            )
        since = _seqs(leaving.received())[-1]
        leaving.close()
        restarted = requests.post(f"{relay.url}/api/kernels/{kernel_id}/restart", timeout=90)
        assert restarted.status_code == 200, restarted.text
        cell, reply = client.execute("print('back')", timeout=60)
        assert reply["content"]["status"] == "ok"
        # The new process's welcome came before the relay called the restart done, so before this cell.
        welcomes = [m for m in client.received if m["header"]["msg_type"] == "iopub_welcome"]
        assert len(welcomes) == 1, [m["header"]["msg_type"] for m in client.received]
        assert welcomes[0]["content"] == {"subscription": ""}
        assert welcomes[0]["parent_header"] == {}

        resumed = IopubWatcher(relay.url, kernel_id, auth={"since": since})
        live = [m for m in stayed.received() if int(m["metadata"]["relay_seq"]) > since]
        _wait(lambda: len(resumed.received()) >= len(live), "the resumed watcher to catch up")
        assert resumed.gaps == []
        assert resumed.received()[: len(live)] == live
        assert _seqs(live) == list(range(since + 1, since + 1 + len(live)))
        assert "iopub_welcome" in [m["header"]["msg_type"] for m in live]
        # The cell after the restart has exactly its own output (what nbclient would keep for it).
        outputs = [
            m["header"]["msg_type"]
            for m in client.received
            if m["channel"] == "iopub" and m["parent_header"].get("msg_id") == cell
        ]
        assert outputs == ["status", "execute_input", "stream", "status"]
    finally:
        for watcher in (stayed, resumed):
            if watcher is not None:
                watcher.close()
        client.close()
        relay.shutdown(kernel_id)

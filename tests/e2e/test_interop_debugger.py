"""
Kernel protocol 5.5's debugger through the relay, as JupyterLab's debugger drives it: ``debug_request`` on
control, each ``debug_reply`` back to its asker only, ``debug_event`` on iopub to every client. A real
ipykernel with debugpy stops at a breakpoint, shows its frame and variables, and continues; over the Jupyter
WebSocket (v1 and legacy), over socket.io, and through Jupyter Server started with ``--gateway-url`` at the
relay (how JupyterLab reaches it).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import partial
from typing import Any, Protocol

import pytest
import requests

from tests.conftest import Relay, relay_fixture
from tests.e2e.test_interop_jupyterlab_services import _has_jupyter_server
from tests.jupyter_ws import JupyterWS
from tests.kernel_client import RelayKernelClient
from tests.support import jupyter_server

pytestmark = pytest.mark.timeout(300)

Message = dict[str, Any]
WAIT = 60.0
CELL = "x = 41\ny = x + 1\nprint(y)\n"
GATEWAY_TOKEN = "debugger-gateway-client-token"

relay = relay_fixture()


class Front(Protocol):
    """One client of a kernel, whatever its wire."""

    def request(self, channel: str, msg_type: str, content: dict[str, Any]) -> str: ...

    def reply(self, msg_id: str) -> Message: ...

    def iopub(self, found: Callable[[Message], bool]) -> Message: ...

    def replies(self) -> list[Message]: ...

    def close(self) -> None: ...


class JupyterFront:
    """A Jupyter kernel WebSocket (framed by Jupyter Server's own serializers)."""

    def __init__(self, client: JupyterWS) -> None:
        self.client = client

    def request(self, channel: str, msg_type: str, content: dict[str, Any]) -> str:
        return self.client.send(channel, msg_type, content)

    def reply(self, msg_id: str) -> Message:
        return self.client.reply_to(msg_id, WAIT)

    def iopub(self, found: Callable[[Message], bool]) -> Message:
        return self.client.wait_for(lambda m: m["channel"] == "iopub" and found(m), WAIT)

    def replies(self) -> list[Message]:
        return [m for m in self.client.received if m["channel"] != "iopub"]

    def close(self) -> None:
        self.client.close()


class SocketIOFront:
    """python-socketio's client on the kernel's namespaces."""

    def __init__(self, client: RelayKernelClient) -> None:
        self.client = client
        self._channels: dict[str, str] = {}

    def request(self, channel: str, msg_type: str, content: dict[str, Any]) -> str:
        msg_id = self.client.send(channel, msg_type, content)
        self._channels[msg_id] = channel
        return msg_id

    def reply(self, msg_id: str) -> Message:
        return self.client.reply_to(self._channels[msg_id], msg_id, WAIT)

    def iopub(self, found: Callable[[Message], bool]) -> Message:
        def first() -> Message | None:
            return next((m for m in self.client.received["iopub"] if found(m)), None)

        return self.client.wait_for(first, WAIT, "an iopub message")  # type: ignore[no-any-return]

    def replies(self) -> list[Message]:
        return [m for channel in ("shell", "control") for m in self.client.received[channel]]

    def close(self) -> None:
        self.client.close()


class Debugger:
    """The Debug Adapter Protocol over ``debug_request``/``debug_reply``, numbered as JupyterLab does."""

    def __init__(self, front: Front) -> None:
        self.front = front
        self.seq = 0
        self.reply_ids: list[str] = []

    def ask(self, command: str, **arguments: Any) -> dict[str, Any]:
        """Send one request; its response's body, checked to answer it and to have succeeded."""
        self.seq += 1
        content = {"seq": self.seq, "type": "request", "command": command, "arguments": arguments}
        msg_id = self.front.request("control", "debug_request", content)
        reply = self.front.reply(msg_id)
        self.reply_ids.append(msg_id)
        assert reply["header"]["msg_type"] == "debug_reply", reply["header"]
        response = reply["content"]
        assert response["command"] == command and response["request_seq"] == self.seq, response
        assert response["success"] is True, response
        body: dict[str, Any] = response.get("body", {})
        return body


def _event(name: str) -> Callable[[Message], bool]:
    return lambda m: m["header"]["msg_type"] == "debug_event" and m["content"].get("event") == name


def _variables(debugger: Debugger, reference: int) -> dict[str, str]:
    found = debugger.ask("variables", variablesReference=reference)["variables"]
    return {variable["name"]: variable["value"] for variable in found}


def debug_a_cell(front: Front, state: Callable[[], str]) -> Message:
    """
    Break in a cell, read its frame and variables, continue; the ``stopped`` event it saw. ``state`` is
    the kernel's execution state as the relay's REST API tells it.
    """
    debugger = Debugger(front)
    capabilities = debugger.ask(
        "initialize",
        clientID="kernel-relay-tests",
        clientName="kernel-relay-tests",
        adapterID="python",
        pathFormat="path",
        linesStartAt1=True,
        columnsStartAt1=True,
        supportsVariableType=True,
        supportsVariablePaging=True,
        supportsRunInTerminalRequest=True,
        locale="en",
    )
    assert capabilities["supportsConfigurationDoneRequest"] is True
    debugger.ask("attach")
    front.iopub(_event("initialized"))
    info = debugger.ask("debugInfo")
    assert info["isStarted"] is True
    path = debugger.ask("dumpCell", code=CELL)["sourcePath"]
    assert path.startswith(info["tmpFilePrefix"]) and path.endswith(info["tmpFileSuffix"])
    breakpoints = debugger.ask(
        "setBreakpoints", source={"path": path}, breakpoints=[{"line": 2}], sourceModified=False
    )["breakpoints"]
    assert [(b["verified"], b["line"]) for b in breakpoints] == [(True, 2)]
    debugger.ask("configurationDone")

    cell = front.request("shell", "execute_request", {"code": CELL, "silent": False})
    stopped = front.iopub(_event("stopped"))
    assert stopped["content"]["body"]["reason"] == "breakpoint"
    thread = stopped["content"]["body"]["threadId"]
    frames = debugger.ask("stackTrace", threadId=thread)["stackFrames"]
    assert (frames[0]["line"], frames[0]["source"]["path"]) == (2, path)
    scopes = debugger.ask("scopes", frameId=frames[0]["id"])["scopes"]
    variables = _variables(debugger, scopes[0]["variablesReference"])
    assert variables.get("x") == "41" and "y" not in variables, variables
    # The cell waits at its breakpoint: control still answers, and its execute_reply has not come.
    assert not any(m["parent_header"].get("msg_id") == cell for m in front.replies())
    # The debugger's requests went busy and idle on control; the stopped cell keeps the kernel busy.
    assert state() == "busy"

    debugger.ask("continue", threadId=thread)
    front.iopub(_event("continued"))
    assert front.reply(cell)["content"]["status"] == "ok"
    printed = front.iopub(
        lambda m: m["header"]["msg_type"] == "stream" and m["parent_header"].get("msg_id") == cell
    )
    # print() may reach iopub as "42" and "\n" in two stream messages (ipykernel flushes on a timer)
    assert printed["content"]["text"] in ("42\n", "42")
    inspected = debugger.ask("inspectVariables")["variables"]
    assert {v["name"]: v["value"] for v in inspected}.get("y") == "42"
    debugger.ask("disconnect", restart=False, terminateDebuggee=True)
    # Every debug_reply came to this client once, and nothing else of its own went missing.
    replies = [m["parent_header"].get("msg_id") for m in front.replies()]
    assert sorted(replies) == sorted([*debugger.reply_ids, cell])
    return stopped


def _state(relay: Relay, kernel_id: str) -> str:
    response = requests.get(f"{relay.url}/api/kernels/{kernel_id}", timeout=10)
    response.raise_for_status()
    state: str = response.json()["execution_state"]
    return state


def _jupyter(relay: Relay, kernel_id: str, protocol: str) -> Front:
    return JupyterFront(JupyterWS(relay.url, kernel_id, protocol=protocol))


def _socketio(relay: Relay, kernel_id: str) -> Front:
    channels = ("shell", "control", "iopub")
    return SocketIOFront(
        RelayKernelClient(relay.url, kernel_id, channels, transports=["websocket"])
    )


@pytest.mark.parametrize("wire", ["v1", "legacy", "socketio"])
def test_the_debugger_stops_shows_variables_and_continues(relay: Relay, wire: str) -> None:
    """A client debugs a cell through the relay; a client of the other front on the same kernel sees
    the debugger's events on iopub and none of its replies."""
    kernel_id = relay.spawn()
    if wire == "socketio":
        asker, bystander = _socketio(relay, kernel_id), _jupyter(relay, kernel_id, "v1")
    else:
        asker, bystander = _jupyter(relay, kernel_id, wire), _socketio(relay, kernel_id)
    try:
        stopped = debug_a_cell(asker, partial(_state, relay, kernel_id))
        seen = bystander.iopub(_event("stopped"))
        assert seen["content"] == stopped["content"]
        bystander.iopub(_event("terminated"))
        assert bystander.replies() == []
    finally:
        asker.close()
        bystander.close()
        relay.shutdown(kernel_id)


@pytest.fixture(scope="module")
def gateway_client(relay: Relay, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Jupyter Server with --gateway-url at the relay, as JupyterLab runs on it; its base URL."""
    if not _has_jupyter_server():
        pytest.skip("jupyter_server is required (the interop extra)")
    root = tmp_path_factory.mktemp("debugger-gateway")
    with jupyter_server(root, GATEWAY_TOKEN, f"--gateway-url={relay.url}") as server:
        yield server.url


def test_the_debugger_works_through_jupyter_server_with_gateway_url(
    relay: Relay, gateway_client: str
) -> None:
    """JupyterLab's path: Jupyter Server forwards the debugger's control and iopub traffic to a relay
    kernel and back (legacy wire on its gateway hop)."""
    headers = {"Authorization": f"token {GATEWAY_TOKEN}"}
    started = requests.post(
        f"{gateway_client}/api/kernels", json={"name": "python3"}, headers=headers, timeout=90
    )
    assert started.status_code == 201, started.text
    kernel_id = started.json()["id"]
    assert kernel_id in {kernel["id"] for kernel in relay.kernels()}
    front = JupyterFront(
        JupyterWS(gateway_client, kernel_id, protocol="legacy", token=GATEWAY_TOKEN)
    )
    try:
        debug_a_cell(front, partial(_state, relay, kernel_id))
    finally:
        front.close()
        requests.delete(f"{gateway_client}/api/kernels/{kernel_id}", headers=headers, timeout=60)

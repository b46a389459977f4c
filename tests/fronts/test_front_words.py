"""Each front words refusals for its own clients: socket.io's forms never reach a Jupyter client."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import pytest
from twisted.internet.task import Clock
from twisted.web.test.requesthelper import DummyRequest

from kernel_relay.auth import TokenAuth
from kernel_relay.fronts.jupyter_request import Admitted, check_request
from kernel_relay.fronts.socketio import SocketIOFront
from kernel_relay.http.origins import OriginPolicy
from kernel_relay.relay.core import RelayCore
from kernel_relay.socketio import ConnectionRefused
from tests.fakes import FakeKernel, FakeRegistry

KERNEL = "k1-0000"


def relay_core(token: str | None = None) -> RelayCore:
    registry = FakeRegistry()
    core = RelayCore(registry, Clock(), auth=TokenAuth(token))  # type: ignore[arg-type]
    registry.start(FakeKernel(KERNEL))
    return core


def channels_request(**headers: bytes) -> DummyRequest:
    """A WebSocket upgrade to the kernel's channels, with ``headers``."""
    request = DummyRequest([b"api", b"kernels", KERNEL.encode(), b"channels"])
    request.path = f"/api/kernels/{KERNEL}/channels".encode()
    request.isSecure = lambda: False  # type: ignore[method-assign]
    request.requestHeaders.setRawHeaders(b"upgrade", [b"websocket"])
    for name, value in headers.items():
        request.requestHeaders.setRawHeaders(name.encode(), [value])
    return request


def test_a_jupyter_client_without_a_token_is_told_where_a_token_goes_in_its_own_words() -> None:
    """A 401 to a Jupyter client names the Authorization header and ?token=, not socket.io's auth payload."""
    request = channels_request()
    body = check_request(request, relay_core("secret"), OriginPolicy.from_options([]))
    assert isinstance(body, bytes) and request.responseCode == 401
    message = json.loads(body)["message"]
    assert message.startswith("Authentication required") and "Authorization: token" in message
    assert "connect with auth" not in message


def test_a_jupyter_request_learns_its_channels_from_the_core() -> None:
    """A full token opens the four channels, iopub first, in one question to the core."""
    request = channels_request(authorization=b"token secret")
    admitted = check_request(request, relay_core("secret"), OriginPolicy.from_options([]))
    assert isinstance(admitted, Admitted)
    assert admitted.channels == ["iopub", "shell", "control", "stdin"]


class FakeSocketIO:
    """A socket.io server that only records the front's handlers."""

    def __init__(self) -> None:
        self.handlers: dict[str, Any] = {}

    def of(self, pattern: Any) -> FakeSocketIO:
        return self

    def on_connect(self, handler: Any) -> None:
        self.handlers["connect"] = handler

    def on_disconnect(self, handler: Any) -> None:
        pass

    def on(self, event: str, handler: Any) -> None:
        self.handlers[event] = handler

    def on_other_events(self, handler: Any) -> None:
        pass


class FakeSocket:
    """A socket.io socket on ``/<channel>/<kernel>``, recording what is emitted on it."""

    def __init__(self, channel: str) -> None:
        self.namespace = SimpleNamespace(
            name=f"/{channel}/{KERNEL}", params={"channel": channel, "kernel_id": KERNEL}
        )
        handshake = SimpleNamespace(query={}, headers={}, remote_address="127.0.0.1")
        self.client = SimpleNamespace(sid="sid-1", handshake=handshake, session=object())
        self.emitted: list[tuple[str, Any]] = []
        self.connecting = False

    def emit(self, event: str, data: Any) -> None:
        self.emitted.append((event, data))


def test_a_socketio_client_without_a_token_is_told_to_connect_with_auth() -> None:
    """A 401 to a socket.io client keeps its words: connect with auth {"token": ...}."""
    SocketIOFront(server := FakeSocketIO(), relay_core("secret"))  # type: ignore[arg-type]
    with pytest.raises(ConnectionRefused) as refused:
        server.handlers["connect"](FakeSocket("shell"), None)
    assert 'connect with auth {"token": "<token>"}' in str(refused.value)


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (([1, 2],), 'the argument of a "msg" event must be a Jupyter message object, not an array'),
        (({}, {}), 'a "msg" event takes exactly one argument, a Jupyter message object; it had 2'),
    ],
)
def test_a_socketio_msg_event_that_is_no_message_is_refused_in_socketio_words(
    args: tuple[Any, ...], words: str
) -> None:
    """The socket.io front, not the core, says what a "msg" event must carry; the ack is null."""
    SocketIOFront(server := FakeSocketIO(), relay_core())  # type: ignore[arg-type]
    socket = FakeSocket("shell")
    server.handlers["connect"](socket, None)
    assert server.handlers["msg"](socket, *args) is None
    [(event, details)] = socket.emitted
    assert event == "error" and details == {"message": words, "msg_id": None}

"""Each front renders each of the core's typed events in its own form, with the details clients read today."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import pytest
from twisted.internet.task import Clock

from kernel_relay.fronts.jupyter import JupyterFront
from kernel_relay.fronts.jupyter_connection import JupyterConnection
from kernel_relay.fronts.jupyter_request import Admitted
from kernel_relay.fronts.socketio import SocketIOClientOfCore, _LastEncoded
from kernel_relay.relay.events import (
    ClientEvent,
    KernelUnreachable,
    MessageRefused,
    MessageTooBig,
    MessageUnplaced,
    ReplayAhead,
    ReplayBacklogged,
    ReplayCut,
    ReplayExpired,
)
from kernel_relay.relay.payload import Outgoing
from kernel_relay.websocket import WriteBatcher

K = "k1"

#: Each event, the event name and the details both fronts send for it.
CASES: list[tuple[ClientEvent, str, dict[str, Any]]] = [
    (
        MessageRefused("iopub is read-only", "m1"),
        "error",
        {"message": "iopub is read-only", "msg_id": "m1"},
    ),
    (
        MessageTooBig("display_data", 900, 100, "m2", "p2", "iopub"),
        "error",
        {
            "message": "a display_data message of 900 bytes from the kernel exceeds the relay's limit of "
            "100 bytes and was not forwarded",
            "msg_id": "m2",
            "msg_type": "display_data",
            "parent_msg_id": "p2",
            "channel": "iopub",
        },
    ),
    (
        KernelUnreachable(12.4),
        "error",
        {
            "message": f"kernel {K} has not answered its heartbeat for 12s: its process is frozen or its "
            "ZeroMQ ports are unreachable; messages to it wait until it answers again or is shut down",
            "code": "kernel_unreachable",
            "kernel_id": K,
        },
    ),
    (
        ReplayBacklogged(2048, 7),
        "replay_gap",
        {
            "reason": "backlog",
            "message": "nothing was replayed: 2048 bytes sent earlier still wait to go out to this "
            "client; join again once it has read them",
            "last_seq": 7,
            "kernel_id": K,
        },
    ),
    (
        ReplayExpired(2, 5),
        "replay_gap",
        {
            "reason": "expired",
            "message": "messages 2 to 5 are no longer kept",
            "from": 2,
            "to": 5,
            "kernel_id": K,
        },
    ),
    (
        ReplayExpired(2, 5, "the fleet's stream could not be read: gone"),
        "replay_gap",
        {
            "reason": "expired",
            "message": "the fleet's stream could not be read: gone",
            "from": 2,
            "to": 5,
            "kernel_id": K,
        },
    ),
    (
        ReplayAhead(40, 3),
        "replay_gap",
        {
            "reason": "ahead",
            "message": "sequence 40 was never sent: this relay's sequence for the kernel is at 3 "
            "(numbers start again at 1 when the relay restarts)",
            "last_seq": 3,
            "kernel_id": K,
        },
    ),
    (
        MessageUnplaced(9),
        "replay_gap",
        {
            "reason": "fleet",
            "message": "a message of the kernel reached this relay after the fleet's stream had moved "
            "past it: it is not delivered here",
            "last_seq": 9,
            "kernel_id": K,
        },
    ),
    (
        ReplayCut(4, 6, "died"),
        "replay_gap",
        {
            "reason": "ended",
            "message": "the replay was cut short (kernel died): messages 4 to 6 were not sent",
            "from": 4,
            "to": 6,
            "kernel_id": K,
        },
    ),
]


class RecordingSocket:
    """A socket.io socket that records what is emitted on it."""

    def __init__(self) -> None:
        self.emitted: list[tuple[str, Any]] = []

    def emit(self, event: str, data: Any) -> None:
        self.emitted.append((event, data))


@pytest.mark.parametrize(("event", "name", "details"), CASES)
def test_the_socketio_front_emits_each_event_with_its_details(
    event: ClientEvent, name: str, details: dict[str, Any]
) -> None:
    """A core event becomes one socket.io event on the channel's namespace: its name and its details."""
    client = SocketIOClientOfCore(SimpleNamespace(), _LastEncoded())  # type: ignore[arg-type]
    socket = RecordingSocket()
    client.sockets[(K, "shell")] = socket  # type: ignore[assignment]
    client.tell(K, "shell", event)
    client.tell(K, "iopub", event)  # no socket there: nothing
    assert socket.emitted == [(name, details)]


class FakeCore:
    """Nothing of the core is asked when a connection shows an event."""


def jupyter_connection(
    resume_parent: bytes | None = None,
) -> tuple[JupyterConnection, list[Outgoing]]:
    """A Jupyter connection attached to iopub whose deliveries are recorded instead of framed."""
    front = JupyterFront(FakeCore(), Clock())  # type: ignore[arg-type]
    admitted = Admitted(SimpleNamespace(id=K), ["iopub"], "s", "127.0.0.1")  # type: ignore[arg-type]
    admitted.resume_parent = resume_parent
    connection = JupyterConnection(front, admitted, WriteBatcher(Clock()))
    connection.channels.add("iopub")
    sent: list[Outgoing] = []
    connection.deliver = lambda kernel_id, channel, message: sent.append(message)  # type: ignore[method-assign]
    return connection, sent


@pytest.mark.parametrize(("event", "name", "details"), CASES)
def test_the_jupyter_front_shows_each_event_on_stderr(
    event: ClientEvent, name: str, details: dict[str, Any]
) -> None:
    """A core event becomes a stream message on stderr, its details in the metadata, parented to what it concerns."""
    connection, sent = jupyter_connection(resume_parent=b'{"msg_id":"last-cell"}')
    connection.tell(K, "shell", event)
    [message] = sent
    header, parent, metadata, content = (json.loads(part) for part in message.parts)
    assert message.channel == "iopub" and header["msg_type"] == "stream"
    assert header["date"].endswith("Z")
    assert metadata == {"kernel_relay": {"event": name, **details}}
    assert content["name"] == "stderr" and details["message"] in content["text"]
    if name == "replay_gap":
        assert parent == {"msg_id": "last-cell"}
        assert content["text"].startswith(
            "[kernel-relay] output was lost while this client was away"
        )
    else:
        concerned = details.get("msg_id") or details.get("parent_msg_id")
        assert parent == ({"msg_id": concerned} if concerned else {})


def test_a_jupyter_connection_without_iopub_is_shown_nothing() -> None:
    """Events reach a Jupyter client only on iopub: a connection without it is told nothing."""
    connection, sent = jupyter_connection()
    connection.channels.clear()
    connection.tell(K, "shell", MessageRefused("no"))
    assert sent == []

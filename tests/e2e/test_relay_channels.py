"""Kernel channels through a real relay: real ipykernel kernels, python-socketio's real client, loopback."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import socketio

from tests.conftest import Relay
from tests.kernel_client import RelayKernelClient

TRANSPORTS = {"polling-upgrade": ["polling", "websocket"], "websocket": ["websocket"]}


@pytest.fixture(params=sorted(TRANSPORTS))
def client(
    relay: Relay, kernel_id: str, request: pytest.FixtureRequest
) -> Iterator[RelayKernelClient]:
    connection = RelayKernelClient(relay.url, kernel_id, transports=TRANSPORTS[request.param])
    yield connection
    connection.close()


def test_kernel_info_request_is_answered_on_shell(client: RelayKernelClient) -> None:
    """A kernel_info_request on /shell/<id> gets the kernel's kernel_info_reply."""
    msg_id = client.send("shell", "kernel_info_request")
    reply = client.reply_to("shell", msg_id)
    assert reply["header"]["msg_type"] == "kernel_info_reply"
    assert reply["content"]["status"] == "ok"
    assert reply["content"]["language_info"]["name"] == "python"
    assert reply["channel"] == "shell"
    assert isinstance(reply["header"]["date"], str)


def test_execute_gives_result_on_iopub_and_reply_on_shell(client: RelayKernelClient) -> None:
    """execute_request of 1+1 yields execute_result '2' on iopub and an ok execute_reply on shell."""
    msg_id, reply = client.execute("1+1")
    assert reply["header"]["msg_type"] == "execute_reply"
    assert reply["content"]["status"] == "ok"
    results = client.iopub_for(msg_id, "execute_result")
    assert len(results) == 1
    assert results[0]["content"]["data"]["text/plain"] == "2"
    states = [m["content"]["execution_state"] for m in client.iopub_for(msg_id, "status")]
    assert states == ["busy", "idle"]


def test_input_is_answered_over_stdin(client: RelayKernelClient) -> None:
    """input() in the kernel reaches the client as input_request on stdin and takes its input_reply."""
    msg_id = client.send(
        "shell",
        "execute_request",
        {"code": "answer = input('name? ')\nprint('hello', answer)", "allow_stdin": True},
    )
    request = client.wait_for(lambda: client.received["stdin"], what="input_request")[0]
    assert request["header"]["msg_type"] == "input_request"
    assert request["content"]["prompt"] == "name? "
    client.send("stdin", "input_reply", {"value": "relay"})
    reply = client.reply_to("shell", msg_id)
    assert reply["content"]["status"] == "ok"
    client.wait_idle(msg_id)
    streams = "".join(m["content"]["text"] for m in client.iopub_for(msg_id, "stream"))
    assert "hello relay" in streams


def test_interrupt_over_control_stops_a_running_cell(client: RelayKernelClient) -> None:
    """An interrupt_request on control interrupts a sleeping cell, which then replies with an error."""
    msg_id = client.start_sleeping_cell(60)
    interrupt_id = client.send("control", "interrupt_request")
    interrupt_reply = client.reply_to("control", interrupt_id)
    assert interrupt_reply["header"]["msg_type"] == "interrupt_reply"
    reply = client.reply_to("shell", msg_id, timeout=20)
    assert reply["content"]["status"] == "error"
    assert reply["content"]["ename"] == "KeyboardInterrupt"


BUFFER_DISPLAY = """
from IPython import get_ipython
kernel = get_ipython().kernel
kernel.session.send(
    kernel.iopub_socket, "display_data",
    {"data": {"text/plain": "binary payload"}, "metadata": {}, "transient": {}},
    parent=kernel.get_parent("shell"), ident=b"display_data",
    buffers=[b"\\x00\\x01\\x02\\xff", bytes(range(256)) * 4],
)
"""

ECHO_COMM_TARGET = """
from comm import get_comm_manager
def _echo_target(comm, open_msg):
    @comm.on_msg
    def _echo(msg):
        comm.send(data={"echoed": len(msg["buffers"])}, buffers=msg["buffers"])
get_comm_manager().register_target("relay-echo", _echo_target)
"""


def test_display_with_binary_buffers_arrives_with_its_buffers(client: RelayKernelClient) -> None:
    """A display_data with buffers reaches the iopub client with the same bytes as attachments."""
    msg_id, reply = client.execute(BUFFER_DISPLAY)
    assert reply["content"]["status"] == "ok", reply["content"]
    displays = client.wait_for(
        lambda: client.iopub_for(msg_id, "display_data"), timeout=10, what="display_data"
    )
    assert len(displays) == 1
    assert displays[0]["content"]["data"]["text/plain"] == "binary payload"
    assert displays[0]["buffers"] == [b"\x00\x01\x02\xff", bytes(range(256)) * 4]


def test_client_buffers_reach_the_kernel(client: RelayKernelClient) -> None:
    """Buffers sent by the client arrive in the kernel intact (a comm echoes them back over iopub)."""
    _, reply = client.execute(ECHO_COMM_TARGET)
    assert reply["content"]["status"] == "ok", reply["content"]
    comm_id = "relay-test-comm-" + client.session
    client.send("shell", "comm_open", {"comm_id": comm_id, "target_name": "relay-echo", "data": {}})
    payload = [b"\x00binary\xff", bytes(1000)]
    msg_id = client.send("shell", "comm_msg", {"comm_id": comm_id, "data": {}}, buffers=payload)
    echoed = client.wait_for(lambda: client.iopub_for(msg_id, "comm_msg"), what="echoed comm_msg")
    assert echoed[0]["content"]["data"] == {"echoed": 2}
    assert echoed[0]["buffers"] == payload


def test_two_clients_get_their_own_replies_and_all_iopub(relay: Relay, kernel_id: str) -> None:
    """Two clients on one kernel each get only their own shell replies, and both see all iopub."""
    first = RelayKernelClient(relay.url, kernel_id)
    second = RelayKernelClient(relay.url, kernel_id, transports=["websocket"])
    try:
        first_id, _ = first.execute("'from first'")
        second_id, _ = second.execute("'from second'")
        assert [m["parent_header"]["msg_id"] for m in first.received["shell"]] == [first_id]
        assert [m["parent_header"]["msg_id"] for m in second.received["shell"]] == [second_id]
        for watcher in (first, second):
            for msg_id, text in ((first_id, "'from first'"), (second_id, "'from second'")):
                watcher.wait_for(
                    lambda w=watcher, i=msg_id: w.iopub_for(i, "execute_result"),
                    what=f"{text} on iopub",
                )
                result = watcher.iopub_for(msg_id, "execute_result")[0]
                assert result["content"]["data"]["text/plain"] == text
    finally:
        first.close()
        second.close()


def test_input_request_goes_only_to_the_asking_client(relay: Relay, kernel_id: str) -> None:
    """With two clients on stdin, only the one whose request called input() gets the input_request."""
    asker = RelayKernelClient(relay.url, kernel_id)
    bystander = RelayKernelClient(relay.url, kernel_id)
    try:
        msg_id = asker.send(
            "shell", "execute_request", {"code": "input('who? ')", "allow_stdin": True}
        )
        asker.wait_for(lambda: asker.received["stdin"], what="input_request")
        asker.send("stdin", "input_reply", {"value": "me"})
        asker.reply_to("shell", msg_id)
        time.sleep(0.3)
        assert bystander.received["stdin"] == []
        assert bystander.received["shell"] == []
    finally:
        asker.close()
        bystander.close()


def test_input_request_without_asker_stdin_goes_to_the_kernels_stdin_clients(
    relay: Relay, kernel_id: str
) -> None:
    """An asker joined to shell only (as enchannel is) has its input_request sent to the kernel's stdin clients."""
    asker = RelayKernelClient(relay.url, kernel_id, channels=("shell", "iopub"))
    answerer = RelayKernelClient(relay.url, kernel_id, channels=("stdin",))
    try:
        msg_id = asker.send(
            "shell",
            "execute_request",
            {"code": "print('got', input('who? '))", "allow_stdin": True},
        )
        request = answerer.wait_for(lambda: answerer.received["stdin"], what="input_request")[0]
        assert request["header"]["msg_type"] == "input_request"
        assert request["parent_header"]["msg_id"] == msg_id
        answerer.send("stdin", "input_reply", {"value": "other"})
        assert asker.reply_to("shell", msg_id)["content"]["status"] == "ok"
        asker.wait_idle(msg_id)
        streams = [m["content"]["text"] for m in asker.iopub_for(msg_id, "stream")]
        assert "".join(streams) == "got other\n"
    finally:
        asker.close()
        answerer.close()


def test_unknown_kernel_namespace_is_refused(relay: Relay) -> None:
    """Connecting to /shell/<unknown id> fails with a connect error, not a hang."""
    sio = socketio.Client(reconnection=False)
    with pytest.raises(socketio.exceptions.ConnectionError) as raised:
        sio.connect(relay.url, namespaces=["/shell/not-a-kernel"], wait_timeout=10)
    assert "not-a-kernel" in str(raised.value) or "namespace" in str(raised.value).lower()
    sio.disconnect()


def test_unusable_messages_are_answered_with_an_error_event(client: RelayKernelClient) -> None:
    """A message without msg_type, a non-object message and a message on iopub each get an error event."""
    shell = client.namespace("shell")
    client.sio.emit("msg", {"header": {}, "content": {}}, namespace=shell)
    client.sio.emit("msg", "not a message", namespace=shell)
    client.sio.emit("msg", {"header": {"msg_type": "x"}}, namespace=client.namespace("iopub"))
    errors = client.wait_for(lambda: len(client.errors) >= 3 and client.errors, what="3 errors")
    texts = " | ".join(str(error["message"]) for error in errors)
    assert "msg_type" in texts
    assert "iopub" in texts
    msg_id = client.send("shell", "kernel_info_request")
    assert client.reply_to("shell", msg_id)["content"]["status"] == "ok"


def test_other_events_and_wrong_arguments_are_named_in_the_error_and_acked(
    client: RelayKernelClient,
) -> None:
    """An event other than "msg" gets an error naming it, and a client waiting for an ack gets one (null)."""
    shell = client.namespace("shell")
    acked = client.sio.call("nope", {"header": {}}, namespace=shell, timeout=10)
    assert acked is None
    client.sio.emit("msg", 42, namespace=shell)
    client.sio.emit("msg", ("one", "two"), namespace=shell)
    errors = client.wait_for(lambda: len(client.errors) >= 3 and client.errors, what="3 errors")
    texts = [str(error["message"]) for error in errors]
    assert any("unknown event 'nope'" in text for text in texts), texts
    assert any("must be a Jupyter message object, not a number" in text for text in texts), texts
    assert any("exactly one argument" in text and "it had 2" in text for text in texts), texts


def test_missing_parent_header_and_metadata_get_defaults(client: RelayKernelClient) -> None:
    """A bare {header: {msg_type}, content} message is completed and answered by the kernel."""
    client.sio.emit(
        "msg",
        {"header": {"msg_type": "kernel_info_request", "msg_id": "bare-1"}, "content": {}},
        namespace=client.namespace("shell"),
    )
    assert client.reply_to("shell", "bare-1")["header"]["msg_type"] == "kernel_info_reply"


def test_kernels_listing_counts_connected_clients(relay: Relay, kernel_id: str) -> None:
    """/api/kernels reports how many socket.io clients a kernel has."""
    first = RelayKernelClient(relay.url, kernel_id)
    second = RelayKernelClient(relay.url, kernel_id, channels=["iopub"])
    try:
        entry = next(k for k in relay.kernels() if k["id"] == kernel_id)
        assert entry["connections"] == 2
    finally:
        first.close()
        second.close()


def test_stdio_is_an_alias_of_stdin_for_enchannel(relay: Relay, kernel_id: str) -> None:
    """A client on /stdio/<id> (as enchannel-socketio-backend connects) gets input_request and answers it."""
    sio = socketio.Client(reconnection=False)
    requests_seen: list[dict[str, object]] = []
    replies: list[dict[str, object]] = []
    sio.on("msg", requests_seen.append, namespace=f"/stdio/{kernel_id}")
    sio.on("msg", replies.append, namespace=f"/shell/{kernel_id}")
    sio.connect(
        relay.url, namespaces=[f"/shell/{kernel_id}", f"/stdio/{kernel_id}"], wait_timeout=10
    )
    try:
        sio.emit(
            "msg",
            {
                "header": {"msg_id": "stdio-1", "msg_type": "execute_request"},
                "content": {"code": "input('via stdio? ')", "allow_stdin": True},
            },
            namespace=f"/shell/{kernel_id}",
        )
        deadline = time.monotonic() + 30
        while not requests_seen and time.monotonic() < deadline:
            time.sleep(0.05)
        assert requests_seen, "no input_request on /stdio"
        request = requests_seen[0]
        assert request["header"]["msg_type"] == "input_request"  # type: ignore[index]
        assert request["channel"] == "stdin"
        sio.emit(
            "msg",
            {"header": {"msg_type": "input_reply"}, "content": {"value": "yes"}},
            namespace=f"/stdio/{kernel_id}",
        )
        while not replies and time.monotonic() < deadline:
            time.sleep(0.05)
        assert replies and replies[0]["content"]["status"] == "ok"  # type: ignore[index]
    finally:
        sio.disconnect()

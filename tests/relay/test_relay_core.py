"""The relay core in process, with fake kernels and recording clients: routing, admission, resume, kernel events."""

from __future__ import annotations

import json
from typing import Any

import pytest
from twisted.internet.task import Clock

from kernel_relay.auth import TokenAuth
from kernel_relay.relay.core import REPLAY_BACKLOG, Refused, RelayCore, RelayLimits
from kernel_relay.relay.journal import Resume
from tests.fakes import FakeKernel, FakeRegistry, RecordingClient, kernel_message

KERNEL = "k1-0000"
NO_RESUME = Resume(None, False)


def seq_of(payload: Any) -> int:
    """The relay_seq of a delivered iopub payload (one JSON text, or a dict with raw parts)."""
    message = json.loads(payload) if isinstance(payload, str) else payload
    metadata = message["metadata"]
    metadata = json.loads(metadata) if isinstance(metadata, str) else metadata
    return int(metadata["relay_seq"])


@pytest.fixture
def kernel() -> FakeKernel:
    return FakeKernel(KERNEL)


@pytest.fixture
def registry(kernel: FakeKernel) -> FakeRegistry:
    return FakeRegistry()


@pytest.fixture
def core(registry: FakeRegistry, kernel: FakeKernel) -> RelayCore:
    relay = RelayCore(registry, Clock())  # type: ignore[arg-type]
    registry.start(kernel)
    return relay


def attached(
    core: RelayCore, client_id: str, *channels: str, resume: Resume = NO_RESUME
) -> RecordingClient:
    client = RecordingClient(client_id)
    for channel in channels:
        kernel = core.admit(client, KERNEL, channel, [None])
        before = len(client.outgoing)
        core.attach(client, kernel, channel, resume)  # type: ignore[arg-type]
        if channel == "iopub":
            # The kernel's state comes first (its own test below): the other tests count what follows.
            told = client.outgoing.pop(before)
            client.delivered.pop(before)
            assert b'"msg_type":"status"' in bytes(told.parts[0])
            assert b'"state":"current"' in bytes(told.parts[2])
    return client


def test_a_joining_iopub_client_is_told_the_kernels_state_first(
    core: RelayCore, kernel: FakeKernel
) -> None:
    """Before any replay or live message, a new iopub client gets a status with the kernel's current state."""
    kernel.publish(kernel_message("stream", "iopub", content={"text": "before"}))
    kernel.execution_state = "busy"
    client = RecordingClient("late")
    admitted = core.admit(client, KERNEL, "iopub", [None])
    core.attach(client, admitted, "iopub", Resume(0, False))  # type: ignore[arg-type]
    first = (
        json.loads(client.delivered[0][2])
        if isinstance(client.delivered[0][2], str)
        else client.delivered[0][2]
    )
    assert first["header"]["msg_type"] == "status"
    assert first["content"] == {"execution_state": "busy"} or json.loads(first["content"]) == {
        "execution_state": "busy"
    }
    assert len(client.delivered) == 2  # then the replay of what it missed


def test_every_iopub_client_gets_every_iopub_message_numbered(
    core: RelayCore, kernel: FakeKernel
) -> None:
    """Each iopub message goes to every attached client, one payload for all, numbered from 1."""
    first, second = attached(core, "a", "iopub"), attached(core, "b", "iopub")
    kernel.publish(kernel_message("stream", "iopub", content={"text": "hi"}))
    assert len(first.delivered) == len(second.delivered) == 1
    assert first.outgoing[0] is second.outgoing[0]
    assert seq_of(first.delivered[0][2]) == 1


def test_replies_go_only_to_the_asking_client(core: RelayCore, kernel: FakeKernel) -> None:
    """A reply that comes back on one client's line reaches that client, not another on the same channel."""
    asker, other = attached(core, "a", "shell"), attached(core, "b", "shell")
    line = kernel.clients[0]
    assert line.identity == b"a"
    line.deliver(kernel_message("execute_reply", "shell", parent="req"))
    assert [channel for _, channel, _ in asker.delivered] == ["shell"]
    assert other.delivered == []


def test_input_request_without_a_stdin_of_its_own_goes_to_every_stdin_client(
    core: RelayCore, kernel: FakeKernel
) -> None:
    """An input_request whose asker joined no stdin goes to every stdin client (enchannel's second connection)."""
    asker = attached(core, "a", "shell")
    answerer = attached(core, "b", "stdin")
    kernel.clients[0].deliver(kernel_message("input_request", "stdin", parent="req"))
    assert asker.delivered == []
    assert [channel for _, channel, _ in answerer.delivered] == ["stdin"]


def test_one_line_per_client_and_kernel_closed_with_its_last_channel(
    core: RelayCore, kernel: FakeKernel
) -> None:
    """shell, control and stdin of one client share one line to the kernel, closed when the last one leaves."""
    client = attached(core, "a", "shell", "control")
    assert len(kernel.clients) == 1
    core.detach(client, KERNEL, "shell", "client namespace disconnect")
    assert not kernel.clients[0].closed
    core.detach(client, KERNEL, "control", "client namespace disconnect")
    assert kernel.clients[0].closed
    assert core.client_count(KERNEL) == 0


def test_messages_are_sent_on_the_clients_line(core: RelayCore, kernel: FakeKernel) -> None:
    """A client's message goes out on its own line and its msg_id comes back."""
    client = attached(core, "a", "shell")
    msg_id = core.receive(client, KERNEL, "shell", {"header": {"msg_id": "m1"}, "content": {}})
    assert msg_id == "m1"
    assert kernel.clients[0].sent == [("shell", {"header": {"msg_id": "m1"}, "content": {}})]


@pytest.mark.parametrize(
    ("channel", "message", "reason"),
    [
        ("iopub", {"content": {}}, "iopub is read-only"),
        ("shell", {"buffers": ["text"]}, "buffers must be a list of binary attachments"),
    ],
)
def test_unusable_messages_are_refused_and_told(
    core: RelayCore, channel: str, message: Any, reason: str
) -> None:
    """A message the core cannot relay is refused, and the client is told why on the same channel."""
    client = attached(core, "a", channel)
    with pytest.raises(Refused, match=reason):
        core.receive(client, KERNEL, channel, message)
    [(_, told_channel, event, details)] = client.told
    assert (told_channel, event) == (channel, "error") and reason in details["message"]


def test_admission_needs_a_valid_token(registry: FakeRegistry, kernel: FakeKernel) -> None:
    """With a token set, no token is 401, a read-only kernel token is 403 off iopub, and a valid one is let in."""
    auth = TokenAuth("secret")
    core = RelayCore(registry, Clock(), auth=auth)  # type: ignore[arg-type]
    registry.start(kernel)
    client = RecordingClient("a")
    with pytest.raises(Refused) as missing:
        core.admit(client, KERNEL, "shell", [None, "wrong"])
    assert missing.value.code == 401
    viewer = auth.scoped.issue(KERNEL, "read-only")
    with pytest.raises(Refused) as scoped:
        core.admit(client, KERNEL, "shell", [viewer])
    assert scoped.value.code == 403
    assert core.admit(client, KERNEL, "iopub", [viewer]) is kernel
    assert core.admit(client, KERNEL, "shell", ["secret"]) is kernel


def test_the_core_says_which_channels_a_principal_may_use(
    registry: FakeRegistry, kernel: FakeKernel
) -> None:
    """A full token opens every channel, a read-only one iopub only, another kernel's token and none nothing."""
    auth = TokenAuth("secret")
    core = RelayCore(registry, Clock(), auth=auth, limits=RelayLimits(max_clients_per_kernel=1))  # type: ignore[arg-type]
    registry.start(kernel)
    viewer = auth.scoped.issue(KERNEL, "read-only")
    other = auth.scoped.issue("k2-0000", "full")
    assert core.allowed_channels("a", KERNEL, ["secret"]) == (
        kernel,
        ("iopub", "shell", "control", "stdin"),
    )
    assert core.allowed_channels("a", KERNEL, [viewer]) == (kernel, ("iopub",))
    refusals = {}
    for name, credentials in (("none", [None]), ("other", [other])):
        with pytest.raises(Refused) as refused:
            core.allowed_channels("a", KERNEL, credentials)
        refusals[name] = refused.value.code
    assert refusals == {"none": 401, "other": 403}
    attached_client = RecordingClient("x")
    core.attach(attached_client, kernel, "iopub", NO_RESUME)  # type: ignore[arg-type]
    with pytest.raises(Refused) as full:
        core.allowed_channels("a", KERNEL, ["secret"])
    assert full.value.code == 429


def test_unknown_kernel_and_full_kernel_are_refused(
    registry: FakeRegistry, kernel: FakeKernel
) -> None:
    """An unknown kernel is 404; past max_clients_per_kernel a new client is 429, a known one may join more."""
    core = RelayCore(registry, Clock(), limits=RelayLimits(max_clients_per_kernel=1))  # type: ignore[arg-type]
    registry.start(kernel)
    with pytest.raises(Refused) as unknown:
        core.admit(RecordingClient("a"), "nope", "shell", [None])
    assert unknown.value.code == 404
    first = attached(core, "a", "shell")
    core.admit(first, KERNEL, "iopub", [None])
    with pytest.raises(Refused) as full:
        core.admit(RecordingClient("b"), KERNEL, "iopub", [None])
    assert full.value.code == 429


def test_a_resuming_client_gets_what_it_missed(core: RelayCore, kernel: FakeKernel) -> None:
    """A client that joins iopub with since gets every later message in order, before new ones."""
    for text in ("a", "b", "c"):
        kernel.publish(kernel_message("stream", "iopub", content={"text": text}))
    client = attached(core, "a", "iopub", resume=Resume(1, False))
    assert [seq_of(payload) for _, _, payload in client.delivered] == [2, 3]


def test_a_client_with_a_backlog_gets_no_replay(core: RelayCore, kernel: FakeKernel) -> None:
    """A client with a megabyte still waiting gets a replay_gap 'backlog' instead of another copy of the journal."""
    kernel.publish(kernel_message("stream", "iopub", content={"text": "a"}))
    client = RecordingClient("a")
    client.backlog = REPLAY_BACKLOG
    core.attach(client, core.admit(client, KERNEL, "iopub", [None]), "iopub", Resume(0, False))  # type: ignore[arg-type]
    assert len(client.outgoing) == 1  # its kernel's state only
    [gap] = client.events("replay_gap")
    assert gap["reason"] == "backlog" and gap["last_seq"] == 1


def test_a_stopped_kernel_is_announced_dead_and_its_clients_let_go(
    core: RelayCore, registry: FakeRegistry, kernel: FakeKernel
) -> None:
    """When a kernel stops, its iopub clients see 'dead', then every client of it is let go and its lines close."""
    watcher = attached(core, "a", "iopub", "shell")
    registry.stop(KERNEL, "died (exit code 1)")
    [(_, _, status)] = watcher.delivered
    message = json.loads(status) if isinstance(status, str) else status
    assert message["content"] == {"execution_state": "dead"}
    assert message["header"]["version"] == "5.3"
    assert sorted(channel for _, channel, _ in watcher.let_go_of) == ["iopub", "shell"]
    assert kernel.clients[0].closed
    assert core.client_count(KERNEL) == 0


def test_the_relays_own_statuses_are_dated_in_utc_ending_in_z(
    core: RelayCore, registry: FakeRegistry
) -> None:
    """A status the relay makes carries an ISO 8601 date ending in Z, like every other date it writes."""
    watcher = attached(core, "a", "iopub")
    core.kernel_restarted(registry.get(KERNEL))  # type: ignore[arg-type]
    [(_, _, status)] = watcher.delivered
    message = json.loads(status) if isinstance(status, str) else status
    assert message["content"] == {"execution_state": "starting"}
    assert message["header"]["date"].endswith("Z") and "+00:00" not in message["header"]["date"]


def test_oversized_kernel_messages_are_told_not_forwarded(
    registry: FakeRegistry, kernel: FakeKernel
) -> None:
    """A kernel message over max_message_size reaches no client; each is told what was not forwarded."""
    core = RelayCore(registry, Clock(), limits=RelayLimits(max_message_size=50))  # type: ignore[arg-type]
    registry.start(kernel)
    client = attached(core, "a", "iopub")
    kernel.publish(kernel_message("stream", "iopub", content={"text": "x" * 100}))
    assert client.delivered == []
    [error] = client.events("error")
    assert "exceeds the relay's limit of 50 bytes" in error["message"]


def test_an_unreachable_kernel_is_told_on_every_channel(
    core: RelayCore, kernel: FakeKernel
) -> None:
    """A kernel that stops answering its heartbeat is told to its clients on each channel they use."""
    client = attached(core, "a", "iopub", "shell")
    core.kernel_unreachable(kernel, 31.0)  # type: ignore[arg-type]
    assert sorted(channel for _, channel, event, _ in client.told if event == "error") == [
        "iopub",
        "shell",
    ]

"""Replays streamed from the journal as each client drains: windows, order, gaps, clients that leave."""

from __future__ import annotations

import json
from typing import Any

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from kernel_relay.relay.core import RelayCore, ReplayOptions
from kernel_relay.relay.events import ReplayExpired
from kernel_relay.relay.journal import Resume
from kernel_relay.relay.numbering import Fetched
from kernel_relay.relay.payload import Outgoing
from kernel_relay.relay.replay import REPLAY_WINDOW
from tests.fakes import FakeKernel, FakeRegistry, RecordingClient, kernel_message

KERNEL = "k1-0000"
LINE = 100_000


def size_of(message: Outgoing) -> int:
    return sum(len(part) for part in message.parts) + sum(len(b) for b in message.buffers)


def seq_of(message: Outgoing) -> int:
    return int(json.loads(message.parts[2])["relay_seq"])


class DrainingClient(RecordingClient):
    """A client whose backlog grows by what it is handed and empties when it reads (then the core hears)."""

    def __init__(self, client_id: str, core: RelayCore) -> None:
        super().__init__(client_id)
        self.core = core
        self.most = 0

    def deliver(self, kernel_id: str, channel: str, message: Outgoing) -> None:
        super().deliver(kernel_id, channel, message)
        self.backlog += size_of(message)
        self.most = max(self.most, self.backlog)

    def read(self) -> None:
        self.backlog = 0
        self.core.drained(self)

    def seqs(self) -> list[int]:
        return [seq_of(m) for m in self.outgoing if m.seq]


@pytest.fixture
def kernel() -> FakeKernel:
    return FakeKernel(KERNEL)


@pytest.fixture
def registry() -> FakeRegistry:
    return FakeRegistry()


def core_with(registry: FakeRegistry, kernel: FakeKernel, **replay: Any) -> RelayCore:
    core = RelayCore(registry, Clock(), replay=ReplayOptions(**replay))  # type: ignore[arg-type]
    registry.start(kernel)
    return core


def publish_lines(kernel: FakeKernel, count: int, char: str = "x") -> None:
    for _ in range(count):
        kernel.publish(kernel_message("stream", "iopub", content={"text": char * LINE}))


def resumed(core: RelayCore, client_id: str, since: int) -> DrainingClient:
    client = DrainingClient(client_id, core)
    kernel = core.admit(client, KERNEL, "iopub", [None])
    core.attach(client, kernel, "iopub", Resume(since, False))
    # The kernel's state, told first and not numbered (tests/relay/test_relay_core.py reads it).
    state = client.outgoing.pop(0)
    assert state.seq == since and b'"state":"current"' in bytes(state.parts[2])
    return client


def read_all(client: DrainingClient, turns: int = 1000) -> None:
    for _ in range(turns):
        before = len(client.outgoing)
        client.read()
        if len(client.outgoing) == before:
            return


def test_a_replay_is_handed_out_a_window_at_a_time(
    registry: FakeRegistry, kernel: FakeKernel
) -> None:
    """A resuming client holds at most a window of its replay at once; reading, it gets all, in order, once."""
    core = core_with(registry, kernel)
    publish_lines(kernel, 60)
    client = resumed(core, "a", 0)
    assert 0 < len(client.outgoing) < 10
    assert client.backlog < REPLAY_WINDOW + LINE + 1000
    read_all(client)
    assert client.seqs() == list(range(1, 61))
    assert client.most < REPLAY_WINDOW + LINE + 1000


def test_a_hundred_resuming_clients_hold_a_window_each(
    registry: FakeRegistry, kernel: FakeKernel
) -> None:
    """A hundred clients resuming from 0 at once, none reading, hold a window each, not a journal each."""
    core = core_with(registry, kernel)
    publish_lines(kernel, 80)
    clients = [resumed(core, f"c{n}", 0) for n in range(100)]
    held = sum(client.backlog for client in clients)
    assert held < 100 * (REPLAY_WINDOW + LINE + 1000) < 80 * LINE * 100 // 2
    # What they are handed is the journal's own messages, never a copy.
    assert clients[0].outgoing[0] is clients[99].outgoing[0]


def test_live_messages_wait_their_turn_behind_the_replay(
    registry: FakeRegistry, kernel: FakeKernel
) -> None:
    """What the kernel sends during a replay comes after it, each message once; then the client is live."""
    core = core_with(registry, kernel)
    publish_lines(kernel, 20)
    client = resumed(core, "a", 5)
    publish_lines(kernel, 10, "y")
    assert client.seqs() == list(range(6, 6 + len(client.seqs())))
    read_all(client)
    assert client.seqs() == list(range(6, 31))
    publish_lines(kernel, 1, "z")  # caught up: delivered at once
    assert client.seqs()[-1] == 31


def test_what_expires_before_the_cursor_reaches_it_is_told_as_a_gap(
    registry: FakeRegistry, kernel: FakeKernel
) -> None:
    """Messages the journal drops while a client replays slowly are told as a replay_gap; the rest follows."""
    core = core_with(registry, kernel, max_bytes=12 * LINE)
    publish_lines(kernel, 10)
    client = resumed(core, "a", 0)
    first = client.seqs()
    publish_lines(kernel, 10, "y")  # the journal now keeps the last 11 or so only
    read_all(client)
    [gap] = client.events("replay_gap")
    assert gap["reason"] == "expired" and gap["from"] == first[-1] + 1
    assert client.seqs() == first + list(range(gap["to"] + 1, 21))


def test_a_client_that_leaves_mid_replay_is_handed_nothing_more(
    registry: FakeRegistry, kernel: FakeKernel
) -> None:
    """Once a replaying client detaches, a drain hands it nothing and live messages skip it."""
    core = core_with(registry, kernel)
    publish_lines(kernel, 30)
    client = resumed(core, "a", 0)
    handed = len(client.outgoing)
    core.detach(client, KERNEL, "iopub", "closed")
    client.read()
    publish_lines(kernel, 1)
    assert len(client.outgoing) == handed


def test_a_kernel_that_ends_mid_replay_cuts_it_and_says_so(
    registry: FakeRegistry, kernel: FakeKernel
) -> None:
    """A kernel that stops during a replay: the client is told what it will not get, sees it dead, is let go."""
    core = core_with(registry, kernel)
    publish_lines(kernel, 30)
    client = resumed(core, "a", 0)
    last = client.seqs()[-1]
    registry.stop(KERNEL, "shutdown")
    [gap] = client.events("replay_gap")
    assert gap["reason"] == "ended" and (gap["from"], gap["to"]) == (last + 1, 30)
    dead = json.loads(client.outgoing[-1].parts[3])
    assert dead == {"execution_state": "dead"}
    assert client.let_go_of == [(KERNEL, "iopub", "kernel shutdown")]


def test_a_replay_of_the_running_cell_is_streamed_too(
    registry: FakeRegistry, kernel: FakeKernel
) -> None:
    """replay: "execution" hands out the running cell's output from its execute_input, a window at a time."""
    core = core_with(registry, kernel)
    publish_lines(kernel, 5)
    kernel.publish(kernel_message("execute_input", "iopub", content={"code": "x"}))
    publish_lines(kernel, 20)
    client = DrainingClient("a", core)
    core.attach(client, core.admit(client, KERNEL, "iopub", [None]), "iopub", Resume(None, True))  # type: ignore[arg-type]
    assert client.outgoing.pop(0).seq == 0  # its kernel's state: it has read nothing yet
    assert client.backlog < REPLAY_WINDOW + LINE + 1000
    read_all(client)
    assert client.seqs() == list(range(6, 27))


class FleetNumbering:
    """Numbers like a fleet's shared counter (from ``start``); ``fetch`` waits for the test to answer."""

    def __init__(self, start: int) -> None:
        self.last = start - 1
        self.fetches: list[tuple[int, Deferred[Fetched]]] = []

    def number(self, kernel_id: str, msg_id: str, message: Outgoing, ready: Any) -> None:
        self.last += 1
        ready(self.last)

    def after(self, kernel_id: str, ready: Any) -> None:
        ready(self.last)

    def forget(self, kernel_id: str) -> None:
        pass

    def fetch(self, kernel_id: str, since: int) -> Deferred[Fetched]:
        fetched: Deferred[Fetched] = Deferred()
        self.fetches.append((since, fetched))
        return fetched


def test_a_fleet_catch_up_streams_the_stream_then_the_journal_then_what_came_meanwhile(
    registry: FakeRegistry, kernel: FakeKernel
) -> None:
    """Resuming from before this relay's journal: the fleet's older messages, its own, and those of the wait, once each, in order."""
    numbering = FleetNumbering(start=5)
    core = RelayCore(registry, Clock(), numbering=numbering)  # type: ignore[arg-type]
    registry.start(kernel)
    publish_lines(kernel, 6)  # numbered 5 to 10 here
    client = resumed(core, "a", 2)
    [(since, fetched)] = numbering.fetches
    assert since == 2 and client.outgoing == []
    publish_lines(kernel, 2, "y")  # 11 and 12 come during the fetch
    core.kernel_ready(kernel)  # a relay status, numbered 12 and kept nowhere
    older = [
        (seq, 0.0, Outgoing.of_kernel(kernel_message("stream", "iopub", content={"text": "o"})))
        for seq in (3, 4, 5, 6)
    ]
    fetched.callback(older)
    read_all(client)
    assert client.seqs()[:-1] == list(range(3, 13))
    status = json.loads(client.outgoing[-1].parts[3])
    assert status == {"execution_state": "idle"} and seq_of(client.outgoing[-1]) == 12
    assert client.events("replay_gap") == []
    publish_lines(kernel, 1, "z")
    assert client.seqs()[-1] == 13


def test_a_fleet_catch_up_tells_of_the_streams_entries_that_did_not_open(
    registry: FakeRegistry, kernel: FakeKernel
) -> None:
    """Entries of the fleet's stream that did not open (forged) are not replayed, and the client is told of them."""
    numbering = FleetNumbering(start=10)
    core = RelayCore(registry, Clock(), numbering=numbering)  # type: ignore[arg-type]
    registry.start(kernel)
    publish_lines(kernel, 2)  # numbered 10 and 11 here
    client = resumed(core, "a", 2)
    [(_, fetched)] = numbering.fetches
    line = Outgoing.of_kernel(kernel_message("stream", "iopub", content={"text": "o"}))
    fetched.callback(
        [
            (3, 0.0, line),
            (4, 0.0, None),
            (5, 0.0, None),
            (6, 0.0, line),
            (7, 0.0, line),
            (9, 0.0, None),
        ]
    )
    read_all(client)
    assert client.seqs() == [3, 6, 7, 10, 11]
    gaps = [(gap.first, gap.last) for gap in client.events_told if isinstance(gap, ReplayExpired)]
    assert gaps == [(4, 5), (9, 9)], client.events("replay_gap")


class LateNumbering(FleetNumbering):
    """A fleet whose numbers for this relay come only when the test says: the stream has them first."""

    def __init__(self, start: int) -> None:
        super().__init__(start)
        self.waiting: list[Any] = []

    def number(self, kernel_id: str, msg_id: str, message: Outgoing, ready: Any) -> None:
        self.waiting.append(ready)

    def release(self) -> None:
        for ready in self.waiting:
            self.last += 1
            ready(self.last)
        self.waiting.clear()


def test_a_message_a_fleet_catch_up_handed_already_is_not_delivered_again_live(
    registry: FakeRegistry, kernel: FakeKernel
) -> None:
    """
    Chaos seed 1: a relay that had just started replayed 1853-1872 from the fleet's stream to a resuming
    client, then its own numbering of 1872 came in and the live path handed it again. Messages past it come.
    """
    numbering = LateNumbering(start=6)
    core = RelayCore(registry, Clock(), numbering=numbering)  # type: ignore[arg-type]
    registry.start(kernel)
    client = resumed(core, "a", 2)
    publish_lines(kernel, 1)  # another relay numbers it 6 before this one hears its number
    [(_, fetched)] = numbering.fetches
    line = Outgoing.of_kernel(kernel_message("stream", "iopub", content={"text": "o"}))
    fetched.callback([(seq, 0.0, line) for seq in (3, 4, 5, 6)])
    read_all(client)
    assert client.seqs() == [3, 4, 5, 6]
    numbering.release()  # this relay's number for it: 6, handed already
    publish_lines(kernel, 1)
    numbering.release()
    read_all(client)
    assert client.seqs() == [3, 4, 5, 6, 7]

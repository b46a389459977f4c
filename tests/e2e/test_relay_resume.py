"""Resumable iopub against a real relay and kernel: reconnect with the last sequence seen, miss nothing."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import socketio

from tests.conftest import Relay
from tests.kernel_client import RelayKernelClient, in_arrival_order

pytestmark = pytest.mark.timeout(240)

LOOP = "import time\nfor i in range({n}):\n    print(i, flush=True)\n    time.sleep({pause})"


class IopubWatcher:
    """A python-socketio client on one kernel's iopub that records messages and replay_gap events."""

    def __init__(self, url: str, kernel_id: str, auth: dict[str, Any] | None = None) -> None:
        self.messages: list[dict[str, Any]] = []
        self.states: list[dict[str, Any]] = []
        self.gaps: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        namespace = f"/iopub/{kernel_id}"
        self.sio = in_arrival_order(socketio.Client(reconnection=False))
        self.sio.on("msg", self._message, namespace=namespace)
        self.sio.on("replay_gap", self.gaps.append, namespace=namespace)
        self.errors: list[dict[str, Any]] = []
        self.sio.on("error", self.errors.append, namespace=namespace)
        self.sio.connect(url, namespaces=[namespace], auth=auth, wait_timeout=10)

    def _message(self, message: dict[str, Any]) -> None:
        with self._lock:
            if message["metadata"].get("kernel_relay", {}).get("state") == "current":
                self.states.append(message)  # the kernel's state, told first: no message of its own
            else:
                self.messages.append(message)

    def received(self) -> list[dict[str, Any]]:
        """The messages so far (a copy: the client's thread may still add one after a disconnect)."""
        with self._lock:
            return list(self.messages)

    def printed(self, parent: str) -> str:
        with self._lock:
            return "".join(
                m["content"]["text"]
                for m in self.messages
                if m["header"]["msg_type"] == "stream"
                and m["parent_header"].get("msg_id") == parent
            )

    def close(self) -> None:
        self.sio.disconnect()


def wait(predicate: Any, timeout: float = 60.0, what: str = "a condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def small_journal_relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Relay]:
    server = Relay(tmp_path_factory.mktemp("runtime"), "--iopub-replay-bytes", "2000")
    try:
        yield server
    finally:
        server.stop()


def expected(n: int) -> str:
    return "".join(f"{i}\n" for i in range(n))


def test_reconnecting_client_gets_exactly_what_it_missed(relay: Relay, kernel_id: str) -> None:
    """A watcher that leaves during a printing loop and resumes with its last sequence sees every line
    once, in order: no gap, no duplicate."""
    runner = RelayKernelClient(relay.url, kernel_id, ("shell",))
    first = IopubWatcher(relay.url, kernel_id)
    try:
        msg_id = runner.send("shell", "execute_request", {"code": LOOP.format(n=60, pause=0.03)})
        wait(lambda: first.printed(msg_id).count("\n") >= 10, what="the first lines")
        first.close()
        # What it saw and the sequence it resumes from are one snapshot: a message that still arrives
        # after disconnect() must count neither as seen nor as resumed from.
        seen_before = first.received()
        time.sleep(0.5)  # lines go by while nobody watches
        since = int(seen_before[-1]["metadata"]["relay_seq"])
        second = IopubWatcher(relay.url, kernel_id, auth={"since": since})
        try:
            runner.reply_to("shell", msg_id, timeout=60)
            wait(
                lambda: any(
                    m["header"]["msg_type"] == "status"
                    and m["content"]["execution_state"] == "idle"
                    and m["parent_header"].get("msg_id") == msg_id
                    for m in second.messages
                ),
                what="idle after the loop",
            )
            assert second.gaps == []
            combined = seen_before + second.messages
            seqs = [m["metadata"]["relay_seq"] for m in combined]
            assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), "no gap, no duplicate"
            printed = "".join(
                m["content"]["text"]
                for m in combined
                if m["header"]["msg_type"] == "stream" and m["parent_header"]["msg_id"] == msg_id
            )
            assert printed == expected(60)
        finally:
            second.close()
    finally:
        runner.close()


def test_a_gap_that_is_no_longer_kept_is_announced(small_journal_relay: Relay) -> None:
    """With a tiny journal, resuming from an old sequence gets a replay_gap event naming the lost range."""
    kernel_id = small_journal_relay.spawn()
    runner = RelayKernelClient(small_journal_relay.url, kernel_id, ("shell", "iopub"))
    try:
        runner.execute(LOOP.format(n=40, pause=0))
        resumed = IopubWatcher(small_journal_relay.url, kernel_id, auth={"since": 1})
        try:
            wait(lambda: resumed.gaps, what="a replay_gap event")
            (gap,) = resumed.gaps
            assert gap["reason"] == "expired" and gap["from"] == 2 and gap["to"] >= 2
            assert gap["kernel_id"] == kernel_id
            wait(lambda: resumed.messages, what="the kept messages")
            assert resumed.messages[0]["metadata"]["relay_seq"] == gap["to"] + 1
        finally:
            resumed.close()
        ahead = IopubWatcher(small_journal_relay.url, kernel_id, auth={"since": 10**9})
        try:
            wait(lambda: ahead.gaps, what="the explanation of a sequence from the future")
            assert ahead.gaps[0]["reason"] == "ahead"
        finally:
            ahead.close()
    finally:
        runner.close()
        small_journal_relay.shutdown(kernel_id)


def test_late_joiner_gets_the_running_cells_output_so_far(relay: Relay, kernel_id: str) -> None:
    """A viewer joining with replay: execution sees what the running cell printed before it joined."""
    runner = RelayKernelClient(relay.url, kernel_id, ("shell", "iopub"))
    try:
        msg_id = runner.send("shell", "execute_request", {"code": LOOP.format(n=30, pause=0.05)})
        wait(lambda: runner.iopub_for(msg_id, "stream"), what="the cell printing")
        time.sleep(0.3)
        viewer = IopubWatcher(relay.url, kernel_id, auth={"replay": "execution"})
        try:
            runner.reply_to("shell", msg_id, timeout=60)
            runner.wait_idle(msg_id)
            wait(lambda: viewer.printed(msg_id) == expected(30), what="every line at the viewer")
            assert viewer.messages[0]["header"]["msg_type"] == "execute_input"
        finally:
            viewer.close()
    finally:
        runner.close()


def test_an_unusable_resume_option_is_ignored_and_the_client_told_why(
    relay: Relay, kernel_id: str
) -> None:
    """A since that is no relay_seq, or an unknown replay, gets an error event; the client stays connected."""
    watcher = IopubWatcher(relay.url, kernel_id, auth={"since": "abc", "replay": "all"})
    try:
        wait(lambda: len(watcher.errors) >= 2, 10, "two error events")
        texts = [error["message"] for error in watcher.errors]
        assert any('"since" was ignored' in text and '"abc"' in text for text in texts), texts
        assert any('"replay" was ignored' in text for text in texts), texts
        assert watcher.sio.connected
    finally:
        watcher.close()

"""The request ledger in process: what it keeps of each execute_request, its bounds, its waits, and the core feeding it."""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.task import Clock

from kernel_relay.relay.core import RelayCore
from kernel_relay.relay.journal import Resume
from kernel_relay.relay.ledger import (
    COMPLETE,
    ENDED,
    IDLE_GRACE,
    INPUT,
    RUNNING,
    LedgerOptions,
    RequestLedger,
)
from tests.fakes import FakeKernel, FakeRegistry, RecordingClient, kernel_message

KERNEL = "k1-0000"


def output(msg_type: str, parent: str, **content: Any) -> Any:
    return kernel_message(msg_type, "iopub", parent, content)


def finished(ledger: RequestLedger, msg_id: str, status: str = "ok") -> None:
    """The kernel's reply to ``msg_id``, then its idle (the order ipykernel sends them in)."""
    ledger.observe(KERNEL, kernel_message("execute_reply", "shell", msg_id, {"status": status}))
    ledger.observe(KERNEL, output("status", msg_id, execution_state="idle"))


def ledger_with(request: str = "r1", **options: Any) -> tuple[RequestLedger, Clock]:
    clock = Clock()
    ledger = RequestLedger(clock, LedgerOptions(**options))
    ledger.submitted(KERNEL, request, "print(1)", {"cell_id": "c1"})
    return ledger, clock


def test_a_request_keeps_its_outputs_count_and_status() -> None:
    """Outputs fold into nbformat's form (streams joined), the count from execute_input, the status from the reply."""
    ledger, _ = ledger_with()
    ledger.observe(KERNEL, output("status", "r1", execution_state="busy"))
    ledger.observe(KERNEL, output("execute_input", "r1", execution_count=7, code="x"))
    ledger.observe(KERNEL, output("stream", "r1", name="stdout", text="a\n"))
    ledger.observe(KERNEL, output("stream", "r1", name="stdout", text="b\n"))
    assert ledger.get(KERNEL, "r1").state == RUNNING  # type: ignore[union-attr]
    ledger.observe(
        KERNEL,
        kernel_message("execute_reply", "shell", "r1", {"status": "ok", "execution_count": 7}),
    )
    # The reply (shell) overtook the last output and the idle (iopub): the request waits for its idle.
    assert ledger.get(KERNEL, "r1").state == RUNNING  # type: ignore[union-attr]
    ledger.observe(
        KERNEL,
        output("execute_result", "r1", data={"text/plain": "3"}, metadata={}, execution_count=7),
    )
    ledger.observe(KERNEL, output("status", "r1", execution_state="idle"))
    request = ledger.get(KERNEL, "r1")
    assert request is not None and request.state == COMPLETE and request.status == "ok"
    assert request.execution_count == 7
    assert request.outputs.items == [
        {"output_type": "stream", "name": "stdout", "text": "a\nb\n"},
        {
            "output_type": "execute_result",
            "data": {"text/plain": "3"},
            "metadata": {},
            "execution_count": 7,
        },
    ]


def test_messages_of_other_requests_are_ignored() -> None:
    """Only messages whose parent is a known request count."""
    ledger, _ = ledger_with()
    ledger.observe(KERNEL, output("stream", "other", name="stdout", text="x"))
    ledger.observe("k2", output("stream", "r1", name="stdout", text="x"))
    assert ledger.get(KERNEL, "r1").outputs.items == []  # type: ignore[union-attr]


def test_clear_output_and_update_display_data_change_what_is_kept() -> None:
    """clear_output (wait: at the next output) clears; update_display_data replaces by display_id."""
    ledger, _ = ledger_with()
    shown = {"data": {"text/plain": "1"}, "metadata": {}, "transient": {"display_id": "d"}}
    ledger.observe(KERNEL, output("display_data", "r1", **shown))
    ledger.observe(
        KERNEL,
        output(
            "update_display_data",
            "r1",
            data={"text/plain": "2"},
            metadata={},
            transient={"display_id": "d"},
        ),
    )
    assert ledger.get(KERNEL, "r1").outputs.items[0]["data"] == {"text/plain": "2"}  # type: ignore[union-attr]
    ledger.observe(KERNEL, output("clear_output", "r1", wait=True))
    assert len(ledger.get(KERNEL, "r1").outputs.items) == 1  # type: ignore[union-attr]
    ledger.observe(KERNEL, output("stream", "r1", name="stdout", text="z"))
    assert ledger.get(KERNEL, "r1").outputs.items == [  # type: ignore[union-attr]
        {"output_type": "stream", "name": "stdout", "text": "z"}
    ]


def test_input_request_and_answer() -> None:
    """An input_request makes the request wait for input with its prompt; an input_reply makes it run again."""
    ledger, _ = ledger_with()
    ledger.observe(
        KERNEL,
        kernel_message("input_request", "stdin", "r1", {"prompt": "who? ", "password": False}),
    )
    request = ledger.get(KERNEL, "r1")
    assert request is not None and request.state == INPUT
    assert request.input_request == {"prompt": "who? ", "password": False}
    ledger.sent(
        KERNEL, "stdin", {"header": {"msg_type": "input_reply"}, "content": {"value": "x"}}, "m"
    )
    assert request.state == RUNNING and request.input_request is None


def test_a_kernel_ending_ends_its_live_requests_with_a_reason() -> None:
    """A restart or death ends a running request with a clear status, not pending forever."""
    ledger, _ = ledger_with()
    ledger.kernel_ended(KERNEL, "died (exit code -9)")
    request = ledger.get(KERNEL, "r1")
    assert request is not None and request.state == ENDED
    assert request.ended == "kernel died (exit code -9)"


def test_over_the_byte_bound_the_oldest_outputs_go_and_are_counted() -> None:
    """Past max_bytes the oldest requests lose outputs first, and say how many they lost."""
    ledger, _ = ledger_with(max_bytes=400)
    ledger.submitted(KERNEL, "r2", "", {})
    for _ in range(3):
        ledger.observe(
            KERNEL, output("display_data", "r1", data={"text/plain": "x" * 100}, metadata={})
        )
    ledger.observe(
        KERNEL, output("display_data", "r2", data={"text/plain": "y" * 100}, metadata={})
    )
    first, second = ledger.get(KERNEL, "r1"), ledger.get(KERNEL, "r2")
    assert first is not None and second is not None
    assert first.outputs.dropped >= 1 and second.outputs.dropped == 0
    assert ledger.kept_bytes <= 400
    assert first.summary()["complete_outputs"] is False


def test_the_count_bound_forgets_the_oldest_finished_request() -> None:
    """At most max_requests are kept: the oldest finished one goes first, never one still live."""
    ledger, _ = ledger_with(max_requests=2)
    ledger.submitted(KERNEL, "r2", "", {})
    finished(ledger, "r2")
    ledger.submitted(KERNEL, "r3", "", {})
    assert ledger.get(KERNEL, "r2") is None
    assert [request.msg_id for request in ledger.recent(KERNEL)] == ["r1", "r3"]


def test_live_requests_are_kept_past_the_bound_and_full_says_so() -> None:
    """When every kept request is live none is forgotten: full() says so and the excess is counted."""
    ledger, _ = ledger_with(max_requests=2)
    ledger.submitted(KERNEL, "r2", "", {})
    assert ledger.full() is True and ledger.past_bound == 0
    ledger.submitted(KERNEL, "r3", "", {})  # a WebSocket front's: it cannot be refused
    assert [request.msg_id for request in ledger.recent(KERNEL)] == ["r1", "r2", "r3"]
    assert ledger.past_bound == 1
    finished(ledger, "r1")
    assert ledger.full() is True  # one finished: the ledger is still one past its bound
    finished(ledger, "r2")
    assert ledger.full() is False
    ledger.submitted(KERNEL, "r4", "", {})
    assert [request.msg_id for request in ledger.recent(KERNEL)] == ["r3", "r4"]
    assert ledger.past_bound == 0


def test_a_finished_request_is_kept_max_age_seconds() -> None:
    """A finished request goes max_age seconds after it ended; a running one stays."""
    ledger, clock = ledger_with(max_age=10.0)
    ledger.submitted(KERNEL, "r2", "", {})
    finished(ledger, "r1")
    clock.advance(11)
    assert ledger.get(KERNEL, "r1") is None
    assert ledger.get(KERNEL, "r2") is not None


def test_a_wait_fires_on_change_and_a_cancelled_one_is_forgotten() -> None:
    """changed() fires at the next change; a wait cancelled (its client went) leaves nothing behind."""
    ledger, _ = ledger_with()
    fired: list[object] = []
    ledger.changed(KERNEL, "r1").addCallback(fired.append)
    ledger.observe(KERNEL, output("stream", "r1", name="stdout", text="x"))
    assert fired == [None]
    waiter = ledger.changed(KERNEL, "r1")
    waiter.addErrback(lambda failure: None)
    waiter.cancel()
    assert ledger.waiting() == 0


def test_an_idle_without_a_reply_ends_the_request_until_the_reply_says() -> None:
    """A request whose reply went to a closed line ends at its idle; a later reply still sets its status."""
    ledger, _ = ledger_with()
    ledger.observe(KERNEL, output("error", "r1", ename="E", evalue="v", traceback=[]))
    ledger.observe(KERNEL, output("status", "r1", execution_state="idle"))
    request = ledger.get(KERNEL, "r1")
    assert request is not None and request.state == COMPLETE and request.status == "error"
    ledger.observe(KERNEL, kernel_message("execute_reply", "shell", "r1", {"status": "aborted"}))
    assert request.status == "aborted"


def test_a_reply_whose_idle_never_comes_completes_after_a_grace() -> None:
    """The idle may be lost (a kernel's iopub past its bounds): the reply stands after IDLE_GRACE seconds."""
    ledger, clock = ledger_with()
    ledger.observe(KERNEL, output("status", "r1", execution_state="busy"))
    ledger.observe(KERNEL, kernel_message("execute_reply", "shell", "r1", {"status": "error"}))
    request = ledger.get(KERNEL, "r1")
    assert request is not None and request.state == RUNNING and request.status is None
    woken: list[object] = []
    ledger.changed(KERNEL, "r1").addCallback(woken.append)
    clock.advance(IDLE_GRACE)
    assert request.state == COMPLETE and request.status == "error" and woken == [None]
    clock.advance(IDLE_GRACE)  # a later idle changes nothing
    ledger.observe(KERNEL, output("status", "r1", execution_state="idle"))
    assert request.status == "error" and request.inferred is False


def test_a_request_whose_kernel_ends_after_its_reply_is_complete() -> None:
    """A reply came, then the kernel died before the idle: the cell ran, its reply stands; others end."""
    ledger, clock = ledger_with()
    ledger.submitted(KERNEL, "r2", "", {})
    ledger.observe(KERNEL, kernel_message("execute_reply", "shell", "r1", {"status": "ok"}))
    ledger.kernel_ended(KERNEL, "died")
    clock.advance(IDLE_GRACE)
    replied, queued = ledger.get(KERNEL, "r1"), ledger.get(KERNEL, "r2")
    assert replied is not None and replied.state == COMPLETE and replied.status == "ok"
    assert queued is not None and queued.state == ENDED and queued.ended == "kernel died"


@pytest.fixture
def kernel() -> FakeKernel:
    return FakeKernel(KERNEL)


def test_the_core_feeds_the_ledger_from_any_client(kernel: FakeKernel) -> None:
    """An execute_request a client sends is a request; its iopub outputs and shell reply reach the ledger."""
    registry = FakeRegistry()
    core = RelayCore(registry, Clock())  # type: ignore[arg-type]
    registry.start(kernel)
    client = RecordingClient("a")
    for channel in ("iopub", "shell"):
        admitted = core.admit(client, KERNEL, channel, [None])
        core.attach(client, admitted, channel, Resume(None, False))
    msg_id = core.receive(
        client,
        KERNEL,
        "shell",
        {"header": {"msg_id": "m1", "msg_type": "execute_request"}, "content": {"code": "1"}},
    )
    kernel.publish(output("stream", msg_id, name="stdout", text="hi"))
    kernel.clients[0].deliver(
        kernel_message("execute_reply", "shell", msg_id, {"status": "ok", "execution_count": 1})
    )
    kernel.publish(output("status", msg_id, execution_state="idle"))
    request = core.ledger.get(KERNEL, msg_id)
    assert request is not None and request.code == "1" and request.status == "ok"
    assert request.outputs.items == [{"output_type": "stream", "name": "stdout", "text": "hi"}]

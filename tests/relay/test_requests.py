"""
Requests of a fleet in process: the ledger's records (what it keeps for other relays, and when), the rebuild
of a request from its record and the kernel's stream (the ledger's own fold), and a wait on a relay that did
not accept the request.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock

from kernel_relay.kernels import KernelMessage
from kernel_relay.relay.execution import Execution, RequestRecord
from kernel_relay.relay.ledger import COMPLETE, ENDED, INPUT, RUNNING, RequestLedger
from kernel_relay.relay.numbering import Fetched
from kernel_relay.relay.payload import Outgoing
from kernel_relay.relay.requests import MAX_READS, PAGE, RECHECK, Rebuild, RemoteRequests
from tests.fakes import kernel_message, result_of

KERNEL = "k1-0000"


def rebuild_all(
    kernel_id: str, records: list[RequestRecord], stream: Fetched, now: float
) -> list[Execution]:
    """The requests of ``records``, rebuilt from the whole of ``stream`` in one page."""
    rebuilding = Rebuild(kernel_id, records)
    rebuilding.fold(stream)
    return rebuilding.settle(now)


def rebuild(kernel_id: str, record: RequestRecord, stream: Fetched, now: float) -> Execution:
    """One request rebuilt from its record and the whole of ``stream``."""
    return rebuild_all(kernel_id, [record], stream, now)[0]


class MemoryRequests:
    """The fleet's records, in memory (the interface of ``kernel_relay.fleet.requests``)."""

    def __init__(self) -> None:
        self.records: dict[tuple[str, str], RequestRecord] = {}
        self.saved: list[RequestRecord] = []
        self.ended: list[tuple[str, str]] = []

    def save(self, kernel_id: str, record: RequestRecord) -> None:
        self.saved.append(record)
        self.records[(kernel_id, record.msg_id)] = record

    def load(self, kernel_id: str, msg_id: str) -> Deferred[RequestRecord | None]:
        return succeed(self.records.get((kernel_id, msg_id)))

    def end_live(self, kernel_id: str, reason: str) -> None:
        self.ended.append((kernel_id, reason))

    def input_answered(self, kernel_id: str) -> None:
        for where, found in list(self.records.items()):
            if where[0] == kernel_id and found.input_request is not None:
                self.records[where] = replace(found, input_request=None)

    def written(self, kernel_id: str) -> Deferred[None]:
        return succeed(None)

    def recent(self, kernel_id: str) -> Deferred[list[RequestRecord]]:
        found = [r for (k, _), r in self.records.items() if k == kernel_id]
        return succeed(sorted(found, key=lambda r: r.submitted))


class MemoryStream:
    """A kernel's numbered stream (the interface of the fleet's numbering that the reads use)."""

    def __init__(self) -> None:
        self.entries: list[tuple[int, float, Outgoing]] = []
        self.unsettled: list[Callable[[int], None]] = []
        self.settle_at_once = True
        self.fetches: list[tuple[int, int | None, int | None]] = []

    def add(self, message: KernelMessage, when: float = 0.0) -> None:
        self.entries.append((len(self.entries) + 1, when, Outgoing.of_kernel(message)))

    def after(self, kernel_id: str, ready: Callable[[int], None]) -> None:
        if self.settle_at_once:
            ready(len(self.entries))
        else:
            self.unsettled.append(ready)

    def fetch(
        self, kernel_id: str, since: int, until: int | None = None, count: int | None = None
    ) -> Deferred[list[tuple[int, float, Outgoing]]]:
        self.fetches.append((since, until, count))
        found = [e for e in self.entries if e[0] > since and (until is None or e[0] <= until)]
        return succeed(found[:count])

    def number(self, *args: Any) -> None:
        raise AssertionError("not used")

    def forget(self, kernel_id: str) -> None:
        pass


_ids = itertools.count()


def iopub(msg_type: str, parent: str, **content: Any) -> KernelMessage:
    """A kernel's iopub message with a msg_id of its own, in its bytes as in its header."""
    message = kernel_message(msg_type, "iopub", parent, content)
    header = {**message.header, "msg_id": f"{msg_type}-{parent}-{next(_ids)}"}
    raw = (json.dumps(header).encode(), *message.raw_parts[1:])
    return KernelMessage(header, message.parent_header, {}, content, channel="iopub", raw_parts=raw)


def cell(parent: str, *texts: str, count: int = 3) -> list[KernelMessage]:
    """What a kernel says on iopub for a cell that prints ``texts``."""
    return [
        iopub("status", parent, execution_state="busy"),
        iopub("execute_input", parent, execution_count=count, code="..."),
        *(iopub("stream", parent, name="stdout", text=text) for text in texts),
        iopub("status", parent, execution_state="idle"),
    ]


def shared_ledger() -> tuple[RequestLedger, MemoryRequests, Clock]:
    clock = Clock()
    ledger = RequestLedger(clock)
    shared = MemoryRequests()
    ledger.share(shared, lambda kernel_id: 41)
    return ledger, shared, clock


def test_the_ledger_keeps_a_record_at_the_changes_only_it_sees_not_per_output() -> None:
    """A record at the submission (with the kernel's latest relay_seq), input(), the idle and the reply; none per output."""
    ledger, shared, _ = shared_ledger()
    ledger.submitted(KERNEL, "r1", "x", {"cell_id": "c1", "other": "not kept"})
    assert shared.saved == [RequestRecord("r1", 41, 0.0, cell_id="c1")]
    for message in cell("r1", *[f"{i}\n" for i in range(50)])[:-1]:
        ledger.observe(KERNEL, message)
    assert len(shared.saved) == 1
    ledger.observe(KERNEL, kernel_message("input_request", "stdin", "r1", {"prompt": "who? "}))
    assert shared.saved[-1].input_request == {"prompt": "who? ", "password": False}
    shared.records[(KERNEL, "r0")] = record(
        msg_id="r0", input_request={"prompt": "", "password": False}
    )
    ledger.input_answered(KERNEL)  # here or on another relay: no record waits for input now
    assert {r.input_request for r in shared.records.values()} == {None}
    ledger.observe(KERNEL, iopub("status", "r1", execution_state="idle"))
    assert (shared.saved[-1].status, shared.saved[-1].inferred) == ("ok", True)
    reply = kernel_message("execute_reply", "shell", "r1", {"status": "ok", "execution_count": 3})
    ledger.observe(KERNEL, reply)
    assert shared.saved[-1].status == "ok" and not shared.saved[-1].inferred
    assert shared.saved[-1].execution_count == 3 and len(shared.saved) == 4


def test_a_kernels_end_ends_the_fleets_records_only_when_the_kernel_itself_ended() -> None:
    """A restart or a death ends every live record of the kernel; a relay that stops serving it does not."""
    ledger, shared, _ = shared_ledger()
    ledger.submitted(KERNEL, "r1", "x", {})
    ledger.kernel_ended(KERNEL, "the relay is stopping")
    assert shared.ended == []
    ledger.kernel_ended(KERNEL, "restarting")
    ledger.kernel_ended(KERNEL, "died (exit code -9)")
    assert shared.ended == [(KERNEL, "kernel restarting"), (KERNEL, "kernel died (exit code -9)")]


def test_the_rebuild_from_the_stream_is_the_ledgers_own_fold() -> None:
    """Read from the stream (other requests' messages between), a request equals the accepting relay's."""
    ledger, shared, clock = shared_ledger()
    stream = MemoryStream()
    for _ in range(41):
        stream.add(iopub("status", "older", execution_state="idle"))
    ledger.submitted(KERNEL, "r1", "x", {"document_path": "a.ipynb"})
    messages = cell("r1", "a\n", "b\n")
    messages[3:3] = [
        iopub("stream", "other", name="stdout", text="not mine\n"),
        iopub("display_data", "r1", data={"text/plain": "d"}, metadata={}),
        iopub("clear_output", "r1", wait=True),
        iopub("stream", "r1", name="stderr", text="c\n"),
        iopub("error", "r1", ename="E", evalue="v", traceback=[]),
    ]
    for message in messages:
        ledger.observe(KERNEL, message)
        stream.add(message)
    here = ledger.get(KERNEL, "r1")
    assert here is not None and here.state == COMPLETE
    there = rebuild(KERNEL, shared.records[(KERNEL, "r1")], stream.entries[41:], clock.seconds())
    assert there.summary() == {**here.summary(), "metadata": {"document_path": "a.ipynb"}}
    assert there.status == "error" and there.execution_count == 3


def test_an_entry_copied_under_a_later_number_is_folded_once_across_pages() -> None:
    """A Redis writer's copy of an output, on a later page of the same read, is not shown twice."""
    messages = cell("r1", "a\n", "b\n")
    entries = numbered(messages)
    copied = [*entries[:3], (3 + PAGE, 0.0, entries[2][2]), *entries[3:]]
    rebuilding = Rebuild(KERNEL, [record()])
    rebuilding.fold(copied[:3])
    rebuilding.fold(copied[3:])
    (request,) = rebuilding.settle(0.0)
    assert "".join(output["text"] for output in request.summary()["outputs"]) == "a\nb\n"


def record(**fields: Any) -> RequestRecord:
    return replace(RequestRecord("r1", 0, 0.0), **fields)


def numbered(messages: list[KernelMessage], first: int = 1, when: float = 0.0) -> list[Any]:
    return [(first + i, when, Outgoing.of_kernel(m)) for i, m in enumerate(messages)]


def test_the_record_tells_what_the_stream_cannot() -> None:
    """The reply's status and input() come from the record; a kernel's end after the cell's idle wins."""
    done = numbered(cell("r1", "x\n"), when=10.0)
    aborted = rebuild(KERNEL, record(status="aborted", execution_count=9), done, 20.0)
    assert (aborted.state, aborted.status, aborted.execution_count) == (COMPLETE, "aborted", 9)
    waiting = rebuild(KERNEL, record(input_request={"prompt": "?", "password": False}), done[:3], 0)
    assert waiting.state == INPUT and waiting.input_request == {"prompt": "?", "password": False}
    ended_after = rebuild(KERNEL, record(ended="kernel restarting", finished=9.0), done, 20.0)
    assert ended_after.state == ENDED and ended_after.status is None
    assert ended_after.ended == "kernel restarting"
    ended_later = rebuild(KERNEL, record(ended="kernel restarting", finished=11.0), done, 20.0)
    assert ended_later.state == COMPLETE and ended_later.status == "ok"
    running = rebuild(KERNEL, record(), done[:3], 0)
    assert running.state == RUNNING and running.outputs.dropped == 0


def test_a_request_whose_start_the_stream_no_longer_keeps_says_outputs_are_missing() -> None:
    """Trimmed past the request's first messages: outputs_dropped says at least one is missing."""
    messages = cell("r1", "a\n", "b\n")
    trimmed = rebuild(KERNEL, record(first=0), numbered(messages[3:], first=4), 0)
    assert trimmed.state == COMPLETE and trimmed.outputs.dropped == 1
    whole = rebuild(KERNEL, record(first=0), numbered(messages), 0)
    assert whole.outputs.dropped == 0
    queued = rebuild(KERNEL, record(first=0), [], 0)
    assert queued.live and queued.outputs.dropped == 0


def remote() -> tuple[RemoteRequests, RequestLedger, MemoryRequests, MemoryStream, Clock]:
    clock = Clock()
    ledger = RequestLedger(clock)
    shared = MemoryRequests()
    stream = MemoryStream()
    return RemoteRequests(ledger, shared, stream, clock), ledger, shared, stream, clock


def test_a_wait_on_another_relay_ends_at_the_idle_it_hears_once_the_stream_has_it() -> None:
    """Woken by the kernel's idle as this relay hears it, the read waits until the stream holds it."""
    requests, ledger, shared, stream, clock = remote()
    shared.records[(KERNEL, "r1")] = record()
    messages = cell("r1", "a\n")
    for message in messages[:-1]:
        stream.add(message)
    answers: list[Any] = []
    requests.read(KERNEL, "r1", 30).addCallback(answers.append)
    assert answers == [] and ledger.waiting() == 1
    stream.settle_at_once = False
    ledger.observe(KERNEL, messages[-1])  # heard here, not numbered yet
    assert answers == [] and stream.unsettled
    stream.add(messages[-1])
    stream.unsettled.pop()(len(stream.entries))
    [found] = answers
    assert found.state == COMPLETE and found.outputs.items[0]["text"] == "a\n"
    assert ledger.waiting() == 0 and not clock.getDelayedCalls()


def test_a_wait_on_another_relay_sees_a_record_change_and_times_out() -> None:
    """What only the accepting relay sees (input()) ends the wait at the next recheck; a wait ends in time."""
    requests, ledger, shared, _, clock = remote()
    shared.records[(KERNEL, "r1")] = record()
    answers: list[Any] = []
    requests.read(KERNEL, "r1", 30).addCallback(answers.append)
    clock.advance(RECHECK)
    assert answers == []
    shared.records[(KERNEL, "r1")] = record(input_request={"prompt": "?", "password": False})
    clock.advance(RECHECK)
    assert [a.state for a in answers] == [INPUT]
    shared.records[(KERNEL, "r2")] = record(msg_id="r2")
    requests.read(KERNEL, "r2", 2.5).addCallback(answers.append)
    clock.pump([RECHECK] * 3)
    assert answers[-1].msg_id == "r2" and answers[-1].live
    assert ledger.waiting() == 0 and not clock.getDelayedCalls()


def test_a_wait_whose_client_went_leaves_nothing_and_an_unknown_request_is_none() -> None:
    """Cancelling a wait forgets it (no waiter, no timer); a request the fleet keeps no record of is None."""
    requests, ledger, shared, _, clock = remote()
    shared.records[(KERNEL, "r1")] = record()
    waiting = requests.read(KERNEL, "r1", 30)
    waiting.addErrback(lambda failure: None)
    waiting.cancel()
    assert ledger.waiting() == 0 and not clock.getDelayedCalls()
    answers: list[Any] = []
    requests.read(KERNEL, "nope", 30).addCallback(answers.append)
    assert answers == [None]


def test_a_kernels_end_wakes_a_wait_for_another_relays_request() -> None:
    """The kernel's end here wakes the wait at once; the record then tells how the request ended."""
    requests, ledger, shared, _, clock = remote()
    shared.records[(KERNEL, "r1")] = record()
    answers: list[Any] = []
    requests.read(KERNEL, "r1", 30).addCallback(answers.append)
    shared.records[(KERNEL, "r1")] = record(ended="kernel died", finished=0.0)
    ledger.kernel_ended(KERNEL, "died")
    assert [a.state for a in answers] == [ENDED] and not clock.getDelayedCalls()


def test_at_most_a_few_stream_reads_run_at_once() -> None:
    """Each read may hold a kernel's whole stream: past MAX_READS they wait their turn (or their client goes)."""
    requests, _, shared, stream, _ = remote()
    shared.records[(KERNEL, "r1")] = record()
    stream.settle_at_once = False
    reads = [requests.read(KERNEL, "r1") for _ in range(MAX_READS + 2)]
    answers: list[Any] = []
    for read in reads:
        read.addCallbacks(answers.append, lambda failure: None)
    assert len(stream.unsettled) == MAX_READS
    reads[-1].cancel()
    while stream.unsettled:
        stream.unsettled.pop(0)(0)
    assert len(answers) == MAX_READS + 1 and all(a.msg_id == "r1" for a in answers)


def test_a_kernels_requests_are_rebuilt_in_one_pass_and_listed_but_those_kept_here() -> None:
    """Interleaved requests fold apart from one read of the stream; the list skips what the ledger holds."""
    requests, _, shared, stream, _ = remote()
    first, second = cell("r1", "a\n", count=1), cell("r2", "b\n", count=2)
    for one, two in zip(first, second, strict=True):
        stream.add(one)
        stream.add(two)
    records = [record(msg_id="r1", submitted=1.0), record(msg_id="r2", first=1, submitted=2.0)]
    both = rebuild_all(KERNEL, records, stream.entries, 0)
    assert [(r.msg_id, r.execution_count, r.outputs.items[0]["text"]) for r in both] == [
        ("r1", 1, "a\n"),
        ("r2", 2, "b\n"),
    ]
    assert [r.summary() for r in both] == [
        rebuild(KERNEL, one, stream.entries, 0).summary() for one in records
    ]
    for one in records:
        shared.records[(KERNEL, one.msg_id)] = one
    listed: list[Any] = []
    requests.recent(KERNEL, {"r1"}).addCallback(listed.append)
    assert [[r.msg_id for r in found] for found in listed] == [["r2"]]


def test_a_read_holds_a_page_of_the_stream_at_once_and_stops_at_the_requests_end() -> None:
    """A finished request's read stops at its end; a live one's goes on page by page to the stream's end."""
    requests, _, shared, stream, _ = remote()
    for message in cell("r1", "a\n", count=1):
        stream.add(message)
    for n in range(PAGE * 2):
        stream.add(iopub("stream", "r2", name="stdout", text=f"{n}\n"))
    shared.records[(KERNEL, "r1")] = record()
    shared.records[(KERNEL, "r2")] = record(msg_id="r2", first=4, submitted=1.0)
    done = result_of(requests.read(KERNEL, "r1"))
    assert (done.state, done.outputs.items[0]["text"]) == (COMPLETE, "a\n")
    assert stream.fetches == [(0, None, PAGE)]  # one page: the request ended in it
    stream.fetches.clear()
    live = result_of(requests.read(KERNEL, "r2"))
    assert live.live and live.outputs.items[0]["text"].count("\n") == PAGE * 2
    assert stream.fetches == [(4, None, PAGE), (4 + PAGE, None, PAGE), (4 + PAGE * 2, None, PAGE)]


def test_a_request_held_here_ends_when_the_fleets_record_says_its_kernel_restarted_elsewhere() -> (
    None
):
    """A kernel another relay manages restarted there: its record, read by a GET or the list, ends it here."""
    requests, ledger, shared, _, _ = remote()
    for msg_id in ("r1", "r2"):
        ledger.submitted(KERNEL, msg_id, "x", {})
        shared.records[(KERNEL, msg_id)] = record(
            msg_id=msg_id, ended="kernel restarting", finished=5.0
        )
    ledger.submitted(KERNEL, "r3", "x", {})  # its record still live
    result_of(requests.ended(KERNEL, "r1"))
    one = ledger.get(KERNEL, "r1")
    assert one is not None and (one.state, one.ended, one.finished) == (
        ENDED,
        "kernel restarting",
        5.0,
    )
    assert result_of(requests.recent(KERNEL, {"r1", "r2", "r3"})) == []
    assert [r.state for r in ledger.recent(KERNEL)] == [ENDED, ENDED, "queued"]

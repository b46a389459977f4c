"""
The execute API's routes in process (StubTreq) over the relay core and a fake kernel: statuses, long-poll,
cancelling a request, tokens, and how REST requests are bounded.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from treq.testing import StubTreq
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock

from kernel_relay.auth import TokenAuth
from kernel_relay.fronts.execute import REPLY_GRACE, ExecuteFront
from kernel_relay.fronts.execute_routes import MAX_WAIT, ExecuteAPI
from kernel_relay.http.guards import AuthGuard
from kernel_relay.http.routes import KleinRoutes
from kernel_relay.kernels import UnknownKernel
from kernel_relay.relay.client import Refused
from kernel_relay.relay.core import RelayCore, RelayLimits
from kernel_relay.relay.journal import Resume
from kernel_relay.relay.ledger import COMPLETE, RUNNING, Execution, LedgerOptions
from tests.fakes import FakeKernel, FakeRegistry, RecordingClient, kernel_message, result_of

URL = "http://127.0.0.1:3000"
KERNEL = "k1-0000"
TOKEN = "execute-routes-token-0123456789"


class InterruptibleRegistry(FakeRegistry):
    """A fake registry that records interrupts (and fails them while ``failing`` says why)."""

    def __init__(self) -> None:
        super().__init__()
        self.interrupted: list[str] = []
        self.failing: Exception | None = None

    def interrupt(self, kernel_id: str) -> Deferred[None]:
        if kernel_id not in self:
            return fail(UnknownKernel(kernel_id))
        if self.failing is not None:
            return fail(self.failing)
        self.interrupted.append(kernel_id)
        return succeed(None)


class Routes:
    """The execute routes behind the token guard, over a core with one fake kernel."""

    def __init__(
        self,
        max_clients: int | None = None,
        max_rest: int | None = None,
        kept: int = 1000,
        fleet: Any = None,
    ) -> None:
        self.clock = Clock()
        self.kernel = FakeKernel(KERNEL)
        self.registry = registry = InterruptibleRegistry()
        self.auth = TokenAuth(TOKEN)
        self.core = RelayCore(
            registry,  # type: ignore[arg-type]
            self.clock,
            auth=self.auth,
            limits=RelayLimits(max_clients_per_kernel=max_clients),
            ledger=LedgerOptions(max_requests=kept),
        )
        registry.start(self.kernel)
        front = ExecuteFront(self.core, registry, max_live=max_rest, remote=fleet)  # type: ignore[arg-type]
        api = ExecuteAPI(front, registry, self.clock)  # type: ignore[arg-type]
        self.stub = StubTreq(AuthGuard(KleinRoutes([(api.app, api.resource())]), self.auth))

    def call(
        self, method: str, path: str, token: str = TOKEN, body: Any = None
    ) -> tuple[int, dict[str, str], Any]:
        pending = self.stub.request(
            method,
            URL + path,
            headers={"Authorization": f"Bearer {token}"},
            data=json.dumps(body).encode() if body is not None else None,
        )
        return self.answer(pending)

    def answer(self, pending: Any) -> tuple[int, dict[str, str], Any]:
        self.stub.flush()
        response = result_of(pending)
        headers = {k.decode(): v[0].decode() for k, v in response.headers.getAllRawHeaders()}
        content = result_of(self.stub.content(response))
        return response.code, headers, json.loads(content) if content else None

    def kernel_replies(self, parent: str, **content: Any) -> None:
        """The kernel's reply to ``parent``, then its idle (the order ipykernel sends them in)."""
        self.kernel_says("execute_reply", "shell", parent, **content)
        self.kernel_says("status", "iopub", parent, execution_state="idle")

    def kernel_says(self, msg_type: str, channel: str, parent: str, **content: Any) -> None:
        message = kernel_message(msg_type, channel, parent, content)
        if channel == "iopub":
            self.kernel.publish(message)
        else:
            self.kernel.clients[-1].deliver(message)


def submitted(routes: Routes, code: str = "print(1)") -> str:
    status, headers, body = routes.call(
        "POST", f"/api/kernels/{KERNEL}/execute", body={"code": code}
    )
    assert status == 202 and body["pending"] is True and body["request_status"] == "queued"
    assert headers["Location"] == f"/api/kernels/{KERNEL}/requests/{body['request_id']}"
    sent = routes.kernel.clients[-1].sent[-1]
    assert sent[0] == "shell" and sent[1]["content"]["code"] == code
    return str(body["request_id"])


def test_a_request_answers_202_then_300_for_input_then_200_with_its_outputs() -> None:
    """The contract's statuses in order: pending, waiting for input (with Location), done with nbformat outputs."""
    routes = Routes()
    msg_id = submitted(routes)
    path = f"/api/kernels/{KERNEL}/requests/{msg_id}"
    assert routes.call("GET", path)[0] == 202
    routes.kernel_says("input_request", "stdin", msg_id, prompt="who? ", password=False)
    status, headers, body = routes.call("GET", path)
    assert status == 300 and headers["Location"] == f"/api/kernels/{KERNEL}/input"
    assert body["input_request"] == {"prompt": "who? ", "password": False}
    assert routes.call("POST", f"/api/kernels/{KERNEL}/input", body={"input": "ada"})[0] == 201
    assert routes.kernel.clients[-1].sent[-1][1]["content"] == {"value": "ada"}
    routes.kernel_says("stream", "iopub", msg_id, name="stdout", text="hi ada\n")
    routes.kernel_replies(msg_id, status="ok", execution_count=3)
    status, _, body = routes.call("GET", path)
    assert status == 200 and body["status"] == "ok" and body["execution_count"] == 3
    assert json.loads(body["outputs"]) == [
        {"output_type": "stream", "name": "stdout", "text": "hi ada\n"}
    ]
    assert body["outputs_dropped"] == 0
    listed = routes.call("GET", f"/api/kernels/{KERNEL}/requests")[2]
    assert [request["request_id"] for request in listed["requests"]] == [msg_id]


def test_a_kernel_that_dies_mid_request_answers_500() -> None:
    """A request whose kernel restarts or dies ends with 500 and the reason, never pending forever."""
    routes = Routes()
    msg_id = submitted(routes)
    routes.core.kernel_restarting(routes.kernel)  # type: ignore[arg-type]
    status, _, body = routes.call("GET", f"/api/kernels/{KERNEL}/requests/{msg_id}")
    assert status == 500 and body["error"] == "kernel restarting"


def test_long_poll_answers_at_the_end_or_after_wait_and_forgets_a_client_that_went() -> None:
    """?wait= answers when the request ends, or after N seconds (bounded); a client gone leaves no wait."""
    routes = Routes()
    msg_id = submitted(routes)
    path = URL + f"/api/kernels/{KERNEL}/requests/{msg_id}?wait=30"
    headers = {"Authorization": f"Bearer {TOKEN}"}
    pending = routes.stub.get(path, headers=headers)
    answered: list[object] = []
    pending.addCallback(lambda response: answered.append(response) or response)
    routes.kernel_says("stream", "iopub", msg_id, name="stdout", text="x")
    routes.stub.flush()
    assert answered == []  # an output alone does not end the wait
    routes.kernel_replies(msg_id, status="ok", execution_count=1)
    assert routes.answer(pending)[0] == 200
    other = submitted(routes)
    timed = routes.stub.get(
        URL + f"/api/kernels/{KERNEL}/requests/{other}?wait=9999", headers=headers
    )
    timed.addCallback(lambda response: answered.append(response) or response)
    routes.clock.advance(MAX_WAIT - 1)
    routes.stub.flush()
    assert len(answered) == 1
    routes.clock.advance(1)
    assert routes.answer(timed)[0] == 202
    gone = routes.stub.get(URL + f"/api/kernels/{KERNEL}/requests/{other}?wait=30", headers=headers)
    gone.addErrback(lambda failure: None)
    routes.stub.flush()
    assert routes.core.ledger.waiting() == 2  # the front's own watch of its request, and this wait
    gone.cancel()
    routes.stub.flush()
    assert routes.core.ledger.waiting() == 1
    assert routes.call("GET", f"/api/kernels/{KERNEL}/requests/{other}?wait=soon")[0] == 400


def test_bad_bodies_and_unknown_things_are_clear_errors() -> None:
    """A body that is not the contract's is 400, an unknown kernel or request 404."""
    routes = Routes()
    assert routes.call("POST", f"/api/kernels/{KERNEL}/execute", body={"code": 1})[0] == 400
    assert routes.call("POST", f"/api/kernels/{KERNEL}/execute", body=[1])[0] == 400
    assert routes.call("POST", "/api/kernels/nope/execute", body={"code": "1"})[0] == 404
    assert routes.call("GET", f"/api/kernels/{KERNEL}/requests/nope")[0] == 404
    assert routes.call("POST", f"/api/kernels/{KERNEL}/input", body={})[0] == 400


def test_a_read_only_kernel_token_reads_but_does_not_send() -> None:
    """Read-only: GET the requests and the list; POST execute and input are refused 403."""
    routes = Routes()
    msg_id = submitted(routes)
    reader = routes.auth.scoped.issue(KERNEL, "read-only")
    assert routes.call("GET", f"/api/kernels/{KERNEL}/requests/{msg_id}", token=reader)[0] == 202
    assert routes.call("GET", f"/api/kernels/{KERNEL}/requests", token=reader)[0] == 200
    assert (
        routes.call("POST", f"/api/kernels/{KERNEL}/execute", token=reader, body={"code": "1"})[0]
        == 403
    )
    assert (
        routes.call("POST", f"/api/kernels/{KERNEL}/input", token=reader, body={"input": "x"})[0]
        == 403
    )
    other = routes.auth.scoped.issue("k2-0000", "full")
    assert routes.call("GET", f"/api/kernels/{KERNEL}/requests", token=other)[0] == 403


def started(routes: Routes, msg_id: str) -> None:
    """The kernel starts running the request (busy, then its execute_input)."""
    routes.kernel_says("status", "iopub", msg_id, execution_state="busy")
    routes.kernel_says("execute_input", "iopub", msg_id, code="x", execution_count=1)


def test_delete_interrupts_the_running_request_and_answers_204() -> None:
    """DELETE of a running request (or one waiting for input) interrupts the kernel, as nbmodel does."""
    routes = Routes()
    msg_id = submitted(routes)
    started(routes, msg_id)
    status, _, body = routes.call("DELETE", f"/api/kernels/{KERNEL}/requests/{msg_id}")
    assert (status, body) == (204, None)
    assert routes.registry.interrupted == [KERNEL]
    waiting = submitted(routes)
    started(routes, waiting)
    routes.kernel_says("input_request", "stdin", waiting, prompt="? ", password=False)
    assert routes.call("DELETE", f"/api/kernels/{KERNEL}/requests/{waiting}")[0] == 204
    assert routes.registry.interrupted == [KERNEL, KERNEL]


def test_delete_of_a_queued_request_interrupts_it_once_it_starts_and_not_before() -> None:
    """A queued request is not running yet: it is interrupted when it starts, never the cell before it."""
    routes = Routes()
    first, queued = submitted(routes), submitted(routes)
    started(routes, first)
    for _ in range(2):  # a second DELETE changes nothing
        assert routes.call("DELETE", f"/api/kernels/{KERNEL}/requests/{queued}")[0] == 204
    routes.kernel_says("stream", "iopub", first, name="stdout", text="first runs on")
    routes.kernel_replies(first, status="ok", execution_count=1)
    routes.kernel_says("status", "iopub", queued, execution_state="busy")
    assert routes.registry.interrupted == []  # busy comes before the kernel can take an interrupt
    routes.kernel_says("execute_input", "iopub", queued, code="x", execution_count=2)
    assert routes.registry.interrupted == [KERNEL]
    routes.kernel_replies(queued, status="error", execution_count=2)
    assert routes.registry.interrupted == [KERNEL]
    assert routes.core.ledger.waiting() == 0  # nothing waits on either request once they ended


def dropped_after_cancel(routes: Routes) -> str:
    """A request started, cancelled, then ended by the kernel at its idle with no reply (it dropped it)."""
    msg_id = submitted(routes)
    started(routes, msg_id)
    assert routes.call("DELETE", f"/api/kernels/{KERNEL}/requests/{msg_id}")[0] == 204
    routes.kernel_says("status", "iopub", msg_id, execution_state="idle")
    return msg_id


def test_a_cancelled_request_the_kernel_dropped_without_a_reply_reads_aborted() -> None:
    """An interrupt before the code runs ends the request at its idle with no reply: aborted, not ok."""
    routes = Routes()
    msg_id = dropped_after_cancel(routes)
    status, _, body = routes.call("GET", f"/api/kernels/{KERNEL}/requests/{msg_id}")
    assert (status, body["status"]) == (200, "aborted"), body
    uncancelled = submitted(routes)
    started(routes, uncancelled)
    routes.kernel_says("status", "iopub", uncancelled, execution_state="idle")
    assert routes.call("GET", f"/api/kernels/{KERNEL}/requests/{uncancelled}")[2]["status"] == "ok"


def test_delete_of_a_request_that_ended_interrupts_nothing() -> None:
    """A finished request is not stopped again: the kernel may be running someone else's cell."""
    routes = Routes()
    msg_id = submitted(routes)
    started(routes, msg_id)
    routes.kernel_replies(msg_id, status="ok", execution_count=1)
    other = submitted(routes)
    started(routes, other)
    assert routes.call("DELETE", f"/api/kernels/{KERNEL}/requests/{msg_id}")[0] == 204
    assert routes.registry.interrupted == []
    assert routes.call("GET", f"/api/kernels/{KERNEL}/requests/{msg_id}")[0] == 200


def test_delete_errors_unknown_requests_failed_interrupts_and_read_only_tokens() -> None:
    """DELETE: 404 for an unknown request or kernel, 500 with the reason when the interrupt fails, 403 read-only."""
    routes = Routes()
    assert routes.call("DELETE", f"/api/kernels/{KERNEL}/requests/nope")[0] == 404
    assert routes.call("DELETE", "/api/kernels/nope/requests/nope")[0] == 404
    msg_id = submitted(routes)
    started(routes, msg_id)
    reader = routes.auth.scoped.issue(KERNEL, "read-only")
    path = f"/api/kernels/{KERNEL}/requests/{msg_id}"
    assert routes.call("DELETE", path, token=reader)[0] == 403
    assert routes.registry.interrupted == []
    routes.registry.failing = RuntimeError("no signal for you")
    status, _, body = routes.call("DELETE", path)
    assert status == 500 and "no signal for you" in body["message"]


def test_rest_requests_are_no_client_connections() -> None:
    """While a REST request runs, the kernel counts no client for it: a WebSocket client still gets its one place."""
    routes = Routes(max_clients=1)
    submitted(routes)
    assert routes.core.client_count(KERNEL) == 0
    browser = RecordingClient("browser-1")
    # Not refused: the REST request is no client.
    routes.core.admit(browser, KERNEL, "iopub", [TOKEN])
    routes.core.attach(browser, routes.kernel, "iopub", Resume(None, False))  # type: ignore[arg-type]
    assert routes.core.client_count(KERNEL) == 1
    with pytest.raises(Refused):
        routes.core.admit(RecordingClient("browser-2"), KERNEL, "iopub", [TOKEN])


def test_rest_requests_per_kernel_are_bounded_with_a_clear_429() -> None:
    """Over the bound of REST requests waiting or running on a kernel, one more is refused 429 until one ends."""
    routes = Routes(max_rest=2)
    first = submitted(routes)
    submitted(routes)
    status, _, body = routes.call("POST", f"/api/kernels/{KERNEL}/execute", body={"code": "1"})
    assert status == 429 and "2 requests" in body["message"]
    assert len(routes.kernel.clients[-1].sent) == 2  # the refused one never reached the kernel
    routes.kernel_replies(first, status="ok", execution_count=1)
    submitted(routes)


def test_a_reply_after_the_idle_still_reaches_a_rest_request() -> None:
    """The kernel's idle may come before its reply (two sockets): the REST line stays until the reply says aborted."""
    routes = Routes()
    msg_id = submitted(routes)
    routes.kernel_says("status", "iopub", msg_id, execution_state="busy")
    routes.kernel_says("status", "iopub", msg_id, execution_state="idle")
    assert routes.kernel.clients[-1].closed is False
    routes.kernel_says("execute_reply", "shell", msg_id, status="aborted")
    status, _, body = routes.call("GET", f"/api/kernels/{KERNEL}/requests/{msg_id}")
    assert (status, body["status"]) == (200, "aborted")
    assert routes.kernel.clients[-1].closed is True  # the line goes once the reply came


def test_a_running_request_is_never_forgotten_and_a_full_ledger_refuses_503() -> None:
    """With every kept request live, a REST submit is refused 503 and the running one still reads 202."""
    routes = Routes(kept=2)
    first = submitted(routes)
    started(routes, first)
    second = submitted(routes)
    status, _, body = routes.call("POST", f"/api/kernels/{KERNEL}/execute", body={"code": "1"})
    assert status == 503 and "--requests-kept" in body["message"], body
    assert len(routes.kernel.clients[-1].sent) == 2  # the refused one never reached the kernel
    for msg_id in (first, second):
        assert routes.call("GET", f"/api/kernels/{KERNEL}/requests/{msg_id}")[0] == 202
    routes.kernel_replies(first, status="ok", execution_count=1)
    third = submitted(routes)  # the finished one goes to make room
    assert routes.call("GET", f"/api/kernels/{KERNEL}/requests/{first}")[0] == 404
    assert routes.call("GET", f"/api/kernels/{KERNEL}/requests/{third}")[0] == 202


def test_a_request_that_ended_at_its_idle_without_a_reply_lets_the_line_go() -> None:
    """A cancelled request the kernel dropped never gets its reply: the REST line goes REPLY_GRACE after its idle."""
    routes = Routes()
    msg_id = dropped_after_cancel(routes)
    line = routes.kernel.clients[-1]
    routes.clock.advance(REPLY_GRACE - 1)
    assert line.closed is False  # the reply may still come (another socket)
    routes.clock.advance(1)
    assert line.closed is True
    status, _, body = routes.call("GET", f"/api/kernels/{KERNEL}/requests/{msg_id}")
    assert (status, body["status"]) == (200, "aborted")
    again = submitted(routes)  # a new line for the next request
    assert routes.kernel.clients[-1] is not line and again != msg_id


class OtherRelays:
    """The fleet's requests that other relays accepted, as a fake of ``RemoteRequests`` (reads only)."""

    def __init__(self) -> None:
        self.requests: dict[str, Execution] = {}

    def read(self, kernel_id: str, msg_id: str, wait: float = 0) -> Deferred[Execution | None]:
        return succeed(self.requests.get(msg_id))


def test_delete_of_another_relays_request_interrupts_it_if_it_runs_and_refuses_a_queued_one() -> (
    None
):
    """Read from the fleet: a running request is interrupted here (204), a queued one is 409, an ended one 204."""
    fleet = OtherRelays()
    routes = Routes(fleet=fleet)
    queued = Execution(KERNEL, "queued", "", {}, 0.0)
    running = Execution(KERNEL, "running", "", {}, 0.0, state=RUNNING, execution_count=4)
    done = Execution(KERNEL, "done", "", {}, 0.0, state=COMPLETE, status="ok")
    fleet.requests.update({r.msg_id: r for r in (queued, running, done)})
    path = f"/api/kernels/{KERNEL}/requests/"
    status, _, body = routes.call("DELETE", path + "queued")
    assert status == 409 and "queued on the relay" in body["message"], body
    assert routes.call("DELETE", path + "done")[0] == 204
    assert routes.registry.interrupted == []
    assert routes.call("DELETE", path + "running")[0] == 204
    assert routes.registry.interrupted == [KERNEL]
    assert routes.call("DELETE", path + "nope")[0] == 404
    routes.registry.failing = RuntimeError("the owner did not answer")
    status, _, body = routes.call("DELETE", path + "running")
    assert status == 500 and "the owner did not answer" in body["message"]

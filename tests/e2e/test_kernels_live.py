"""The kernels layer against real ipykernel processes, on the real reactor (pytest-twisted)."""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import psutil
import pytest
import pytest_twisted
from jupyter_client.kernelspec import KernelSpecManager
from twisted.internet import reactor
from twisted.internet.defer import DeferredList
from twisted.internet.task import deferLater

from kernel_relay.kernels import (
    InvalidMessage,
    Kernel,
    KernelClient,
    KernelLaunchError,
    KernelMessage,
    KernelRegistry,
    UnknownKernel,
    UnknownKernelSpec,
)

#: Real kernels, through the real registry (no relay process, so the conftest cannot tell by itself).
pytestmark = pytest.mark.e2e

FIXTURES = Path(__file__).resolve().parents[1] / "provisioner"
SITE = str(FIXTURES / "site")
JUPYTER_DIR = str(FIXTURES / "jupyter")


async def sleep(seconds: float) -> None:
    await deferLater(reactor, seconds, lambda: None)


async def wait_until(condition: Callable[[], Any], timeout: float = 10.0, what: str = "") -> Any:
    """Poll ``condition`` on the reactor until it is truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or condition}")
        await sleep(0.02)


def process_gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


class Inbox:
    """Collects the messages a callback receives, for tests to wait on."""

    def __init__(self) -> None:
        self.messages: list[KernelMessage] = []

    def __call__(self, message: KernelMessage) -> None:
        self.messages.append(message)

    def find(self, msg_type: str, parent: str | None = None) -> KernelMessage | None:
        for message in self.messages:
            if message.msg_type == msg_type and (parent is None or message.parent_msg_id == parent):
                return message
        return None

    async def wait(
        self, msg_type: str, parent: str | None = None, timeout: float = 10.0
    ) -> KernelMessage:
        found = await wait_until(lambda: self.find(msg_type, parent), timeout, msg_type)
        assert isinstance(found, KernelMessage)
        return found


class Observer:
    def __init__(self) -> None:
        self.started: list[Kernel] = []
        self.stopped: list[tuple[Kernel, str]] = []

    def kernel_started(self, kernel: Kernel) -> None:
        self.started.append(kernel)

    def kernel_stopped(self, kernel: Kernel, reason: str) -> None:
        self.stopped.append((kernel, reason))

    def reason_for(self, kernel: Kernel) -> str | None:
        return next((reason for k, reason in self.stopped if k is kernel), None)


@pytest.fixture(scope="module")
def spec_manager() -> Any:
    """A KernelSpecManager seeing the test kernelspecs (JUPYTER_PATH) and provisioner (sys.path)."""
    saved_path = os.environ.get("JUPYTER_PATH")
    os.environ["JUPYTER_PATH"] = os.pathsep.join(filter(None, [JUPYTER_DIR, saved_path]))
    sys.path.insert(0, SITE)
    try:
        yield KernelSpecManager()
    finally:
        sys.path.remove(SITE)
        if saved_path is None:
            os.environ.pop("JUPYTER_PATH", None)
        else:
            os.environ["JUPYTER_PATH"] = saved_path


@pytest_twisted.async_yield_fixture(scope="module")
async def registry(
    spec_manager: KernelSpecManager,
) -> AsyncIterator[tuple[KernelRegistry, Observer]]:
    registry = KernelRegistry(
        reactor, kernel_spec_manager=spec_manager, poll_interval=0.2, launch_timeout=30
    )
    observer = Observer()
    registry.add_observer(observer)
    yield registry, observer
    await registry.shutdown_all()


@pytest_twisted.async_yield_fixture(scope="module")
async def shared(registry: tuple[KernelRegistry, Observer]) -> AsyncIterator[Kernel]:
    """One python3 kernel reused by the tests that leave it healthy."""
    kernel = await registry[0].start("python3")
    yield kernel


async def execute(client: KernelClient, code: str, **content: Any) -> str:
    return client.send(
        "shell", {"header": {"msg_type": "execute_request"}, "content": {"code": code, **content}}
    )


@pytest_twisted.ensureDeferred
async def test_specs_lists_installed_and_test_kernelspecs(
    registry: tuple[KernelRegistry, Observer],
) -> None:
    """specs() lists python3 and the test kernelspecs with display names and languages."""
    specs = {spec.name: spec for spec in await registry[0].specs()}
    assert {"python3", "relay-test-provisioned", "relay-test-sleeper"} <= set(specs)
    assert specs["relay-test-provisioned"].display_name == "Python (kernel-relay test provisioner)"
    assert specs["python3"].language == "python"


@pytest_twisted.ensureDeferred
async def test_started_kernel_is_registered_and_reported(
    registry: tuple[KernelRegistry, Observer], shared: Kernel
) -> None:
    """A started kernel has a uuid4 id, is found by get(), listed, and announced to observers."""
    reg, observer = registry
    assert len(shared.id) == 36 and shared.id.count("-") == 4
    assert reg.get(shared.id) is shared
    assert shared in reg.kernels() and shared in list(reg)
    assert shared in observer.started
    assert shared.spec_name == "python3"
    assert shared.connection_file and os.path.exists(shared.connection_file)
    assert shared.session.key == shared.connection_info["key"]


@pytest_twisted.ensureDeferred
async def test_kernel_info_round_trip(shared: Kernel) -> None:
    """kernel_info_request on shell is answered with a verified kernel_info_reply to that client."""
    inbox = Inbox()
    client = shared.open_client(b"info-client", inbox)
    try:
        msg_id = client.send("shell", {"header": {"msg_type": "kernel_info_request"}})
        reply = await inbox.wait("kernel_info_reply", msg_id)
        assert reply.channel == "shell"
        assert reply.content["status"] == "ok"
        assert reply.content["language_info"]["name"] == "python"
        assert isinstance(reply.header["date"], str)
    finally:
        client.close()


@pytest_twisted.ensureDeferred
async def test_execute_result_on_iopub_and_reply_on_shell(shared: Kernel) -> None:
    """Executing 1+1 yields execute_result '2' on iopub and an ok execute_reply on shell."""
    iopub, replies = Inbox(), Inbox()
    shared.add_iopub_listener(iopub)
    client = shared.open_client(b"exec-client", replies)
    try:
        before = shared.last_activity
        msg_id = await execute(client, "1+1")
        result = await iopub.wait("execute_result", msg_id)
        assert result.content["data"]["text/plain"] == "2"
        reply = await replies.wait("execute_reply", msg_id)
        assert reply.content["status"] == "ok"
        await wait_until(lambda: shared.execution_state == "idle", what="idle state")
        assert shared.last_activity >= before
    finally:
        shared.remove_iopub_listener(iopub)
        client.close()


@pytest_twisted.ensureDeferred
async def test_two_clients_get_only_their_own_replies(shared: Kernel) -> None:
    """With two clients on one kernel, each receives only the replies to its own requests."""
    first, second = Inbox(), Inbox()
    one = shared.open_client(b"client-one", first)
    two = shared.open_client(b"client-two", second)
    try:
        id_one = one.send("shell", {"header": {"msg_type": "kernel_info_request"}})
        id_two = await execute(two, "'two'")
        await first.wait("kernel_info_reply", id_one)
        await second.wait("execute_reply", id_two)
        await sleep(0.3)
        assert {m.parent_msg_id for m in first.messages} == {id_one}
        assert {m.parent_msg_id for m in second.messages} == {id_two}
    finally:
        one.close()
        two.close()


@pytest_twisted.ensureDeferred
async def test_input_request_reaches_only_the_asking_client(shared: Kernel) -> None:
    """input() sends input_request on stdin to the executing client only, and its reply is used."""
    asker, bystander, iopub = Inbox(), Inbox(), Inbox()
    shared.add_iopub_listener(iopub)
    mine = shared.open_client(b"stdin-asker", asker)
    other = shared.open_client(b"stdin-other", bystander)
    try:
        msg_id = await execute(mine, "answer = input('name? '); 'got ' + answer", allow_stdin=True)
        request = await asker.wait("input_request")
        assert request.channel == "stdin"
        assert request.content["prompt"] == "name? "
        mine.send(
            "stdin",
            {
                "header": {"msg_type": "input_reply"},
                "parent_header": request.header,
                "content": {"value": "ada"},
            },
        )
        result = await iopub.wait("execute_result", msg_id)
        assert result.content["data"]["text/plain"] == "'got ada'"
        await asker.wait("execute_reply", msg_id)
        assert bystander.messages == []
    finally:
        shared.remove_iopub_listener(iopub)
        mine.close()
        other.close()


@pytest_twisted.ensureDeferred
async def test_interrupt_request_on_control(shared: Kernel) -> None:
    """A control interrupt_request stops a long-running cell with KeyboardInterrupt."""
    inbox, iopub = Inbox(), Inbox()
    shared.add_iopub_listener(iopub)
    client = shared.open_client(b"interrupter", inbox)
    try:
        # Interrupt once the cell's own output shows it is in user code, not merely announced.
        msg_id = await execute(client, "import time; print('sleeping', flush=True); time.sleep(60)")
        await iopub.wait("stream", msg_id)
        interrupt_id = client.send("control", {"header": {"msg_type": "interrupt_request"}})
        interrupt_reply = await inbox.wait("interrupt_reply", interrupt_id)
        assert interrupt_reply.channel == "control"
        reply = await inbox.wait("execute_reply", msg_id, timeout=15)
        assert reply.content["status"] == "error"
        assert reply.content["ename"] == "KeyboardInterrupt"
    finally:
        shared.remove_iopub_listener(iopub)
        client.close()


ECHO_TARGET = """
from comm import get_comm_manager

def _relay_echo(comm, open_msg):
    @comm.on_msg
    def _echo(msg):
        comm.send(data={"count": len(msg["buffers"])},
                  buffers=[bytes(b)[::-1] for b in msg["buffers"]])

get_comm_manager().register_target("relay-echo", _relay_echo)
"""


@pytest_twisted.ensureDeferred
async def test_buffers_travel_both_ways(shared: Kernel) -> None:
    """Buffers sent with a comm_msg reach the kernel, and its comm_msg with buffers is parsed."""
    inbox, iopub = Inbox(), Inbox()
    shared.add_iopub_listener(iopub)
    client = shared.open_client(b"buffers", inbox)
    try:
        setup = await execute(client, ECHO_TARGET)
        assert (await inbox.wait("execute_reply", setup)).content["status"] == "ok"
        comm = {"comm_id": "c0ffee", "target_name": "relay-echo", "data": {}}
        client.send("shell", {"header": {"msg_type": "comm_open"}, "content": comm})
        sent = client.send(
            "shell",
            {"header": {"msg_type": "comm_msg"}, "content": {"comm_id": "c0ffee", "data": {}}},
            buffers=[b"abc", b"\x00\x01\xff"],
        )
        echo = await iopub.wait("comm_msg", sent)
        assert echo.content["data"] == {"count": 2}
        assert echo.buffers == [b"cba", b"\xff\x01\x00"]
        assert echo.to_dict()["buffers"] == [b"cba", b"\xff\x01\x00"]
    finally:
        shared.remove_iopub_listener(iopub)
        client.close()


@pytest_twisted.ensureDeferred
async def test_invalid_messages_are_refused_and_kernel_stays_usable(shared: Kernel) -> None:
    """InvalidMessage for unusable messages; the same client then still works."""
    inbox = Inbox()
    client = shared.open_client(b"invalid", inbox)
    try:
        for channel, message in [
            ("shell", {"content": {}}),
            ("shell", {"header": {"msg_type": 1}}),
            ("shell", {"header": {"msg_type": "x"}, "content": [1]}),
            ("iopub", {"header": {"msg_type": "x"}}),
            ("shell", "not a message"),
        ]:
            with pytest.raises(InvalidMessage):
                client.send(channel, message)  # type: ignore[arg-type]
        msg_id = client.send("shell", {"header": {"msg_type": "kernel_info_request"}})
        await inbox.wait("kernel_info_reply", msg_id)
        assert shared.rejected_messages == 0
    finally:
        client.close()


@pytest_twisted.ensureDeferred
async def test_kernelspec_provisioner_is_used(registry: tuple[KernelRegistry, Observer]) -> None:
    """A kernelspec naming the test provisioner launches through it (env marker, launch log)."""
    import kernel_relay_test_provisioner as provisioner  # on sys.path via the spec_manager fixture

    reg, _ = registry
    kernel = await reg.start("relay-test-provisioned")
    try:
        assert kernel.id in provisioner.launches
        iopub, inbox = Inbox(), Inbox()
        kernel.add_iopub_listener(iopub)
        client = kernel.open_client(b"provisioned", inbox)
        msg_id = await execute(client, "import os; os.environ.get('KERNEL_RELAY_TEST_PROVISIONER')")
        result = await iopub.wait("execute_result", msg_id)
        assert result.content["data"]["text/plain"] == "'provisioned-by-test'"
    finally:
        await reg.shutdown(kernel.id)


@pytest_twisted.ensureDeferred
async def test_death_by_os_exit_is_detected(registry: tuple[KernelRegistry, Observer]) -> None:
    """A kernel that calls os._exit is reported as died within seconds and fully cleaned up."""
    reg, observer = registry
    kernel = await reg.start("python3")
    client = kernel.open_client(b"suicidal", Inbox())
    await execute(client, "import os; os._exit(7)")
    started = time.monotonic()
    reason = await wait_until(lambda: observer.reason_for(kernel), timeout=5, what="death")
    assert time.monotonic() - started < 3
    assert reason == "died: exit code 7"
    assert kernel.execution_state == "dead"
    assert client.closed
    assert kernel.id not in reg
    with pytest.raises(UnknownKernel):
        reg.get(kernel.id)
    assert kernel.connection_file and not os.path.exists(kernel.connection_file)


@pytest_twisted.ensureDeferred
async def test_death_by_sigkill_is_detected(spec_manager: KernelSpecManager) -> None:
    """A SIGKILLed kernel, alone in its registry, is reported as died (signal 9) within seconds."""
    reg = KernelRegistry(reactor, kernel_spec_manager=spec_manager, poll_interval=0.2)
    observer = Observer()
    reg.add_observer(observer)
    kernel = await reg.start("python3")
    assert kernel.pid is not None
    os.kill(kernel.pid, signal.SIGKILL)
    reason = await wait_until(lambda: observer.reason_for(kernel), timeout=5, what="death")
    assert reason == "died: killed by signal 9"
    assert kernel.id not in reg
    assert kernel.connection_file and not os.path.exists(kernel.connection_file)
    with pytest.raises(UnknownKernel):
        await reg.shutdown(kernel.id)
    await reg.shutdown_all()


@pytest_twisted.ensureDeferred
async def test_shutdown_stops_process_and_removes_connection_file(
    registry: tuple[KernelRegistry, Observer],
) -> None:
    """shutdown() ends the process, removes the connection file and tells observers once."""
    reg, observer = registry
    kernel = await reg.start("python3")
    assert kernel.pid is not None and not process_gone(kernel.pid)
    first, second = reg.shutdown(kernel.id), reg.shutdown(kernel.id)
    await first
    await second
    assert process_gone(kernel.pid)
    assert kernel.connection_file and not os.path.exists(kernel.connection_file)
    assert kernel.id not in reg
    assert observer.reason_for(kernel) == "shutdown"
    assert [k for k, _ in observer.stopped].count(kernel) == 1
    assert kernel.execution_state == "dead"


@pytest_twisted.ensureDeferred
async def test_unknown_spec_and_unknown_id(registry: tuple[KernelRegistry, Observer]) -> None:
    """An unknown kernelspec fails start(); unknown ids fail get() and shutdown()."""
    reg, _ = registry
    with pytest.raises(UnknownKernelSpec, match="no-such-kernel"):
        await reg.start("no-such-kernel")
    for name in ["", "../python3", "python3\x00", "x" * 5000]:
        with pytest.raises(UnknownKernelSpec) as raised:
            await reg.start(name)
        assert len(str(raised.value)) < 120  # a long name is cut short in the error (and the log)
    with pytest.raises(UnknownKernel):
        reg.get("not-a-kernel")
    with pytest.raises(UnknownKernel):
        await reg.shutdown("not-a-kernel")


def sleeper_processes() -> list[psutil.Process]:
    found = []
    for child in psutil.Process().children(recursive=True):
        try:
            if "time.sleep(600)" in " ".join(child.cmdline()) and child.status() != "zombie":
                found.append(child)
        except psutil.NoSuchProcess:
            pass
    return found


@pytest_twisted.ensureDeferred
async def test_launch_timeout_fails_cleanly_and_kills(spec_manager: KernelSpecManager) -> None:
    """A never-ready kernel fails with KernelLaunchError after the timeout and is killed."""
    reg = KernelRegistry(reactor, kernel_spec_manager=spec_manager, launch_timeout=2)
    started = time.monotonic()
    with pytest.raises(KernelLaunchError, match="did not become ready within 2s"):
        await reg.start("relay-test-sleeper")
    assert time.monotonic() - started < 6
    await wait_until(lambda: not sleeper_processes(), timeout=10, what="sleeper killed")
    assert len(reg) == 0
    await reg.shutdown_all()


@pytest_twisted.ensureDeferred
async def test_kernel_exiting_during_startup_fails_fast(spec_manager: KernelSpecManager) -> None:
    """A kernel process that exits before becoming ready fails start() long before the timeout."""
    reg = KernelRegistry(reactor, kernel_spec_manager=spec_manager, poll_interval=0.2)
    started = time.monotonic()
    with pytest.raises(KernelLaunchError, match="exited during startup"):
        await reg.start("relay-test-crash")
    assert time.monotonic() - started < 10
    await reg.shutdown_all()


def kernel_processes() -> set[int]:
    """Pids of live ipykernel processes started by this test process."""
    found = set()
    for child in psutil.Process().children(recursive=True):
        try:
            if "ipykernel_launcher" in " ".join(child.cmdline()) and child.status() != "zombie":
                found.add(child.pid)
        except psutil.NoSuchProcess:
            pass
    return found


@pytest_twisted.ensureDeferred
async def test_shutdown_all_stops_every_kernel(spec_manager: KernelSpecManager) -> None:
    """shutdown_all() stops several kernels (and one still starting) in parallel without failing."""
    before = kernel_processes()
    reg = KernelRegistry(reactor, kernel_spec_manager=spec_manager)
    observer = Observer()
    reg.add_observer(observer)
    results = await DeferredList([reg.start("python3") for _ in range(3)], fireOnOneErrback=True)
    kernels = [kernel for _, kernel in results]
    starting = reg.start("python3")
    await reg.shutdown_all()
    with pytest.raises(KernelLaunchError, match="stopping"):
        await starting
    assert len(reg) == 0
    for kernel in kernels:
        assert kernel.pid is not None and process_gone(kernel.pid)
        assert kernel.connection_file and not os.path.exists(kernel.connection_file)
        assert observer.reason_for(kernel) == "shutdown"
    assert kernel_processes() <= before

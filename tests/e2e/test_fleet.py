"""
A fleet of two real relays on one real Redis (Debian's redis-server on loopback): any relay serves any kernel,
and a relay's death loses no kernel and no output.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import requests

from kernel_relay.fronts.jupyter_connection import UNREAD_SECONDS
from tests.conftest import Relay
from tests.e2e.test_relay_resume import IopubWatcher, wait
from tests.jupyter_ws import JupyterWS
from tests.kernel_client import RelayKernelClient
from tests.redis_server import RedisServer, redis_server, require_redis

pytestmark = pytest.mark.timeout(240)

TOKEN = "fleet-token-0123456789abcdefghij"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
LEASE = "1.5"

__all__ = ["redis_server"]


def fleet_relay(runtime: Path, url: str, *args: str, env: dict[str, str] | None = None) -> Relay:
    """A relay of the fleet whose Redis database is at ``url`` (each test's fleet has its own)."""
    return Relay(runtime, "--redis", url, "--fleet-lease", LEASE, *args, token=TOKEN, env=env)


def assert_resumed_exactly(
    seen: list[dict[str, Any]], resumed: IopubWatcher, cell: str, lines: int
) -> None:
    """What a client saw before its relay died, and then on another relay: each line once, in order."""
    assert not resumed.gaps, resumed.gaps
    before = "".join(
        m["content"]["text"]
        for m in seen
        if m["header"]["msg_type"] == "stream" and m["parent_header"].get("msg_id") == cell
    )
    assert before + resumed.printed(cell) == "".join(f"{i}\n" for i in range(lines))
    seqs = [int(m["metadata"]["relay_seq"]) for m in seen + resumed.received()]
    assert seqs == sorted(seqs) and len(seqs) == len(set(seqs)), seqs


@pytest.fixture(scope="module")
def fleet(
    redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Relay, Relay]]:
    a = fleet_relay(tmp_path_factory.mktemp("a"), redis_server.url)
    b = fleet_relay(tmp_path_factory.mktemp("b"), redis_server.url)
    try:
        yield a, b
    finally:
        a.stop()
        b.stop()
        show("A", a)
        show("B", b)


def log_lines(relay: Relay) -> list[str]:
    """A relay's log, formatted as text."""
    from twisted.logger import formatEvent

    lines = []
    for line in relay.output().splitlines():
        try:
            lines.append(formatEvent(json.loads(line.lstrip("\x1e"))))
        except ValueError:
            lines.append(line)
    return lines


def show(name: str, relay: Relay, count: int = 60) -> None:
    """Print a relay's last log lines (pytest shows them when a test fails)."""
    print(f"--- {name}", *log_lines(relay)[-count:], sep="\n")


def ids(relay: Relay) -> set[str]:
    return {str(kernel["id"]) for kernel in relay.kernels()}


def kernel_processes(kernel_id: str) -> list[psutil.Process]:
    """Live kernel processes whose command line names this kernel's connection file."""
    found = []
    for process in psutil.process_iter(["cmdline", "status"]):
        argv = process.info["cmdline"] or []
        cmdline = " ".join(argv)
        if (
            f"kernel-{kernel_id}.json" in cmdline
            and not _sandbox_wrapper(argv)
            and process.info["status"] != psutil.STATUS_ZOMBIE
        ):
            found.append(process)
    return found


def _sandbox_wrapper(argv: list[str]) -> bool:
    """bwrap's processes around a sandboxed kernel name its connection file too: only the kernel counts."""
    return bool(argv) and os.path.basename(argv[0]) in ("bwrap", "sh")


@pytest.fixture(autouse=True)
def no_kernel_left(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """A fleet's kernels outlive their relays by design: every test must still leave none running."""
    base = str(tmp_path_factory.getbasetemp())

    def ours() -> list[psutil.Process]:
        # A sandboxed kernel's copy of its connection file is in its box (see _sandbox.boxes_dir), shared by
        # every relay of the machine: it is ours only if one of this run's relays wrote its connection file
        # (other test runs and benchmarks run at the same time, and their kernels are theirs).
        known.update(path.name for path in Path(base).rglob("kernel-*.json"))
        found = []
        for process in psutil.process_iter(["cmdline", "status"]):
            cmdline = process.info["cmdline"] or []
            joined = " ".join(cmdline)
            boxed = "/kernel-relay/" in joined and any(Path(part).name in known for part in cmdline)
            if (
                "ipykernel_launcher" in joined
                and (base in joined or boxed)
                and not _sandbox_wrapper(cmdline)
                and process.info["status"] != psutil.STATUS_ZOMBIE
            ):
                found.append(process)
        return found

    known: set[str] = set()
    watching = threading.Event()

    def watch() -> None:
        # A relay removes its connection files as it stops: the names are gathered while the test runs.
        while not watching.wait(0.5):
            known.update(path.name for path in Path(base).rglob("kernel-*.json"))

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    before = {process.pid for process in ours()}
    try:
        yield
    finally:
        watching.set()
        watcher.join()
    deadline = time.monotonic() + 15
    left = [p for p in ours() if p.pid not in before]
    while left and time.monotonic() < deadline:
        time.sleep(0.2)
        left = [p for p in ours() if p.pid not in before]
    for process in left:
        process.kill()
    assert not left, f"kernels left running: {[' '.join(p.info['cmdline']) for p in left]}"


def health(relay: Relay) -> dict[str, object]:
    body: dict[str, object] = requests.get(
        f"{relay.url}/api/health", headers=AUTH, timeout=10
    ).json()
    return body


def test_a_kernel_of_one_relay_is_listed_used_and_stopped_through_the_other(
    fleet: tuple[Relay, Relay],
) -> None:
    a, b = fleet
    kernel_id = a.spawn()
    wait(lambda: kernel_id in ids(b), 10, "B to list A's kernel")
    # socket.io on B: a cell's reply and its output; stdin; control.
    client = RelayKernelClient(b.url, kernel_id, auth={"token": TOKEN})
    # Jupyter's WebSocket on A and on B, beside it: each gets its own replies only.
    jupyter_b = JupyterWS(b.url, kernel_id, token=TOKEN)
    jupyter_a = JupyterWS(a.url, kernel_id, token=TOKEN)
    try:
        msg_id, reply = client.execute("print('through B')")
        assert reply["content"]["status"] == "ok"
        assert "through B\n" in "".join(
            m["content"]["text"] for m in client.iopub_for(msg_id, "stream")
        )
        asking = client.send(
            "shell",
            "execute_request",
            {"code": "answer = input('who? ')", "allow_stdin": True},
        )
        request = client.wait_for(
            lambda: [
                m for m in client.received["stdin"] if m["parent_header"].get("msg_id") == asking
            ],
            what="input_request on B",
        )[0]
        assert request["content"]["prompt"] == "who? "
        client.send("stdin", "input_reply", {"value": "fleet"})
        assert client.reply_to("shell", asking)["content"]["status"] == "ok"
        info = client.send("control", "kernel_info_request")
        assert client.reply_to("control", info)["content"]["status"] == "ok"

        on_b, b_reply = jupyter_b.execute("print(answer)")
        assert b_reply["content"]["status"] == "ok"
        assert "fleet\n" in "".join(
            m["content"]["text"] for m in jupyter_b.iopub_for(on_b, "stream")
        )
        on_a, a_reply = jupyter_a.execute("print(answer * 2)")
        assert a_reply["content"]["status"] == "ok"
        assert "fleetfleet\n" in "".join(
            m["content"]["text"] for m in jupyter_a.iopub_for(on_a, "stream")
        )
        # Replies went to the asking client only: A's Jupyter client never saw B's reply, and back.
        assert not [
            m
            for m in jupyter_a.received
            if m["parent_header"].get("msg_id") == on_b and m["channel"] == "shell"
        ]
        assert not [
            m
            for m in jupyter_b.received
            if m["parent_header"].get("msg_id") == on_a and m["channel"] == "shell"
        ]
        # Both see the same numbers on iopub: the fleet numbers each message once.
        seq_b = {
            m["header"]["msg_id"]: m["metadata"].get("relay_seq")
            for m in jupyter_b.received
            if m["channel"] == "iopub"
        }
        seq_a = {
            m["header"]["msg_id"]: m["metadata"].get("relay_seq")
            for m in jupyter_a.received
            if m["channel"] == "iopub"
        }
        shared = set(seq_a) & set(seq_b)
        assert shared and all(seq_a[m] == seq_b[m] for m in shared), (seq_a, seq_b)
    finally:
        client.close()
        jupyter_a.close()
        jupyter_b.close()

    # A kernel token made on A opens the kernel on B (read-only: iopub only).
    issued = requests.post(
        f"{a.url}/api/kernels/{kernel_id}/tokens",
        json={"access": "read-only"},
        headers=AUTH,
        timeout=10,
    )
    assert issued.status_code == 201, issued.text
    reader_token = issued.json()["token"]
    reader = None

    def joined() -> bool:
        nonlocal reader
        try:
            reader = IopubWatcher(b.url, kernel_id, auth={"token": reader_token})
        except Exception as error:
            print("joining B with A's token:", error)
            return False
        return True

    wait(joined, 10, "B to honour A's kernel token")
    assert reader is not None
    reader.close()

    # Interrupt and restart through B.
    assert (
        requests.post(
            f"{b.url}/api/kernels/{kernel_id}/interrupt", headers=AUTH, timeout=30
        ).status_code
        == 204
    )
    restarted = requests.post(f"{b.url}/api/kernels/{kernel_id}/restart", headers=AUTH, timeout=90)
    assert restarted.status_code == 200, restarted.text
    # Shut down through B: gone from both, and its process too.
    stopped = requests.delete(f"{b.url}/api/kernels/{kernel_id}", headers=AUTH, timeout=60)
    assert stopped.status_code == 204, stopped.text
    assert kernel_id not in ids(b)
    wait(lambda: kernel_id not in ids(a), 10, "A to forget the kernel")
    wait(lambda: not kernel_processes(kernel_id), 15, "the kernel process to exit")


def test_a_relay_that_dies_loses_no_kernel_and_no_output(
    redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """A is SIGKILLed while a cell prints every 0.1 s; B adopts the kernel, and an iopub client that
    resumes on B with its last relay_seq gets every line exactly once, in order, with no gap."""
    a = fleet_relay(tmp_path_factory.mktemp("a"), redis_server.database(1))
    b = fleet_relay(tmp_path_factory.mktemp("b"), redis_server.database(1))
    watcher = resumed = None
    try:
        kernel_id = a.spawn()
        wait(lambda: kernel_id in ids(b), 10, "B to list A's kernel")
        [process] = kernel_processes(kernel_id)
        watcher = IopubWatcher(a.url, kernel_id, auth={"token": TOKEN})
        runner = RelayKernelClient(a.url, kernel_id, channels=("shell",), auth={"token": TOKEN})
        lines = 80
        cell = runner.send(
            "shell",
            "execute_request",
            {
                "code": f"import time\nfor i in range({lines}):\n    print(i, flush=True)\n    time.sleep(0.1)"
            },
        )
        wait(lambda: "10\n" in watcher.printed(cell), 30, "the cell to print on A")
        os.kill(a.process.pid, signal.SIGKILL)
        a.process.wait()
        seen = watcher.received()
        last = max(int(m["metadata"]["relay_seq"]) for m in seen)
        assert process.is_running(), "the kernel died with its relay"

        resumed = IopubWatcher(b.url, kernel_id, auth={"token": TOKEN, "since": last})
        wait(lambda: f"{lines - 1}\n" in resumed.printed(cell), 60, "the rest of the cell on B")
        assert_resumed_exactly(seen, resumed, cell, lines)

        # B adopted the kernel: it manages it now (restart works, which needs its process).
        wait(lambda: health(b)["fleet"]["owned_kernels"] == 1, 15, "B to adopt the kernel")  # type: ignore[index]
        restarted = requests.post(
            f"{b.url}/api/kernels/{kernel_id}/restart", headers=AUTH, timeout=90
        )
        assert restarted.status_code == 200, restarted.text
        stopped = requests.delete(f"{b.url}/api/kernels/{kernel_id}", headers=AUTH, timeout=60)
        assert stopped.status_code == 204, stopped.text
        wait(lambda: not kernel_processes(kernel_id), 15, "the kernel process to exit")
    finally:
        for client in (watcher, resumed):
            if client is not None:
                try:
                    client.close()
                except Exception:
                    pass
        a.stop()
        b.stop()
        show("A", a)
        show("B", b)
    assert not kernel_processes(kernel_id)


def test_redis_stopped_and_restarted_under_load(tmp_path_factory: pytest.TempPathFactory) -> None:
    """While Redis is away both relays keep serving their clients and a spawn fails clearly; once it is
    back (empty) the relays register their kernels again and spawn works."""
    require_redis()
    redis = RedisServer(tmp_path_factory.mktemp("redis"))
    a = fleet_relay(tmp_path_factory.mktemp("a"), redis.url)
    b = fleet_relay(tmp_path_factory.mktemp("b"), redis.url)
    client = None
    try:
        kernel_id = a.spawn()
        wait(lambda: kernel_id in ids(b), 10, "B to list A's kernel")
        client = RelayKernelClient(b.url, kernel_id, auth={"token": TOKEN})
        cell = client.send(
            "shell",
            "execute_request",
            {
                "code": "import time\nfor i in range(60):\n    print(i, flush=True)\n    time.sleep(0.05)"
            },
        )
        wait(
            lambda: any(
                "5\n" in m["content"].get("text", "") for m in client.iopub_for(cell, "stream")
            ),
            30,
            "output",
        )
        redis.stop()
        wait(lambda: health(a)["fleet"]["redis_up"] is False, 15, "A to notice Redis is gone")  # type: ignore[index]
        spawn = requests.post(
            f"{a.url}/api/kernels", json={"name": "python3"}, headers=AUTH, timeout=30
        )
        assert spawn.status_code == 503, spawn.text
        assert "Redis" in spawn.json()["message"]
        client.wait_idle(cell, 60)
        text = "".join(m["content"]["text"] for m in client.iopub_for(cell, "stream"))
        assert text == "".join(f"{i}\n" for i in range(60)), text
        seqs = [int(m["metadata"]["relay_seq"]) for m in client.received["iopub"]]
        assert seqs == sorted(seqs) and len(seqs) == len(set(seqs)), seqs
        # Still usable through B while Redis is away.
        _, reply = client.execute("print('still here')")
        assert reply["content"]["status"] == "ok"

        redis = redis.restart()
        wait(
            lambda: all(health(relay)["fleet"]["redis_up"] is True for relay in (a, b)),  # type: ignore[index]
            20,
            "the relays to reconnect",
        )
        wait(lambda: kernel_id in ids(b), 10, "the kernel to stay listed")
        second = requests.post(
            f"{b.url}/api/kernels", json={"name": "python3"}, headers=AUTH, timeout=90
        )
        assert second.status_code == 201, second.text
        other = second.json()["id"]
        wait(lambda: other in ids(a), 10, "A to list B's new kernel")
        # The fleet's numbers went on past what either relay gave out alone.
        _, reply = client.execute("print('after')")
        assert reply["content"]["status"] == "ok"
        later = [int(m["metadata"]["relay_seq"]) for m in client.received["iopub"]]
        assert later == sorted(later) and len(later) == len(set(later))
        for kernel in (kernel_id, other):
            assert (
                requests.delete(
                    f"{a.url}/api/kernels/{kernel}", headers=AUTH, timeout=60
                ).status_code
                == 204
            )
    finally:
        if client is not None:
            print("client errors", client.errors, "disconnected", client.disconnected)
            client.close()
        a.stop()
        b.stop()
        redis.stop()
        show("A", a)
        show("B", b)


def test_a_relay_without_redis_fails_clearly_at_spawn_and_keeps_serving(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """A relay whose Redis never answers starts, serves its routes, and refuses spawns with a clear error."""
    from tests.support import free_port

    nobody = f"redis://127.0.0.1:{free_port()}/0"
    relay = fleet_relay(tmp_path_factory.mktemp("lonely"), nobody)
    try:
        assert health(relay)["fleet"]["redis_up"] is False  # type: ignore[index]
        spawn = requests.get(f"{relay.url}/spawn/python3", headers=AUTH, timeout=30)
        assert spawn.status_code == 500
        assert "Redis" in spawn.json()["error"], spawn.text
        assert requests.get(f"{relay.url}/api/kernels", headers=AUTH, timeout=10).json() == []
    finally:
        relay.stop()


def test_a_client_resumes_on_a_relay_that_joined_later(
    redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """B starts after the cell ran on A: a client resuming on B from an early relay_seq gets the rest from
    the fleet's stream in Redis, exactly once and in order."""
    url = redis_server.database(2)
    a = fleet_relay(tmp_path_factory.mktemp("a"), url)
    b = None
    watcher = resumed = None
    try:
        kernel_id = a.spawn()
        watcher = IopubWatcher(a.url, kernel_id, auth={"token": TOKEN})
        runner = RelayKernelClient(a.url, kernel_id, channels=("shell",), auth={"token": TOKEN})
        cell = runner.send(
            "shell", "execute_request", {"code": "for i in range(20):\n    print(i, flush=True)"}
        )
        wait(lambda: "19\n" in watcher.printed(cell), 30, "the cell on A")
        runner.close()
        seen = watcher.received()
        early = next(m for m in seen if m["header"]["msg_type"] == "stream")
        since = int(early["metadata"]["relay_seq"])
        b = fleet_relay(tmp_path_factory.mktemp("b"), url)
        wait(lambda: kernel_id in ids(b), 10, "B to serve A's kernel")
        resumed = IopubWatcher(b.url, kernel_id, auth={"token": TOKEN, "since": since})
        wait(lambda: "19\n" in resumed.printed(cell), 30, "the rest of the cell on B")
        assert not resumed.gaps, resumed.gaps
        assert early["content"]["text"] + resumed.printed(cell) == "".join(
            f"{i}\n" for i in range(20)
        )
        got = [int(m["metadata"]["relay_seq"]) for m in resumed.received()]
        expected = [
            int(m["metadata"]["relay_seq"]) for m in seen if int(m["metadata"]["relay_seq"]) > since
        ]
        assert got[: len(expected)] == expected
        assert (
            requests.delete(
                f"{b.url}/api/kernels/{kernel_id}", headers=AUTH, timeout=60
            ).status_code
            == 204
        )
    finally:
        for client in (watcher, resumed):
            if client is not None:
                client.close()
        a.stop()
        if b is not None:
            b.stop()
            show("B", b)


def test_a_jupyter_session_resumes_on_another_relay(fleet: tuple[Relay, Relay]) -> None:
    """A Jupyter client that leaves A mid-cell and comes back to B with its session_id gets the rest of the
    cell's output in order, at most its last quarter second again (it sends no since, and acknowledges nothing:
    B learns where it stopped from the fleet)."""
    a, b = fleet
    kernel_id = a.spawn()
    wait(lambda: kernel_id in ids(b), 10, "B to list A's kernel")
    first = JupyterWS(a.url, kernel_id, token=TOKEN)
    second = None
    try:
        cell = first.send(
            "shell",
            "execute_request",
            {
                "code": "import time\nfor i in range(40):\n    print(i, flush=True)\n    time.sleep(0.05)"
            },
        )
        first.wait_for(
            lambda m: (
                m["channel"] == "iopub"
                and m["header"]["msg_type"] == "stream"
                and "10\n" in m["content"]["text"]
            )
        )
        first.close()
        time.sleep(0.6)
        before = "".join(m["content"]["text"] for m in first.iopub_for(cell, "stream"))
        second = JupyterWS(b.url, kernel_id, token=TOKEN, session_id=first.session_id)
        second.idle_after(cell)
        after = "".join(m["content"]["text"] for m in second.iopub_for(cell, "stream"))
        read, rest = before.splitlines(), after.splitlines()
        again = [line for line in rest if line in read]
        assert rest[: len(again)] == again and len(again) <= UNREAD_SECONDS / 0.05 + 1, (read, rest)
        assert read + rest[len(again) :] == [str(i) for i in range(40)], (before, after)
        for client in (first, second):
            seqs = [
                int(m["metadata"]["relay_seq"])
                for m in client.received
                if m["channel"] == "iopub"
                and "relay_seq" in m["metadata"]
                and "kernel_relay"
                not in m["metadata"]  # the state told on joining repeats its since
            ]
            assert seqs == sorted(seqs) and len(seqs) == len(set(seqs)), seqs
    finally:
        first.close()
        if second is not None:
            second.close()
        requests.delete(f"{a.url}/api/kernels/{kernel_id}", headers=AUTH, timeout=60)


def test_a_kernel_restarted_then_orphaned_is_still_adopted(
    redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """A restart runs a new process: the fleet's record follows it, so the kernel's adopter finds it; and a
    restart by the adopter keeps the env the kernel was started with."""
    url = redis_server.database(3)
    a = fleet_relay(tmp_path_factory.mktemp("a"), url)
    b = fleet_relay(tmp_path_factory.mktemp("b"), url)
    try:
        started = requests.post(
            f"{a.url}/api/kernels",
            json={"name": "python3", "env": {"KERNEL_FLEET_MARK": "kept"}},
            headers=AUTH,
            timeout=90,
        )
        assert started.status_code == 201, started.text
        kernel_id = started.json()["id"]
        wait(lambda: kernel_id in ids(b), 10, "B to list A's kernel")
        restarted = requests.post(
            f"{a.url}/api/kernels/{kernel_id}/restart", headers=AUTH, timeout=90
        )
        assert restarted.status_code == 200, restarted.text
        [process] = kernel_processes(kernel_id)
        time.sleep(0.5)  # the record is written once the new process runs
        os.kill(a.process.pid, signal.SIGKILL)
        a.process.wait()
        wait(lambda: health(b)["fleet"]["owned_kernels"] == 1, 15, "B to adopt the kernel")  # type: ignore[index]
        assert process.is_running()
        client = RelayKernelClient(b.url, kernel_id, auth={"token": TOKEN})
        try:
            _, reply = client.execute("print('adopted after a restart')")
            assert reply["content"]["status"] == "ok"
            again = requests.post(
                f"{b.url}/api/kernels/{kernel_id}/restart", headers=AUTH, timeout=90
            )
            assert again.status_code == 200, again.text
            msg_id, reply = client.execute("import os; print(os.environ.get('KERNEL_FLEET_MARK'))")
            assert "kept\n" in "".join(
                m["content"]["text"] for m in client.iopub_for(msg_id, "stream")
            )
        finally:
            client.close()
        assert (
            requests.delete(
                f"{b.url}/api/kernels/{kernel_id}", headers=AUTH, timeout=60
            ).status_code
            == 204
        )
        wait(lambda: not kernel_processes(kernel_id), 15, "the kernel process to exit")
    finally:
        a.stop()
        b.stop()
        show("A", a)
        show("B", b)


def test_a_relay_that_stops_cleanly_hands_its_kernels_over(
    redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """SIGTERM to A while B runs: A's kernel lives on, B manages it at once, its clients on B carry on."""
    url = redis_server.database(4)
    a = fleet_relay(tmp_path_factory.mktemp("a"), url)
    b = fleet_relay(tmp_path_factory.mktemp("b"), url)
    client = None
    try:
        kernel_id = a.spawn()
        wait(lambda: kernel_id in ids(b), 10, "B to list A's kernel")
        [process] = kernel_processes(kernel_id)
        client = RelayKernelClient(b.url, kernel_id, auth={"token": TOKEN})
        _, reply = client.execute("x = 42")
        assert reply["content"]["status"] == "ok"
        a.stop()
        assert any("leaving 1 kernel(s) running" in line for line in log_lines(a)), log_lines(a)[
            -10:
        ]
        assert process.is_running(), "A stopped its kernel instead of handing it over"
        wait(lambda: health(b)["fleet"]["owned_kernels"] == 1, 10, "B to adopt the kernel")  # type: ignore[index]
        msg_id, reply = client.execute("print(x)")
        assert reply["content"]["status"] == "ok"
        assert "42\n" in "".join(m["content"]["text"] for m in client.iopub_for(msg_id, "stream"))
        assert not client.disconnected
    finally:
        if client is not None:
            client.close()
        a.stop()
        b.stop()  # the last relay: it shuts the kernel down (the autouse check sees it gone)
        show("A", a)
        show("B", b)

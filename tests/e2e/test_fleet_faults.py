"""
A fleet under faults (issue 30), with real relays, kernels and Redis: relays that start together, Redis
that restarts empty, a relay frozen past its lease, and kernels that flood.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
import requests

from kernel_relay.fronts.jupyter_connection import UNREAD_SECONDS
from tests.conftest import Relay
from tests.e2e.test_fleet import AUTH, TOKEN, ids, kernel_processes, no_kernel_left, show
from tests.e2e.test_relay_resume import IopubWatcher, wait
from tests.jupyter_ws import JupyterWS
from tests.redis_server import RedisServer, redis_command, redis_server, require_redis

pytestmark = pytest.mark.timeout(240)

__all__ = ["no_kernel_left", "redis_server"]


def relay(runtime: Path, url: str, lease: str, *args: str) -> Relay:
    return Relay(runtime, "--redis", url, "--fleet-lease", lease, *args, token=TOKEN)


def assert_runs_on(server: Relay, kernel_id: str) -> None:
    """A Jupyter client of ``server`` runs ``1 + 1`` on the kernel: it is served there."""
    client = JupyterWS(server.url, kernel_id, token=TOKEN)
    try:
        _, reply = client.execute("1 + 1")
        assert reply["content"]["status"] == "ok"
    finally:
        client.close()


def test_a_kernel_spawned_on_a_relay_that_just_started_is_usable_at_once_on_another(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    """Two relays started together (a long lease: a sync every 3 s): a kernel spawned on A at once is usable on B."""
    url = redis_server.database(14)
    a = relay(tmp_path / "a", url, "9")
    b = relay(tmp_path / "b", url, "9")
    try:
        ready_a = requests.get(f"{a.url}/api/health/ready", timeout=10)
        kernel_id = a.spawn()
        # Once the spawn answers, B serves the kernel: no "no running kernel has that id".
        assert_runs_on(b, kernel_id)
        assert kernel_id in ids(b)
        assert requests.get(f"{b.url}/api/health/ready", timeout=10).status_code == 200
        # Nobody took A's kernel over: A joined before it spawned, so its lease was there.
        fleet_b = requests.get(f"{b.url}/api/health", headers=AUTH, timeout=10).json()["fleet"]
        assert fleet_b["adopted"] == 0 and fleet_b["owned_kernels"] == 0
        assert ready_a.status_code in (200, 503)
        assert a.shutdown(kernel_id).status_code == 200
    finally:
        a.stop()
        b.stop()
        show("A", a)
        show("B", b)


def test_readiness_is_503_until_the_relay_has_joined(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    """A fleet relay whose Redis does not answer is not ready (503, health says so) and starts no kernel."""
    nowhere = "redis://127.0.0.1:1/0"
    a = relay(tmp_path / "a", nowhere, "3")
    try:
        ready = requests.get(f"{a.url}/api/health/ready", timeout=10)
        assert ready.status_code == 503 and ready.json() == {"ready": False}
        anonymous = requests.get(f"{a.url}/api/health", timeout=10).json()
        assert anonymous == {"status": "starting", "ready": False}
        started = time.monotonic()
        refused = requests.get(f"{a.url}/spawn/python3", headers=AUTH, timeout=30)
        assert refused.status_code == 500 and "has not joined its fleet" in refused.text
        assert time.monotonic() - started < 25
        assert not a.connection_files()
    finally:
        a.stop()


def joined(*relays: Relay) -> None:
    """Wait until each relay sees Redis and every other relay (before readiness existed, the only way)."""

    def sees_all(r: Relay) -> bool:
        body = requests.get(f"{r.url}/api/health", headers=AUTH, timeout=10).json()
        fleet = body.get("fleet", {})
        return bool(fleet.get("redis_up")) and fleet.get("relays") == len(relays)

    for r in relays:
        wait(lambda r=r: sees_all(r), 30, "the relays to join")


def told_dead(watcher: IopubWatcher) -> bool:
    """Whether the watcher was told its kernel is dead (a dead status, or let go)."""
    dead = [
        m
        for m in watcher.received()
        if m["header"]["msg_type"] == "status" and m["content"]["execution_state"] == "dead"
    ]
    return bool(dead) or not watcher.sio.connected


def owned(relay: Relay) -> int:
    fleet = requests.get(f"{relay.url}/api/health", headers=AUTH, timeout=10).json()["fleet"]
    return int(fleet["owned_kernels"])


def test_a_kernel_whose_relay_is_killed_as_redis_restarts_empty_is_adopted_not_orphaned(
    tmp_path: Path,
) -> None:
    """A is SIGKILLed and Redis restarts empty at once: B puts A's kernel back, adopts it, and stops it at its end."""
    require_redis()
    redis = RedisServer(tmp_path / "redis")
    a = relay(tmp_path / "a", redis.url, "1.5")
    b = relay(tmp_path / "b", redis.url, "1.5")
    watcher = None
    try:
        joined(a, b)
        kernel_id = a.spawn()
        wait(lambda: kernel_id in ids(b), 10, "B to serve A's kernel")
        [process] = kernel_processes(kernel_id)
        watcher = IopubWatcher(b.url, kernel_id, auth={"token": TOKEN})
        os.kill(a.process.pid, signal.SIGKILL)
        a.process.wait()
        redis = redis.restart()
        wait(lambda: owned(b) == 1, 30, "B to adopt A's kernel")
        assert_runs_on(b, kernel_id)
        # Its clients were never told that the live kernel shut down.
        assert process.is_running()
        assert not told_dead(watcher)
    finally:
        if watcher is not None:
            watcher.close()
        a.stop()
        b.stop()
        redis.stop()
        show("A", a)
        show("B", b)
    # The last relay to stop stopped it.
    wait(lambda: not kernel_processes(kernel_id), 15, "the kernel to be stopped")


def test_a_frozen_owner_during_a_redis_restart_is_no_death(tmp_path: Path) -> None:
    """A is SIGSTOPped, Redis restarts empty, A continues: B's clients are never told the live kernel died."""
    require_redis()
    redis = RedisServer(tmp_path / "redis")
    a = relay(tmp_path / "a", redis.url, "1.5")
    b = relay(tmp_path / "b", redis.url, "1.5")
    watcher = None
    try:
        joined(a, b)
        kernel_id = a.spawn()
        wait(lambda: kernel_id in ids(b), 10, "B to serve A's kernel")
        [process] = kernel_processes(kernel_id)
        watcher = IopubWatcher(b.url, kernel_id, auth={"token": TOKEN})
        os.kill(a.process.pid, signal.SIGSTOP)
        try:
            redis = redis.restart()
            time.sleep(6)  # four leases: a relay that drops missing guests has done it by now
        finally:
            os.kill(a.process.pid, signal.SIGCONT)
        time.sleep(3)
        assert kernel_id in ids(b) and process.is_running()
        assert not told_dead(watcher)
        assert_runs_on(b, kernel_id)
        assert owned(a) + owned(b) == 1
    finally:
        if watcher is not None:
            watcher.close()
        a.stop()
        b.stop()
        redis.stop()
        show("A", a)
        show("B", b)
    wait(lambda: not kernel_processes(kernel_id), 15, "the kernel to be stopped")


def test_the_last_relay_to_stop_stops_the_kernels_of_a_relay_killed_a_moment_before(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    """A is SIGKILLed, B is stopped while A's lease still runs: B takes A's kernel over and stops it."""
    url = redis_server.database(13)
    a = relay(tmp_path / "a", url, "20")
    b = relay(tmp_path / "b", url, "20")
    try:
        joined(a, b)
        kernel_id = a.spawn()
        wait(lambda: kernel_id in ids(b), 10, "B to serve A's kernel")
        os.kill(a.process.pid, signal.SIGKILL)
        a.process.wait()
        b.stop()
        assert "leaving 1 kernel(s) running" not in b.output()
    finally:
        a.stop()
        b.stop()
        show("A", a)
        show("B", b)
    wait(lambda: not kernel_processes(kernel_id), 15, "the kernel to be stopped")


def test_one_kernels_flood_does_not_stall_another_kernel(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    """Kernel A floods 50,000 messages through a fleet relay: `1 + 1` on kernel B is answered before A's flood is through."""
    r = relay(tmp_path / "r", redis_server.database(12), "3")
    flood = quiet = watcher = None
    try:
        joined(r)
        a_id, b_id = r.spawn(), r.spawn()
        watcher = IopubWatcher(r.url, a_id, auth={"token": TOKEN})
        flood = JupyterWS(r.url, a_id, token=TOKEN)
        quiet = JupyterWS(r.url, b_id, token=TOKEN)
        cell = flood.send(
            "shell",
            "execute_request",
            {"code": "for i in range(50_000):\n    print(i, flush=True)", "silent": False},
        )
        wait(lambda: "1000\n" in watcher.printed(cell), 60, "A's flood to begin")
        began = time.monotonic()
        asked = quiet.send("shell", "execute_request", {"code": "1 + 1", "silent": False})
        result = quiet.wait_for(
            lambda m: (
                m["header"]["msg_type"] == "execute_result"
                and m["parent_header"].get("msg_id") == asked
            ),
            120,
        )
        took = time.monotonic() - began
        flooded = watcher.printed(cell)
        print(f"1 + 1 on B answered in {took:.3f}s; A's client had {flooded.count(chr(10))} lines")
        assert result["content"]["data"]["text/plain"] == "2"
        assert "49999\n" not in flooded, "B's answer waited for A's whole flood"
    finally:
        for client in (flood, quiet, watcher):
            if client is not None:
                try:
                    client.close()
                except Exception:
                    pass
        r.stop()


def test_a_relay_frozen_longer_than_any_dedupe_life_gives_no_message_a_second_number(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    """B is SIGSTOPped for 35 s while A's kernel prints: once B goes on, each message has one number on A and B."""
    url = redis_server.database(11)
    a = relay(tmp_path / "a", url, "3")
    b = relay(tmp_path / "b", url, "3")
    on_a = on_b = None
    try:
        joined(a, b)
        kernel_id = a.spawn()
        wait(lambda: kernel_id in ids(b), 10, "B to serve A's kernel")
        on_a = IopubWatcher(a.url, kernel_id, auth={"token": TOKEN})
        on_b = IopubWatcher(b.url, kernel_id, auth={"token": TOKEN})
        runner = JupyterWS(a.url, kernel_id, token=TOKEN)
        cell = runner.send(
            "shell",
            "execute_request",
            {
                "code": "import time\nfor i in range(900):\n    print(i, flush=True)\n    time.sleep(0.05)",
                "silent": False,
            },
        )
        wait(lambda: "20\n" in on_b.printed(cell), 30, "the cell to print on B")
        os.kill(b.process.pid, signal.SIGSTOP)
        try:
            time.sleep(35)
        finally:
            os.kill(b.process.pid, signal.SIGCONT)
        wait(lambda: "899\n" in on_a.printed(cell), 60, "the cell to end")
        time.sleep(3)
        runner.close()
        numbers: dict[str, set[int]] = {}
        for watcher in (on_a, on_b):
            for m in watcher.received():
                numbers.setdefault(m["header"]["msg_id"], set()).add(
                    int(m["metadata"]["relay_seq"])
                )
        twice = {msg: seqs for msg, seqs in numbers.items() if len(seqs) > 1}
        assert not twice, f"{len(twice)} messages with two numbers"
        owners: dict[int, set[str]] = {}
        for msg, seqs in numbers.items():
            for seq in seqs:
                owners.setdefault(seq, set()).add(msg)
        status = {
            m["header"]["msg_id"]
            for w in (on_a, on_b)
            for m in w.received()
            if m["header"]["msg_type"] == "status"
        }
        shared = {seq: msgs - status for seq, msgs in owners.items() if len(msgs - status) > 1}
        assert not shared, f"{len(shared)} numbers given to two messages"
        # The fleet's stream, which clients that resume anywhere read: each message once.
        entries = redis_command(
            redis_server.port, 11, "XRANGE", f"kernel-relay:journal:{kernel_id}", "-", "+"
        )
        assert isinstance(entries, list)
        # Each entry's msg_id is in clear beside its sealed message.
        in_stream = [fields[fields.index(b"i") + 1] for _, fields in entries]
        repeated = len(in_stream) - len(set(in_stream))
        assert repeated == 0, f"{repeated} extra copies in the fleet's stream"
        ids_a = [m["header"]["msg_id"] for m in on_a.received()]
        assert len(ids_a) == len(set(ids_a)), "A's client got repeats"
    finally:
        for client in (on_a, on_b):
            if client is not None:
                try:
                    client.close()
                except Exception:
                    pass
        a.stop()
        b.stop()
        show("A", a)
        show("B", b)


def test_a_jupyter_session_that_goes_a_b_a_gets_nothing_twice(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    """A session reads on A, then on B, then on A again (clean closes): A resumes from B's newer position."""
    url = redis_server.database(10)
    a = relay(tmp_path / "a", url, "3")
    b = relay(tmp_path / "b", url, "3")
    try:
        joined(a, b)
        kernel_id = a.spawn()
        wait(lambda: kernel_id in ids(b), 10, "B to serve A's kernel")
        cells = []
        for r in (a, b):
            client = JupyterWS(r.url, kernel_id, token=TOKEN, session_id="the-session")
            cells.append(client.execute("for i in range(20): print(i, flush=True)")[0])
            time.sleep(
                2 * UNREAD_SECONDS
            )  # read for sure: what came just before a close comes again
            client.close()
            time.sleep(1.5)  # more than the share interval: its position is in Redis
        again = JupyterWS(a.url, kernel_id, token=TOKEN, session_id="the-session")
        try:
            while again.recv(3) is not None:
                pass
            repeated = [m for m in again.received if m["parent_header"].get("msg_id") in cells]
            assert not repeated, f"{len(repeated)} messages sent again"
        finally:
            again.close()
        assert a.shutdown(kernel_id).status_code == 200
    finally:
        a.stop()
        b.stop()
        show("A", a)
        show("B", b)


def test_a_jupyter_position_survives_a_redis_restart(tmp_path: Path) -> None:
    """A session reads on A and leaves; output comes; Redis restarts empty; the session on B gets what it missed."""
    require_redis()
    redis = RedisServer(tmp_path / "redis")
    a = relay(tmp_path / "a", redis.url, "1.5")
    b = relay(tmp_path / "b", redis.url, "1.5")
    try:
        joined(a, b)
        kernel_id = a.spawn()
        wait(lambda: kernel_id in ids(b), 10, "B to serve A's kernel")
        client = JupyterWS(a.url, kernel_id, token=TOKEN, session_id="the-session")
        cell = client.execute("for i in range(20): print(i, flush=True)")[0]
        time.sleep(2 * UNREAD_SECONDS)  # read for sure: what came just before a close comes again
        client.close()
        time.sleep(1.5)
        other = JupyterWS(a.url, kernel_id, token=TOKEN)
        missed = other.execute("print('while away', flush=True)")[0]
        other.close()
        redis = redis.restart()
        joined(a, b)
        wait(lambda: kernel_id in ids(b), 20, "the kernel registered again")
        time.sleep(1.5)  # a sync: the marks are saved again
        again = JupyterWS(b.url, kernel_id, token=TOKEN, session_id="the-session")
        try:
            while again.recv(3) is not None:
                pass
            repeated = [m for m in again.received if m["parent_header"].get("msg_id") == cell]
            assert not repeated, f"{len(repeated)} messages sent again"
            got = "".join(
                m["content"]["text"]
                for m in again.received
                if m["parent_header"].get("msg_id") == missed
                and m["header"]["msg_type"] == "stream"
            )
            assert got == "while away\n", "the output made while it was away was lost"
        finally:
            again.close()
        assert a.shutdown(kernel_id).status_code == 200
    finally:
        a.stop()
        b.stop()
        redis.stop()
        show("A", a)
        show("B", b)

"""
A fleet's relay dies while its kernel runs on "another host" (the ``kernel-relay-ssh`` provisioner, a real sshd
on 127.0.0.2): the remote kernel lives on, another relay of the fleet adopts it over ssh from its record, its
clients resume there without losing or repeating output, and the adopter interrupts, restarts and stops it,
leaving nothing behind here or on the host.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

import psutil
import pytest
import requests

from tests.conftest import Relay
from tests.e2e.test_fleet import (
    AUTH,
    TOKEN,
    assert_resumed_exactly,
    fleet_relay,
    health,
    ids,
    no_kernel_left,
    show,
)
from tests.e2e.test_relay_resume import IopubWatcher, wait
from tests.e2e.test_ssh_provisioner import (
    PORTS,
    SPEC,
    assert_nothing_left,
    listening_ports,
    local_connection_info,
    processes_of,
    remote_dir,
    remote_kernel,
    sshd,
    write_spec,
)
from tests.kernel_client import RelayKernelClient
from tests.redis_server import RedisServer, redis_server
from tests.sshd import HOST, SSHServer

pytestmark = pytest.mark.timeout(120)

__all__ = ["no_kernel_left", "redis_server", "remote_dir", "sshd"]

#: Lines the cell prints, one every 0.1 s: it still prints for seconds after its relay is killed.
LINES = 60


@pytest.fixture(scope="module")
def jupyter_path(
    tmp_path_factory: pytest.TempPathFactory, sshd: SSHServer, remote_dir: Path
) -> Path:
    root = tmp_path_factory.mktemp("jupyter")
    write_spec(
        root, SPEC, sshd.provisioner_config(python=sys.executable, remote_dir=str(remote_dir))
    )
    return root


def fleet_ssh_relay(runtime: Path, url: str, jupyter_path: Path) -> Relay:
    """A relay of the fleet at ``url`` that knows the ssh kernelspec."""
    return fleet_relay(
        runtime, url, "--kernel-encryption", "auto", env={"JUPYTER_PATH": str(jupyter_path)}
    )


def ports_of(info: dict[str, object]) -> dict[str, object]:
    return {name: info[name] for name in ("ip", *PORTS)}


def close_quietly(*clients: object) -> None:
    for client in clients:
        if client is not None:
            try:
                client.close()  # type: ignore[attr-defined]
            except Exception as error:
                print("closing", client, error)


def test_a_remote_kernel_of_a_killed_relay_is_adopted_and_served_by_another(
    redis_server: RedisServer,
    tmp_path_factory: pytest.TempPathFactory,
    jupyter_path: Path,
    remote_dir: Path,
    sshd: SSHServer,
) -> None:
    """A is SIGKILLed while its ssh kernel prints every 0.1 s: the kernel keeps running on the host, B adopts
    it, a client resuming on B with its last relay_seq gets the rest exactly once and in order, and B
    interrupts it, restarts it on the same ports and shuts it down; nothing of it is left anywhere."""
    url = redis_server.database(3)
    a = fleet_ssh_relay(tmp_path_factory.mktemp("a"), url, jupyter_path)
    b = fleet_ssh_relay(tmp_path_factory.mktemp("b"), url, jupyter_path)
    watcher = resumed = runner = client = None
    kernel_id = ""
    try:
        started = time.monotonic()
        kernel_id = a.spawn(SPEC)
        wait(lambda: kernel_id in ids(b), 10, "B to list A's kernel")
        info = local_connection_info(a, kernel_id)
        assert info["ip"] == HOST and info["curve_secretkey"], info
        process = remote_kernel(kernel_id)
        assert process.parent().name() == "sshd"
        assert process.pid not in {p.pid for p in psutil.Process(a.process.pid).children(True)}
        # An independent (untied) kernel: A's ssh session, no watcher on the host.
        names = sorted(p.name() for p in processes_of(kernel_id))
        assert "ssh" in names and "sh" not in names, names
        print(f"spawned in {time.monotonic() - started:.1f}s")

        watcher = IopubWatcher(a.url, kernel_id, auth={"token": TOKEN})
        runner = RelayKernelClient(a.url, kernel_id, channels=("shell",), auth={"token": TOKEN})
        cell = runner.send(
            "shell",
            "execute_request",
            {
                "code": f"import time\nfor i in range({LINES}):\n    print(i, flush=True)\n    time.sleep(0.1)"
            },
        )
        wait(lambda: "10\n" in watcher.printed(cell), 30, "the cell to print on A")
        os.kill(a.process.pid, signal.SIGKILL)
        a.process.wait()
        killed = time.monotonic()
        seen = watcher.received()
        last = max(int(m["metadata"]["relay_seq"]) for m in seen)
        close_quietly(watcher, runner)
        watcher = runner = None
        assert process.is_running(), "the remote kernel died with its relay"

        resumed = IopubWatcher(b.url, kernel_id, auth={"token": TOKEN, "since": last})
        wait(lambda: f"{LINES - 1}\n" in resumed.printed(cell), 30, "the rest of the cell on B")
        assert not resumed.errors, resumed.errors
        assert_resumed_exactly(seen, resumed, cell, LINES)

        # B adopted the kernel (the same remote process, not a new one) and manages it over ssh.
        wait(lambda: health(b)["fleet"]["owned_kernels"] == 1, 15, "B to adopt the kernel")  # type: ignore[index]
        print(f"adopted {time.monotonic() - killed:.1f}s after the kill")
        assert health(b)["fleet"]["adopted"] == 1  # type: ignore[index]
        assert remote_kernel(kernel_id).pid == process.pid
        assert [k["id"] for k in b.kernels()] == [kernel_id]
        assert ports_of(local_connection_info(b, kernel_id)) == ports_of(info)

        client = RelayKernelClient(b.url, kernel_id, ("shell", "iopub"), auth={"token": TOKEN})
        client.wait_idle(cell, 30)
        # Interrupt through B: SIGINT over ssh ends a sleeping cell with KeyboardInterrupt.
        sleeping = client.start_sleeping_cell(60)
        asked = time.monotonic()
        response = requests.post(
            f"{b.url}/api/kernels/{kernel_id}/interrupt", headers=AUTH, timeout=30
        )
        assert response.status_code == 204, response.text
        reply = client.reply_to("shell", sleeping, timeout=20)
        assert reply["content"]["status"] == "error"
        assert reply["content"]["ename"] == "KeyboardInterrupt"
        assert time.monotonic() - asked < 10
        _, reply = client.execute("x = 41")
        assert reply["content"]["status"] == "ok"
        assert process.is_running()

        # Restart through B: a new remote process, on the same ports and keys; a fresh namespace.
        response = requests.post(
            f"{b.url}/api/kernels/{kernel_id}/restart", headers=AUTH, timeout=60
        )
        assert response.status_code == 200, response.text
        assert response.json()["execution_state"] == "idle"
        wait(lambda: not process.is_running(), 10, "the adopted process to end")
        after = remote_kernel(kernel_id)
        assert after.pid != process.pid
        restarted = local_connection_info(b, kernel_id)
        for name in ("ip", "key", "curve_publickey", "curve_secretkey", *PORTS):
            assert restarted[name] == info[name], name
        remote_info = json.loads((remote_dir / f"kernel-{kernel_id}.json").read_text())
        for name in ("key", "curve_secretkey", "ip", *PORTS):
            assert remote_info[name] == info[name], name
        wait(
            lambda: listening_ports(after) == {(HOST, info[name]) for name in PORTS},
            10,
            "the restarted kernel's ports",
        )
        _, reply = client.execute("x", timeout=30)
        assert reply["content"]["ename"] == "NameError", reply["content"]
        _, reply = client.execute("print('after the restart')")
        assert reply["content"]["status"] == "ok"
        # A's ssh session ended with the process it started; B's runs the new one.
        ssh = [p for p in processes_of(kernel_id) if p.name() == "ssh"]
        assert len(ssh) == 1 and ssh[0].ppid() == b.process.pid, ssh
        pgid = os.getpgid(after.pid)

        # Shut down through B: gone from the fleet, and nothing of it left here or on the host.
        stopped = requests.delete(f"{b.url}/api/kernels/{kernel_id}", headers=AUTH, timeout=60)
        assert stopped.status_code == 204, stopped.text
        assert kernel_id not in ids(b)
        assert health(b)["fleet"]["owned_kernels"] == 0  # type: ignore[index]
        assert_nothing_left(kernel_id, remote_dir, pgid)
        assert not list(remote_dir.glob("*.log"))
        assert not [f for f in b.connection_files() if kernel_id in f.name]
        print(f"whole test body {time.monotonic() - started:.1f}s")
    finally:
        close_quietly(watcher, runner, resumed, client)
        a.stop()
        b.stop()
        show("A", a)
        show("B", b)
        print("--- sshd", *sshd.log().splitlines()[-20:], sep="\n")
    if kernel_id:
        # Even when the test failed half-way: no process of the kernel survives its relays.
        leftovers = processes_of(kernel_id)
        for leftover in leftovers:
            leftover.kill()
        assert not leftovers, leftovers

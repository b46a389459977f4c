"""
Kernels on "another host" through the ``kernel-relay-ssh`` provisioner: a real OpenSSH server on 127.0.0.2
(see tests/sshd.py), a real relay whose kernelspec selects the provisioner, real ipykernels started by sshd,
and python-socketio clients. Every channel, interrupt, restart, death, shutdown and a refused key.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import stat
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import requests
from twisted.logger import eventsFromJSONLogFile

from tests.conftest import Relay
from tests.kernel_client import RelayKernelClient
from tests.sshd import HOST, SSHServer, free_port, start_sshd

pytestmark = pytest.mark.timeout(120)

SPEC = "ssh-python"
REFUSED_SPEC = "ssh-refused-key"
SLEEPER_SPEC = "ssh-never-ready"
UNREACHABLE_SPEC = "ssh-nobody-listens"
UNKNOWN_HOST_KEY_SPEC = "ssh-unknown-host-key"
PORTS = ("shell_port", "iopub_port", "stdin_port", "control_port", "hb_port")


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SSHServer]:
    server = start_sshd(tmp_path_factory.mktemp("sshd"))
    try:
        yield server
    finally:
        server.stop()


IPYKERNEL = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
#: A "kernel" that never answers: the launch times out.
SLEEPER = [sys.executable, "-c", "import time; time.sleep(600)", "{connection_file}"]


def write_spec(root: Path, name: str, config: dict[str, Any], argv: list[str] = IPYKERNEL) -> None:
    directory = root / "kernels" / name
    directory.mkdir(parents=True)
    spec = {
        "argv": argv,
        "display_name": f"Python over ssh ({name})",
        "language": "python",
        "metadata": {
            "supported_encryption": ["curve"],
            "kernel_provisioner": {"provisioner_name": "kernel-relay-ssh", "config": config},
        },
    }
    (directory / "kernel.json").write_text(json.dumps(spec))


@pytest.fixture(scope="module")
def remote_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the "remote" host keeps connection files (made by the provisioner, so not made here)."""
    return tmp_path_factory.mktemp("host") / "runtime"


@pytest.fixture(scope="module")
def jupyter_path(
    tmp_path_factory: pytest.TempPathFactory, sshd: SSHServer, remote_dir: Path
) -> Path:
    root = tmp_path_factory.mktemp("jupyter")
    write_spec(
        root, SPEC, sshd.provisioner_config(python=sys.executable, remote_dir=str(remote_dir))
    )
    write_spec(
        root,
        REFUSED_SPEC,
        sshd.provisioner_config(
            identity_file=str(sshd.refused_identity_file), remote_dir=str(remote_dir)
        ),
    )
    write_spec(
        root,
        UNREACHABLE_SPEC,
        sshd.provisioner_config(port=free_port(HOST), remote_dir=str(remote_dir)),
    )
    empty_known_hosts = root / "empty_known_hosts"
    empty_known_hosts.write_text("")
    write_spec(
        root,
        UNKNOWN_HOST_KEY_SPEC,
        sshd.provisioner_config(
            known_hosts_file=str(empty_known_hosts), remote_dir=str(remote_dir)
        ),
    )
    write_spec(
        root,
        SLEEPER_SPEC,
        sshd.provisioner_config(python=sys.executable, remote_dir=str(remote_dir)),
        SLEEPER,
    )
    return root


def start_relay(runtime: Path, jupyter_path: Path, *args: str) -> Relay:
    return Relay(
        runtime,
        "--kernel-encryption",
        "auto",
        *args,
        env={"JUPYTER_PATH": str(jupyter_path)},
    )


@pytest.fixture(scope="module")
def relay(tmp_path_factory: pytest.TempPathFactory, jupyter_path: Path) -> Iterator[Relay]:
    server = start_relay(tmp_path_factory.mktemp("runtime"), jupyter_path)
    try:
        yield server
    finally:
        server.stop()


def start_kernel(relay: Relay, env: dict[str, str] | None = None) -> dict[str, Any]:
    response = requests.post(
        f"{relay.url}/api/kernels", json={"name": SPEC, "env": env or {}}, timeout=90
    )
    assert response.status_code == 201, response.text
    model: dict[str, Any] = response.json()
    return model


@pytest.fixture(scope="module")
def kernel(relay: Relay) -> Iterator[dict[str, Any]]:
    """One ssh kernel shared by the channel, interrupt and restart tests."""
    model = start_kernel(relay, {"KERNEL_GREETING": "hello from the client"})
    yield model
    relay.shutdown(model["id"])


# -- looking at processes and files -------------------------------------------------------------------


def processes_of(kernel_id: str) -> list[psutil.Process]:
    """Running processes (not zombies) whose command line names the kernel: its ssh, its kernel, its watcher."""
    found = []
    for process in psutil.process_iter():
        try:
            if process.pid != os.getpid() and kernel_id in " ".join(process.cmdline()):
                if process.status() != psutil.STATUS_ZOMBIE:
                    found.append(process)
        except psutil.Error:
            continue
    return found


def remote_kernel(kernel_id: str) -> psutil.Process:
    """The ipykernel process of a kernel (sshd's child, not the relay's)."""
    kernels = [
        p
        for p in processes_of(kernel_id)
        if p.cmdline()[:3] == [sys.executable, "-m", "ipykernel_launcher"]
    ]
    assert len(kernels) == 1, kernels
    return kernels[0]


def wait_until(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)
    return value


def local_connection_info(relay: Relay, kernel_id: str) -> dict[str, Any]:
    (path,) = [f for f in relay.connection_files() if kernel_id in f.name]
    info: dict[str, Any] = json.loads(path.read_text())
    return info


def listening_ports(process: psutil.Process) -> set[tuple[str, int]]:
    """The addresses the process listens on at the host's address (ipykernel 7 has one more on 127.0.0.1)."""
    return {
        (c.laddr.ip, c.laddr.port)
        for c in process.net_connections(kind="tcp")
        if c.status == psutil.CONN_LISTEN and c.laddr.ip == HOST
    }


def assert_nothing_left(kernel_id: str, remote_dir: Path, pgid: int | None = None) -> None:
    """No process of the kernel (ssh, kernel, watcher, its process group) and no remote connection file."""
    wait_until(lambda: not processes_of(kernel_id), 10, f"the processes of {kernel_id} to end")
    if pgid is not None:

        def group_gone() -> bool:
            for process in psutil.process_iter():
                try:
                    if os.getpgid(process.pid) == pgid and process.status() != psutil.STATUS_ZOMBIE:
                        return False
                except (OSError, psutil.Error):
                    continue
            return True

        wait_until(group_gone, 10, f"process group {pgid} to end")
    # The remote file goes over one more ssh call, after the kernel's end: wait for it, then insist.
    wait_until(
        lambda: not list(remote_dir.glob(f"*{kernel_id}*")), 10, "the remote connection file to go"
    )
    assert not list(remote_dir.glob(f"*{kernel_id}*"))


# -- the tests --------------------------------------------------------------------------------------


def test_the_kernel_runs_on_the_host_with_encrypted_channels(
    relay: Relay, kernel: dict[str, Any], sshd: SSHServer, remote_dir: Path
) -> None:
    """The kernel is sshd's child, listens on the host's address at the connection file's ports, with
    CurveZMQ keys that reached the host in a private 0600 file."""
    assert kernel["name"] == SPEC and kernel["encrypted"] is True
    info = local_connection_info(relay, kernel["id"])
    assert info["ip"] == HOST
    assert info["curve_publickey"] and info["curve_secretkey"]
    process = remote_kernel(kernel["id"])
    assert process.parent().name() == "sshd"
    assert process.pid not in {p.pid for p in psutil.Process(relay.process.pid).children(True)}
    wait_until(
        lambda: listening_ports(process) == {(HOST, info[name]) for name in PORTS},
        10,
        "the kernel's ports",
    )
    remote_file = remote_dir / f"kernel-{kernel['id']}.json"
    # (ipykernel adds the sticky bit to the directory of the connection file it loads.)
    assert stat.S_IMODE(remote_dir.stat().st_mode) & 0o777 == 0o700
    assert stat.S_IMODE(remote_file.stat().st_mode) == 0o600
    remote_info = json.loads(remote_file.read_text())
    for name in ("key", "curve_publickey", "curve_secretkey", "ip", *PORTS):
        assert remote_info[name] == info[name], name


def test_shell_iopub_stdin_and_control_work_through_the_relay(
    relay: Relay, kernel: dict[str, Any]
) -> None:
    """execute with output on iopub (in the remote process, with the client's KERNEL_* variables), an
    input() answered on stdin and kernel_info on control."""
    client = RelayKernelClient(relay.url, kernel["id"])
    try:
        msg_id, reply = client.execute("import os; print('pid', os.getpid()); 6 * 7")
        assert reply["content"]["status"] == "ok"
        result = client.iopub_for(msg_id, "execute_result")[0]
        assert result["content"]["data"]["text/plain"] == "42"
        streams = "".join(m["content"]["text"] for m in client.iopub_for(msg_id, "stream"))
        assert f"pid {remote_kernel(kernel['id']).pid}" in streams

        # The client's KERNEL_* variables reach the host; the relay's own environment does not.
        msg_id, reply = client.execute(
            "[os.environ.get(name) for name in "
            "('KERNEL_GREETING', 'KERNEL_RELAY_TOKEN', 'PYTHONUNBUFFERED', 'JUPYTER_PATH')]"
        )
        result = client.iopub_for(msg_id, "execute_result")[0]
        assert (
            result["content"]["data"]["text/plain"] == "['hello from the client', None, None, None]"
        )

        msg_id = client.send(
            "shell",
            "execute_request",
            {"code": "answer = input('name? ')\nprint('hello', answer)", "allow_stdin": True},
        )
        request = client.wait_for(lambda: client.received["stdin"], what="input_request")[0]
        assert request["content"]["prompt"] == "name? "
        client.send("stdin", "input_reply", {"value": "over ssh"})
        assert client.reply_to("shell", msg_id)["content"]["status"] == "ok"
        client.wait_idle(msg_id)
        streams = "".join(m["content"]["text"] for m in client.iopub_for(msg_id, "stream"))
        assert "hello over ssh" in streams

        info_id = client.send("control", "kernel_info_request")
        info = client.reply_to("control", info_id)
        assert info["header"]["msg_type"] == "kernel_info_reply"
        assert info["content"]["language_info"]["name"] == "python"
    finally:
        client.close()


def test_interrupt_reaches_the_remote_kernel(relay: Relay, kernel: dict[str, Any]) -> None:
    """POST /api/kernels/<id>/interrupt (SIGINT over ssh) ends a sleeping cell with KeyboardInterrupt."""
    client = RelayKernelClient(relay.url, kernel["id"], ("shell", "iopub"))
    try:
        msg_id = client.start_sleeping_cell(60)
        started = time.monotonic()
        response = requests.post(f"{relay.url}/api/kernels/{kernel['id']}/interrupt", timeout=30)
        assert response.status_code == 204, response.text
        reply = client.reply_to("shell", msg_id, timeout=20)
        assert reply["content"]["status"] == "error"
        assert reply["content"]["ename"] == "KeyboardInterrupt"
        assert time.monotonic() - started < 10
        _, reply = client.execute("1 + 1")
        assert reply["content"]["status"] == "ok"
    finally:
        client.close()


def test_restart_keeps_ports_and_keys_and_starts_a_fresh_kernel(
    relay: Relay, kernel: dict[str, Any], remote_dir: Path
) -> None:
    """A restart replaces the remote process on the same ports and keys; the namespace is fresh."""
    kernel_id = kernel["id"]
    client = RelayKernelClient(relay.url, kernel_id, ("shell", "iopub"))
    try:
        _, reply = client.execute("x = 41")
        assert reply["content"]["status"] == "ok"
        info = local_connection_info(relay, kernel_id)
        before = remote_kernel(kernel_id)
        response = requests.post(f"{relay.url}/api/kernels/{kernel_id}/restart", timeout=60)
        assert response.status_code == 200, response.text
        assert response.json()["execution_state"] == "idle"
        after = remote_kernel(kernel_id)
        assert after.pid != before.pid and not before.is_running()
        assert local_connection_info(relay, kernel_id) == info
        remote_info = json.loads((remote_dir / f"kernel-{kernel_id}.json").read_text())
        assert remote_info["curve_secretkey"] == info["curve_secretkey"]
        wait_until(
            lambda: listening_ports(after) == {(HOST, info[name]) for name in PORTS},
            10,
            "the restarted kernel's ports",
        )
        _, reply = client.execute("x", timeout=30)
        assert reply["content"]["status"] == "error"
        assert reply["content"]["ename"] == "NameError"
        _, reply = client.execute("x = 2")
        assert reply["content"]["status"] == "ok"
        assert client.disconnected == []
    finally:
        client.close()


def test_a_remote_kernel_killed_from_outside_is_reported_dead(
    relay: Relay, remote_dir: Path
) -> None:
    """SIGKILL to the remote kernel: clients see status dead and are disconnected, the kernel leaves
    /api/kernels, and nothing of it is left here or on the host."""
    kernel_id = start_kernel(relay)["id"]
    client = RelayKernelClient(relay.url, kernel_id, ("shell", "iopub"))
    try:
        process = remote_kernel(kernel_id)
        pgid = os.getpgid(process.pid)
        process.kill()
        started = time.monotonic()
        client.wait_for(
            lambda: any(
                m["header"]["msg_type"] == "status" and m["content"]["execution_state"] == "dead"
                for m in client.received["iopub"]
            ),
            timeout=15,
            what="status dead on iopub",
        )
        client.wait_for(lambda: set(client.disconnected) >= {"shell", "iopub"}, 15, "disconnects")
        assert time.monotonic() - started < 10
    finally:
        client.close()
    assert kernel_id not in {k["id"] for k in relay.kernels()}
    assert_nothing_left(kernel_id, remote_dir, pgid)


def test_shutdown_leaves_nothing_running_anywhere(relay: Relay, remote_dir: Path) -> None:
    """GET /shutdown/<id> stops the remote kernel: no ssh, kernel or watcher process, no connection file
    here or on the host."""
    kernel_id = start_kernel(relay)["id"]
    pgid = os.getpgid(remote_kernel(kernel_id).pid)
    assert len(processes_of(kernel_id)) >= 3  # ssh here, the kernel and its watcher there
    started = time.monotonic()
    response = relay.shutdown(kernel_id)
    assert response.status_code == 200, response.text
    assert time.monotonic() - started < 10
    assert kernel_id not in {k["id"] for k in relay.kernels()}
    assert_nothing_left(kernel_id, remote_dir, pgid)
    assert not [f for f in relay.connection_files() if kernel_id in f.name]


@pytest.mark.parametrize(
    ("spec", "why"),
    [
        (REFUSED_SPEC, "the host refused the key"),
        (UNREACHABLE_SPEC, "the host cannot be reached"),
        (UNKNOWN_HOST_KEY_SPEC, "the host's key is not the one"),
    ],
)
def test_a_host_that_cannot_be_used_is_a_clear_500_and_the_relay_carries_on(
    relay: Relay, kernel: dict[str, Any], spec: str, why: str
) -> None:
    """A host that refuses the key, that nothing answers on, or whose host key is unknown fails the spawn
    with a 500 naming the host and the reason; the relay and its other kernels keep working."""
    started = time.monotonic()
    response = requests.get(f"{relay.url}/spawn/{spec}", timeout=60)
    assert response.status_code == 500
    error = response.json()["error"]
    assert spec in error and HOST in error and why in error, error
    assert time.monotonic() - started < 10
    assert relay.kernels()
    client = RelayKernelClient(relay.url, kernel["id"], ("shell", "iopub"))
    try:
        _, reply = client.execute("1 + 1")
        assert reply["content"]["status"] == "ok"
    finally:
        client.close()


def test_a_relay_killed_outright_leaves_no_kernel_on_the_host(
    tmp_path: Path, jupyter_path: Path, remote_dir: Path
) -> None:
    """SIGKILL to the relay ends its ssh sessions, and with them the remote kernels."""
    relay = start_relay(tmp_path / "runtime", jupyter_path)
    try:
        kernel_id = start_kernel(relay)["id"]
        pgid = os.getpgid(remote_kernel(kernel_id).pid)
    finally:
        relay.stop(signal.SIGKILL)
    wait_until(lambda: not processes_of(kernel_id), 15, "the remote kernel to end")
    assert [p for p in psutil.process_iter() if _pgid(p.pid) == pgid and _running(p)] == []
    # Nobody was left to remove the connection file on the host.
    (left,) = remote_dir.glob(f"*{kernel_id}*")
    left.unlink()


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except OSError:
        return None


def _running(process: psutil.Process) -> bool:
    try:
        return bool(process.status() != psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return False


def test_another_provisioner_takes_over_an_independent_kernel_from_its_info(
    sshd: SSHServer, jupyter_path: Path, remote_dir: Path, tmp_path: Path
) -> None:
    """An ``independent`` kernel outlives the ssh session that started it; a second provisioner loaded from
    the first's get_provisioner_info (through JSON) polls and kills it, and removes its file on the host."""
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager

    from kernel_relay.kernels.ssh import SSHProvisioner

    name = "kernel-takeover"
    manager = KernelManager(
        kernel_name=SPEC,
        kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(jupyter_path / "kernels")]),
        connection_file=str(tmp_path / f"{name}.json"),
        transport_encryption="auto",
    )
    manager.start_kernel(independent=True)
    try:
        first = manager.provisioner
        assert isinstance(first, SSHProvisioner)
        assert not hasattr(first, "pid")
        kernel = remote_kernel(name)
        info = json.loads(json.dumps(asyncio.run(first.get_provisioner_info())))
        assert info["remote_pid"] == kernel.pid
        assert (info["host"], info["port"]) == (HOST, sshd.port)
        assert (
            info["connection_info"]["curve_secretkey"] == first.connection_info["curve_secretkey"]
        )

        # The first's connection ends (as when its relay dies): no watcher kills the kernel.
        names = [p.name() for p in processes_of(name)]
        assert "ssh" in names and "sh" not in names, names
        asyncio.run(first.cleanup(restart=True))
        wait_until(lambda: [p.pid for p in processes_of(name)] == [kernel.pid], 10, "ssh to end")
        time.sleep(1.5)  # (ipykernel's parent poller looks once a second)
        assert kernel.is_running()

        second = SSHProvisioner(kernel_id=info["kernel_id"], kernel_spec=manager.kernel_spec)
        asyncio.run(second.load_provisioner_info(info))
        assert second.has_process
        assert asyncio.run(second.poll()) is None
        asyncio.run(second.kill())
        code = wait_until(lambda: asyncio.run(second.poll()), 10, "the second to see it gone")
        assert code == -signal.SIGKILL
        assert not second.has_process
        wait_until(lambda: not manager.is_alive(), 10, "the first manager to see it gone")
        asyncio.run(second.cleanup())
        assert not list(remote_dir.glob(f"{name}*"))
    finally:
        manager.shutdown_kernel(now=True)
    assert_nothing_left(name, remote_dir)


def test_a_launch_that_times_out_kills_the_remote_kernel(
    tmp_path: Path, jupyter_path: Path, remote_dir: Path
) -> None:
    """A remote kernel that never gets ready fails the spawn after --launch-timeout and is killed on the
    host, its connection file removed."""
    relay = start_relay(tmp_path / "runtime", jupyter_path, "--launch-timeout", "3")
    try:
        response = requests.get(f"{relay.url}/spawn/{SLEEPER_SPEC}", timeout=60)
        assert response.status_code == 500
        assert "did not become ready within 3s" in response.json()["error"]
        events = list(eventsFromJSONLogFile(io.StringIO(relay.output())))
        (kernel_id,) = {e["kernel_id"] for e in events if e.get("spec_name") == SLEEPER_SPEC}
        (pid,) = {e["pid"] for e in events if e.get("kernel_id") == kernel_id and "pid" in e}
        wait_until(
            lambda: not psutil.pid_exists(pid) or not _running(psutil.Process(pid)), 15, "it"
        )
        assert_nothing_left(kernel_id, remote_dir)
        assert relay.kernels() == []
    finally:
        relay.stop()

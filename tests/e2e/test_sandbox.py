"""
Kernels in real bubblewrap sandboxes (``--kernel-sandbox``, on by default): from inside kernel A, with code sent
through the relay, each way a kernel user could reach the relay or another user's kernel fails, while B, the
relay and its clients keep working. The same probes run against a relay with ``--kernel-sandbox off`` and
succeed there, so each test shows what the sandbox changes.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.conftest import Relay, relay_fixture
from tests.jupyter_ws import JupyterWS
from tests.redis_server import RedisServer, redis_server, require_redis

pytestmark = [
    pytest.mark.e2e,  # a fleet's relays too, found through other test modules
    pytest.mark.timeout(240),
    pytest.mark.skipif(not shutil.which("bwrap"), reason="bubblewrap (bwrap) is not installed"),
]

__all__ = ["redis_server"]

TOKEN = "sandbox-token-0123456789abcdefghij"
#: Small limits, so that a test can reach them quickly.
LIMITS = "memory=384M,processes=96"

#: The token in the relay's environment too: no kernel may inherit it, sandboxed or not.
TOKEN_ENV = {"KERNEL_RELAY_TOKEN": TOKEN}
sandboxed = relay_fixture("--kernel-limits", LIMITS, token=TOKEN, env=TOKEN_ENV)
unsandboxed = relay_fixture("--kernel-sandbox", "off", token=TOKEN, env=TOKEN_ENV)


@pytest.fixture(params=["sandboxed", "off"])
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def relay(mode: str, request: pytest.FixtureRequest) -> Relay:
    server: Relay = request.getfixturevalue("sandboxed" if mode == "sandboxed" else "unsandboxed")
    return server


class Pair:
    """Two kernels of one relay: A runs the probes, B is the victim."""

    def __init__(self, relay: Relay) -> None:
        self.relay = relay
        self.a = start(relay)
        self.b = start(relay)

    def stop(self) -> None:
        for kernel in (self.a, self.b):
            requests.delete(
                f"{self.relay.url}/api/kernels/{kernel['id']}",
                headers=self.relay.headers,
                timeout=60,
            )

    def connection_info(self, kernel: dict[str, Any]) -> dict[str, Any]:
        (path,) = [f for f in self.relay.connection_files() if str(kernel["id"]) in f.name]
        info: dict[str, Any] = json.loads(path.read_text())
        return info


@pytest.fixture
def pair(relay: Relay) -> Iterator[Pair]:
    kernels = Pair(relay)
    try:
        yield kernels
    finally:
        kernels.stop()


def start(relay: Relay, name: str = "python3") -> dict[str, Any]:
    response = requests.post(
        f"{relay.url}/api/kernels", json={"name": name}, headers=relay.headers, timeout=90
    )
    assert response.status_code == 201, response.text
    model: dict[str, Any] = response.json()
    return model


def run(
    relay: Relay, kernel_id: str, code: str, timeout: float = 60.0
) -> tuple[str, dict[str, Any]]:
    """Run ``code`` in a kernel through the relay: its stdout and its execute_reply's content."""
    client = JupyterWS(relay.url, kernel_id, token=relay.token)
    try:
        msg_id, reply = client.execute(code, timeout)
        out = "".join(m["content"]["text"] for m in client.iopub_for(msg_id, "stream"))
        content: dict[str, Any] = reply["content"]
        return out, content
    finally:
        client.close()


def probe(relay: Relay, kernel_id: str, code: str) -> Any:
    """Run probe code that prints one JSON value as its last line; that value."""
    out, reply = run(relay, kernel_id, code)
    assert reply["status"] == "ok", reply
    return json.loads(out.strip().splitlines()[-1])


def still_working(pair: Pair) -> None:
    """B answers an authenticated client through the relay, and so does A; the relay lists both."""
    for kernel in (pair.b, pair.a):
        out, reply = run(pair.relay, kernel["id"], "print(6 * 7)")
        assert (reply["status"], out) == ("ok", "42\n")
    listed = {k["id"] for k in pair.relay.kernels()}
    assert {pair.a["id"], pair.b["id"]} <= listed


def test_the_kernel_model_says_whether_it_is_sandboxed(pair: Pair, mode: str) -> None:
    """The model says sandboxed true (beside encrypted) for a sandboxed kernel, false with the sandbox off."""
    listed = {k["id"]: k for k in pair.relay.kernels()}
    assert listed[pair.a["id"]]["sandboxed"] is (mode == "sandboxed")
    assert pair.a["sandboxed"] is (mode == "sandboxed")
    assert listed[pair.a["id"]]["encrypted"] is True


FIND_KEY = """
import json, os, time
key, found = {key!r}[::-1], []  # reversed here, or this cell's own history would hold the key
give_up = time.monotonic() + 20
for top, depth in {roots!r}:
    for base, dirs, files in os.walk(top):
        if base.count("/") - top.count("/") >= depth or time.monotonic() > give_up:
            dirs[:] = []
        for name in files:
            path = os.path.join(base, name)
            try:
                if os.path.getsize(path) < 65536 and key in open(path, errors="replace").read():
                    found.append(path)
            except OSError:
                pass
print(json.dumps(found))
"""


def test_no_other_kernels_connection_file_or_key_is_readable(pair: Pair, mode: str) -> None:
    """
    A searches the relay's runtime directory, the Jupyter runtime directory, homes, /tmp and /run for B's
    key: found only unsandboxed.
    """
    key = pair.connection_info(pair.b)["key"]
    runtime = Path.home() / ".local" / "share" / "jupyter"
    roots = [(str(pair.relay.runtime_dir), 8), (str(runtime), 4), ("/home", 4), ("/run", 4)]
    roots += [("/tmp", 2), ("/var/tmp", 2)]
    found = probe(pair.relay, pair.a["id"], FIND_KEY.format(key=key[::-1], roots=roots))
    if mode == "sandboxed":
        assert found == []
    else:
        assert any(f"kernel-{pair.b['id']}.json" in path for path in found), found
    still_working(pair)


READ_PROC = """
import json, os
token, relay, seen = {token!r}, {relay!r}, []
for pid in filter(str.isdigit, os.listdir("/proc")):
    for name in ("environ", "cmdline"):
        try:
            with open(f"/proc/{{pid}}/{{name}}", "rb") as file:
                if token.encode() in file.read():
                    seen.append(f"{{pid}}/{{name}}")
        except OSError:
            pass
print(json.dumps({{"token": seen, "relay": os.path.exists(f"/proc/{{relay}}"), "env": token in str(os.environ)}}))
"""


def test_neither_the_relay_process_nor_its_token_is_visible(pair: Pair, mode: str) -> None:
    """
    A looks for the relay's pid and its token in every /proc/*/environ and cmdline (found only unsandboxed),
    and in its own environment (never found).
    """
    seen = probe(
        pair.relay, pair.a["id"], READ_PROC.format(token=TOKEN, relay=pair.relay.process.pid)
    )
    assert seen["env"] is False  # never in a kernel's own environment
    if mode == "sandboxed":
        assert seen == {"token": [], "relay": False, "env": False}
    else:
        assert seen["relay"] is True and seen["token"], seen
    still_working(pair)


CLIENT = """
import json
from jupyter_client import BlockingKernelClient
client = BlockingKernelClient()
client.load_connection_info({info!r})
client.start_channels()
try:
    reply = client.execute_interactive("print('from A')", timeout=10)
    print(json.dumps(reply["content"]["status"]))
except Exception as error:
    print(json.dumps(type(error).__name__))
finally:
    client.stop_channels()
"""


def test_a_cannot_run_code_in_b_even_with_its_keys(pair: Pair, mode: str) -> None:
    """Given B's whole connection info (keys too), A's BlockingKernelClient runs code in B only unsandboxed."""
    info = pair.connection_info(pair.b)
    info.pop("sandboxed", None)
    outcome = probe(pair.relay, pair.a["id"], CLIENT.format(info=info))
    assert outcome == ("TimeoutError" if mode == "sandboxed" else "ok")
    still_working(pair)


CONNECT = """
import json, socket
results = {{}}
for port in {ports!r}:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=3).close()
        results[port] = "connected"
    except OSError as error:
        results[port] = type(error).__name__
print(json.dumps(results))
"""


def test_a_cannot_reach_the_relay_or_redis_on_loopback(
    pair: Pair, mode: str, redis_server: RedisServer
) -> None:
    """A opens TCP connections to the relay's port and to a password-less Redis: refused when sandboxed."""
    require_redis()
    ports = [pair.relay.port, redis_server.port]
    results = probe(pair.relay, pair.a["id"], CONNECT.format(ports=ports))
    outcome = set(results.values())
    assert outcome == ({"ConnectionRefusedError"} if mode == "sandboxed" else {"connected"}), (
        results
    )
    still_working(pair)


ALLOCATE = """
import json
try:
    block = bytearray(640 * 1024 * 1024)
    block[::4096] = b"x" * len(block[::4096])
    print(json.dumps("allocated"))
    del block
except MemoryError:
    print(json.dumps("MemoryError"))
"""


def test_touching_more_memory_than_the_limit_fails_alone(pair: Pair, mode: str) -> None:
    """A allocates and touches 640 MiB against a 384 MiB limit: MemoryError when sandboxed, A lives on."""
    outcome = probe(pair.relay, pair.a["id"], ALLOCATE)
    assert outcome == ("MemoryError" if mode == "sandboxed" else "allocated")
    still_working(pair)


FORK = """
import json, subprocess
children, error = [], None
try:
    for _ in range(150):
        children.append(subprocess.Popen(["sleep", "60"]))
except OSError as failure:
    error = type(failure).__name__
for child in children:
    child.kill()
    child.wait()
print(json.dumps({"started": len(children), "error": error}))
"""


def test_forking_past_the_process_limit_fails(pair: Pair, mode: str) -> None:
    """A starts 150 processes against a limit of 96 (threads included): refused when sandboxed."""
    outcome = probe(pair.relay, pair.a["id"], FORK)
    if mode == "sandboxed":
        assert outcome["error"] == "BlockingIOError" and outcome["started"] < 96, outcome
    else:
        assert outcome == {"started": 150, "error": None}
    still_working(pair)


def test_a_sandboxed_kernel_keeps_its_files_across_a_restart_answers_input_and_is_interrupted(
    sandboxed: Relay,
) -> None:
    """Files in its working directory survive a restart; input() and a signal interrupt work inside."""
    kernel = start(sandboxed)
    kernel_id = kernel["id"]
    try:
        out, reply = run(
            sandboxed,
            kernel_id,
            "import os; open('notes.txt', 'w').write('kept'); print(os.getcwd(), os.getuid() > 0)",
        )
        assert (reply["status"], out) == ("ok", "/home/kernel True\n")

        client = JupyterWS(sandboxed.url, kernel_id, token=TOKEN)
        try:
            msg_id = client.send(
                "shell", "execute_request", {"code": "print(input('name? '))", "allow_stdin": True}
            )
            client.wait_for(lambda m: m["header"]["msg_type"] == "input_request")
            client.send("stdin", "input_reply", {"value": "sandboxed"})
            client.idle_after(msg_id)
            assert "sandboxed\n" in [
                m["content"]["text"] for m in client.iopub_for(msg_id, "stream")
            ]

            reply = interrupted_sleep(sandboxed, kernel_id, client)
            assert reply["content"]["status"] == "error"
            assert reply["content"]["ename"] == "KeyboardInterrupt"
        finally:
            client.close()

        response = requests.post(
            f"{sandboxed.url}/api/kernels/{kernel_id}/restart",
            headers=sandboxed.headers,
            timeout=90,
        )
        assert response.status_code == 200, response.text
        assert response.json()["sandboxed"] is True
        out, reply = run(sandboxed, kernel_id, "print(open('notes.txt').read())")
        assert (reply["status"], out) == ("ok", "kept\n")
    finally:
        requests.delete(
            f"{sandboxed.url}/api/kernels/{kernel_id}", headers=sandboxed.headers, timeout=60
        )


pooled = relay_fixture("--pool", "python3=1", token=TOKEN)


def test_a_pooled_kernel_is_sandboxed(pooled: Relay) -> None:
    """A kernel taken from the warm pool is sandboxed like a cold one, and runs code."""
    deadline = time.monotonic() + 60
    while "pooled" not in pooled.output() and time.monotonic() < deadline:
        time.sleep(0.2)
    kernel = start(pooled)
    try:
        assert kernel["sandboxed"] is True
        out, reply = run(
            pooled,
            kernel["id"],
            "import os; print(len(os.listdir('/proc/1/task')) > 0, os.getpid() < 10)",
        )
        assert (reply["status"], out) == ("ok", "True True\n")
    finally:
        requests.delete(
            f"{pooled.url}/api/kernels/{kernel['id']}", headers=pooled.headers, timeout=60
        )


@pytest.mark.parametrize("policy", ["required", "auto"])
def test_without_bwrap_required_refuses_and_auto_says_so(tmp_path: Path, policy: str) -> None:
    """With no bwrap on PATH, required refuses to start a kernel; auto starts it, logged and sandboxed false."""
    empty = tmp_path / "bin"
    empty.mkdir()
    relay = Relay(
        tmp_path / "runtime", "--kernel-sandbox", policy, token=TOKEN, env={"PATH": str(empty)}
    )
    try:
        response = requests.post(
            f"{relay.url}/api/kernels", json={"name": "python3"}, headers=relay.headers, timeout=90
        )
        if policy == "required":
            assert response.status_code == 500
            assert "--kernel-sandbox is required" in response.text
            assert relay.kernels() == []
        else:
            assert response.status_code == 201, response.text
            assert response.json()["sandboxed"] is False
            assert "RUNS UNSANDBOXED" in relay.output()
    finally:
        relay.stop(signal.SIGTERM)


def test_a_sandboxed_kernel_is_adopted_after_its_relay_is_killed(
    redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """
    Relay B of a fleet adopts A's sandboxed kernel after A's SIGKILL: it stays sandboxed, keeps its files,
    and B restarts it in the same sandbox.
    """
    from tests.e2e.test_fleet import AUTH, fleet_relay, health
    from tests.e2e.test_relay_resume import wait

    url = redis_server.database(7)
    a = fleet_relay(tmp_path_factory.mktemp("a"), url)
    b = fleet_relay(tmp_path_factory.mktemp("b"), url)
    try:
        started = requests.post(
            f"{a.url}/api/kernels", json={"name": "python3"}, headers=AUTH, timeout=90
        )
        assert started.status_code == 201, started.text
        assert started.json()["sandboxed"] is True
        kernel_id = started.json()["id"]
        wait(lambda: kernel_id in {k["id"] for k in b.kernels()}, 10, "B to list it")
        out, reply = run(a, kernel_id, "open('left.txt', 'w').write('by A'); print('ok')")
        assert (reply["status"], out) == ("ok", "ok\n")
        b_model = {k["id"]: k for k in b.kernels()}[kernel_id]
        assert b_model["sandboxed"] is True  # a guest's model says so too

        os.kill(a.process.pid, signal.SIGKILL)
        a.process.wait()
        wait(lambda: health(b)["fleet"]["owned_kernels"] == 1, 20, "B to adopt the kernel")  # type: ignore[index]
        out, reply = run(b, kernel_id, "print(open('left.txt').read())")
        assert (reply["status"], out) == ("ok", "by A\n")

        restarted = requests.post(
            f"{b.url}/api/kernels/{kernel_id}/restart", headers=AUTH, timeout=90
        )
        assert restarted.status_code == 200, restarted.text
        assert restarted.json()["sandboxed"] is True
        out, reply = run(
            b,
            kernel_id,
            "import os; print(open('left.txt').read(), os.path.exists('/proc/1/environ'))",
        )
        assert (reply["status"], out) == ("ok", "by A True\n")
        deleted = requests.delete(f"{b.url}/api/kernels/{kernel_id}", headers=AUTH, timeout=60)
        assert deleted.status_code == 204
    finally:
        a.stop()
        b.stop()


def _kernelspec(root: Path, name: str, **extra: Any) -> None:
    spec = {
        "argv": ["python", "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": name,
        "language": "python",
        "metadata": {"supported_encryption": ["curve"]},
    }
    for key, value in extra.items():
        if key == "metadata":
            spec["metadata"] = {**spec["metadata"], **value}  # type: ignore[dict-item]
        else:
            spec[key] = value
    directory = root / "kernels" / name
    directory.mkdir(parents=True)
    (directory / "kernel.json").write_text(json.dumps(spec))


@pytest.fixture(scope="module")
def specs_relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Relay]:
    """A sandboxing relay with a message-interrupt kernelspec and one whose metadata lowers its memory limit."""
    jupyter = tmp_path_factory.mktemp("jupyter")
    _kernelspec(jupyter, "by-message", interrupt_mode="message")
    _kernelspec(jupyter, "small", metadata={"kernel_relay": {"limits": {"memory": "192M"}}})
    _kernelspec(jupyter, "brief", metadata={"kernel_relay": {"limits": {"cpu_time": 3}}})
    relay = Relay(
        tmp_path_factory.mktemp("runtime"), token=TOKEN, env={"JUPYTER_PATH": str(jupyter)}
    )
    try:
        yield relay
    finally:
        relay.stop()


def interrupted_sleep(relay: Relay, kernel_id: str, client: JupyterWS) -> dict[str, Any]:
    """
    The reply to a minute's sleep interrupted over REST once the kernel runs its code (an interrupt that
    lands before, even after ``busy`` or ``execute_input``, is ignored or swallowed by ipykernel).
    """
    msg_id = client.send(
        "shell",
        "execute_request",
        {"code": "import time; print('sleeping', flush=True); time.sleep(60)"},
    )
    client.wait_for(
        lambda m: (
            m["header"]["msg_type"] == "stream"
            and "sleeping" in m["content"]["text"]
            and m["parent_header"].get("msg_id") == msg_id
        )
    )
    response = requests.post(
        f"{relay.url}/api/kernels/{kernel_id}/interrupt", headers=relay.headers, timeout=30
    )
    assert response.status_code == 204, response.text
    return client.reply_to(msg_id, timeout=30)


def test_a_message_mode_kernel_is_interrupted_inside_the_sandbox(specs_relay: Relay) -> None:
    """interrupt_mode message: the interrupt_request reaches the sandboxed kernel over its control socket."""
    kernel = start(specs_relay, "by-message")
    try:
        assert kernel["sandboxed"] is True
        client = JupyterWS(specs_relay.url, kernel["id"], token=TOKEN)
        try:
            reply = interrupted_sleep(specs_relay, kernel["id"], client)
            assert reply["content"]["ename"] == "KeyboardInterrupt"
        finally:
            client.close()
    finally:
        requests.delete(
            f"{specs_relay.url}/api/kernels/{kernel['id']}", headers=specs_relay.headers, timeout=60
        )


def test_a_kernelspec_lowers_its_own_memory_limit(specs_relay: Relay) -> None:
    """metadata.kernel_relay.limits.memory 192M: 256 MiB fails there, and not in a kernel of the default limit."""
    small, default = start(specs_relay, "small"), start(specs_relay, "by-message")
    try:
        code = ALLOCATE.replace("640", "256")
        assert probe(specs_relay, small["id"], code) == "MemoryError"
        assert probe(specs_relay, default["id"], code) == "allocated"
    finally:
        for kernel in (small, default):
            requests.delete(
                f"{specs_relay.url}/api/kernels/{kernel['id']}",
                headers=specs_relay.headers,
                timeout=60,
            )


def test_a_kernel_past_its_cpu_time_dies_alone(specs_relay: Relay) -> None:
    """cpu_time 3: a busy loop kills that kernel, reported dead and gone; another kernel carries on."""
    brief, other = start(specs_relay, "brief"), start(specs_relay, "by-message")
    try:
        client = JupyterWS(specs_relay.url, brief["id"], token=TOKEN)
        try:
            client.send("shell", "execute_request", {"code": "while True: pass"})
            client.wait_for(
                lambda m: (
                    m["header"]["msg_type"] == "status"
                    and m["content"]["execution_state"] == "dead"
                ),
                timeout=60,
            )
        finally:
            client.close()
        deadline = time.monotonic() + 30
        while brief["id"] in {k["id"] for k in specs_relay.kernels()}:
            assert time.monotonic() < deadline, "the kernel is still listed"
            time.sleep(0.2)
        out, reply = run(specs_relay, other["id"], "print(6 * 7)")
        assert (reply["status"], out) == ("ok", "42\n")
    finally:
        requests.delete(
            f"{specs_relay.url}/api/kernels/{other['id']}", headers=specs_relay.headers, timeout=60
        )


def test_the_operator_attaches_with_the_relays_connection_file(sandboxed: Relay) -> None:
    """The relay's user runs code in a sandboxed kernel from its connection file (as jupyter console --existing)."""
    from jupyter_client import BlockingKernelClient

    kernel = start(sandboxed)
    try:
        (path,) = [f for f in sandboxed.connection_files() if kernel["id"] in f.name]
        assert json.loads(path.read_text())["transport"] == "ipc"
        client = BlockingKernelClient(connection_file=str(path))
        client.load_connection_file()
        client.start_channels()
        try:
            reply = client.execute_interactive("import os; print(os.getuid())", timeout=30)
            assert reply["content"]["status"] == "ok"
        finally:
            client.stop_channels()
    finally:
        requests.delete(
            f"{sandboxed.url}/api/kernels/{kernel['id']}", headers=sandboxed.headers, timeout=60
        )


host_ipc = relay_fixture("--kernel-network", "host", "--kernel-transport", "ipc", token=TOKEN)


def test_host_network_with_the_ipc_transport_puts_the_sockets_in_the_box(host_ipc: Relay) -> None:
    """--kernel-network host with --kernel-transport ipc: the sockets are in the kernel's box, and it reaches loopback."""
    kernel = start(host_ipc)
    try:
        assert kernel["sandboxed"] is True
        (path,) = [f for f in host_ipc.connection_files() if kernel["id"] in f.name]
        info = json.loads(path.read_text())
        assert info["transport"] == "ipc" and info["ip"].endswith("/channels/k")
        results = probe(host_ipc, kernel["id"], CONNECT.format(ports=[host_ipc.port]))
        assert results == {str(host_ipc.port): "connected"}  # the opted-in risk, as documented
    finally:
        requests.delete(
            f"{host_ipc.url}/api/kernels/{kernel['id']}", headers=host_ipc.headers, timeout=60
        )

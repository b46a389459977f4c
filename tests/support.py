"""Helpers for tests that run a real server process and talk to it over loopback."""

from __future__ import annotations

import base64
import fcntl
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

ROOT = Path(__file__).resolve().parent.parent
NODE_DIR = ROOT / "tests" / "node"


#: Test servers' ports come from below Linux's ephemeral range (32768 and up), where the kernels' ports and
#: every outgoing connection's are picked: a port handed out here is not also the kernel's next port.
_PORTS_LOW, _PORTS_HIGH = 10000, 32000


def _worker_ports() -> Iterator[int]:
    """
    This pytest-xdist worker's own block of the test ports (all of them without xdist), from a random
    start so that test runs of other checkouts on the same machine seldom probe the same ports first.
    """
    index = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)
    count = max(int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")), index + 1)
    size = (_PORTS_HIGH - _PORTS_LOW) // count
    low = _PORTS_LOW + index * size
    start = random.randrange(size)
    while True:
        for offset in range(size):
            yield low + (start + offset) % size


_ports = _worker_ports()


def free_port(host: str = "127.0.0.1") -> int:
    """
    A TCP port on ``host`` that nothing listens on right now, from this worker's block, where each port
    comes round again only after all the others: parallel workers (``pytest -n``) are never given one port.
    """
    for port in _ports:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind((host, port))
            except OSError:
                continue
            return port
    raise AssertionError("unreachable: the ports repeat")


def wait_for_port(
    port: int, process: subprocess.Popen[bytes] | None = None, timeout: float = 30.0
) -> None:
    """Block until something accepts connections on 127.0.0.1:port, or fail with the process's output."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            output = process.stdout.read().decode(errors="replace") if process.stdout else ""
            raise RuntimeError(
                f"server exited with {process.returncode} before listening:\n{output}"
            )
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listened on 127.0.0.1:{port} within {timeout}s")


_T = TypeVar("_T")


def starts_processes(thing: _T) -> _T:
    """
    Tag a class, function or fixture function that starts the relay, kernels, sshd, Node or Chromium: a test
    that uses one, directly or through its fixtures, is marked ``e2e`` (see ``tests/conftest.py``).
    """
    thing.starts_processes = True  # type: ignore[attr-defined]
    return thing


class ServerProcess:
    """A server started as a child process, listening on ``port``; its output is kept for failures."""

    def __init__(self, argv: Sequence[str], port: int, env: dict[str, str] | None = None) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = Path(os.environ.get("TMPDIR", "/tmp")) / f"kernel-relay-test-{port}.log"
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            list(argv),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            cwd=ROOT,
            start_new_session=True,
        )
        try:
            wait_for_port(port, self.process)
        except BaseException:
            self.stop()
            raise

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def output(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        """Signal the server and wait for it; kill its whole process group if it does not exit."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self._log.close()
        return self.process.returncode


@contextmanager
def running(
    argv: Sequence[str], port: int, env: dict[str, str] | None = None
) -> Iterator[ServerProcess]:
    server = ServerProcess(argv, port, env)
    try:
        yield server
    finally:
        server.stop()


def jupyter_server(root: Path, token: str, *options: str) -> ServerProcess:
    """
    Jupyter Server on a free loopback port with ``root`` as its notebook root, its token, and its runtime,
    config and data directories of its own under ``root`` (so nothing of the machine's Jupyter set-up
    leaks in); ``options`` are more of its command line (``--gateway-url=...``).
    """
    port = free_port()
    argv = [
        sys.executable,
        "-m",
        "jupyter_server",
        "--allow-root",
        "--no-browser",
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",
        f"--ServerApp.token={token}",
        f"--ServerApp.root_dir={root}",
        *options,
    ]
    env = {
        f"JUPYTER_{name.upper()}_DIR": str(root / name) for name in ("runtime", "config", "data")
    }
    return ServerProcess(argv, port, env=env)


def idle_websocket(
    port: int, source: str, forwarded_for: str | None = None, eio: int = 4
) -> socket.socket | None:
    """
    A tokenless Engine.IO WebSocket opened from ``source`` (maybe with an X-Forwarded-For) and left idle, to
    hold one of the relay's sockets; None if the relay would not upgrade it.
    """
    connection = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    connection.settimeout(5)
    forwarded = f"X-Forwarded-For: {forwarded_for}\r\n" if forwarded_for else ""
    try:
        connection.bind((source, 0))
        connection.connect(("127.0.0.1", port))
        key = base64.b64encode(os.urandom(16)).decode()
        connection.sendall(
            f"GET /socket.io/?EIO={eio}&transport=websocket HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            f"Sec-WebSocket-Version: 13\r\n{forwarded}\r\n".encode()
        )
        answer = connection.recv(4096)
    except OSError:
        connection.close()
        return None
    if not answer.startswith(b"HTTP/1.1 101"):
        connection.close()
        return None
    return connection


def conformance_server_argv(port: int, *extra: str) -> list[str]:
    return [
        sys.executable,
        str(ROOT / "examples" / "conformance_server.py"),
        "--port",
        str(port),
        *extra,
    ]


def node_available() -> bool:
    return shutil.which("node") is not None and shutil.which("npm") is not None


@starts_processes
def ensure_node_modules(directory: Path = NODE_DIR, env: dict[str, str] | None = None) -> Path:
    """
    Install a folder's Node test clients (from its package-lock.json) unless they are up to date; return
    the folder (tests/node by default). One test worker at a time: two ``npm ci`` in one folder break it.
    """
    installed = directory / "node_modules" / ".package-lock.json"
    lock = directory / "package-lock.json"
    with (directory / ".npm-ci.lock").open("w") as guard:
        fcntl.flock(guard, fcntl.LOCK_EX)
        if not installed.exists() or installed.stat().st_mtime < lock.stat().st_mtime:
            subprocess.run(
                ["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"],
                cwd=directory,
                check=True,
                env={**os.environ, **(env or {})},
                timeout=600,
            )
    return directory


@starts_processes
def run_node(script: str, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """Run ``tests/node/<script>`` with Node and return its completed process (output as text)."""
    ensure_node_modules()
    return subprocess.run(
        ["node", str(NODE_DIR / script), *args],
        cwd=NODE_DIR,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


#: Debian's Chromium, for the tests that open a page in it directly (``--dump-dom``).
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@starts_processes
def headless_chromium(url: str, *flags: str) -> list[str]:
    """The command that loads ``url`` in a headless Chromium and prints its DOM once the page has loaded."""
    return [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        *flags,
        "--dump-dom",
        url,
    ]

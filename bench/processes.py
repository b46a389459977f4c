"""The servers under test as child processes on loopback: the relay, Jupyter Server, and bare kernels."""

from __future__ import annotations

import json
import os
import resource
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import requests

HOST = "127.0.0.1"
REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


def raise_fd_limit() -> int:
    """Raise RLIMIT_NOFILE to the hard limit (children inherit it); returns the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    return soft


def cpu_seconds(pid: int) -> float:
    """
    CPU time used so far by every thread of process ``pid`` (not its children). Linux's per-thread
    scheduler counters are read where they exist: nanoseconds, where ``cpu_times`` counts 10 ms ticks,
    too coarse for the few milliseconds of a block of round trips.
    """
    try:
        total = 0
        for thread in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{thread}/schedstat") as stats:
                total += int(stats.read().split()[0])
        return total / 1e9
    except (OSError, ValueError, IndexError):
        import psutil

        times = psutil.Process(pid).cpu_times()
        return float(times.user + times.system)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


class ChildServer:
    """A server process with its log file; ``stop`` sends SIGINT, then kills after a grace period."""

    stop_signal = signal.SIGINT

    def __init__(
        self, name: str, argv: list[str], port: int, log_dir: Path, env: dict[str, str]
    ) -> None:
        self.name = name
        self.port = port
        self.url = f"http://{HOST}:{port}"
        self.log_path = log_dir / f"{name}.log"
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            argv,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **env},
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def wait_http(
        self, path: str, timeout: float = 60.0, headers: dict[str, str] | None = None
    ) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited early; see {self.log_path}")
            try:
                if requests.get(self.url + path, timeout=2, headers=headers).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} did not answer {path} within {timeout} s")

    def stop(self, grace: float = 20.0) -> None:
        if self.process.poll() is None:
            self.process.send_signal(self.stop_signal)
            try:
                self.process.wait(grace)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
        self._log.close()


class RelayServer(ChildServer):
    """``twist kernel-relay`` on a free loopback port, optionally under cProfile."""

    def __init__(
        self,
        log_dir: Path,
        *args: str,
        name: str = "relay",
        profile_to: Path | None = None,
    ) -> None:
        port = free_port()
        runtime = log_dir / f"{name}-runtime"
        runtime.mkdir(parents=True, exist_ok=True)
        if profile_to is None:
            prefix = [sys.executable, "-m", "twisted", "kernel-relay"]
        else:
            prefix = [sys.executable, "-m", "bench.profile_relay", str(profile_to)]
        argv = [*prefix, "--port", str(port), *args]
        super().__init__(name, argv, port, log_dir, {"JUPYTER_RUNTIME_DIR": str(runtime)})
        self.wait_http("/api/kernelspecs")

    def spawn(self, spec: str = "python3") -> str:
        response = requests.get(f"{self.url}/spawn/{spec}", timeout=120)
        response.raise_for_status()
        kernel_id: str = response.json()["id"]
        return kernel_id

    def shutdown(self, kernel_id: str) -> None:
        requests.get(f"{self.url}/shutdown/{kernel_id}", timeout=60)

    def kernel_ids(self) -> set[str]:
        """The kernels GET /api/kernels lists (in a fleet: every relay's)."""
        listing = requests.get(f"{self.url}/api/kernels", timeout=30).json()
        return {str(kernel["id"]) for kernel in listing}


class RedisServer(ChildServer):
    """
    Debian's ``redis-server`` on a free loopback port for a fleet of relays, keeping nothing on disk: a
    fleet's numbering must cost what Redis's work costs, never a snapshot's.
    """

    stop_signal = signal.SIGTERM

    def __init__(self, log_dir: Path, name: str = "redis") -> None:
        port = free_port()
        directory = log_dir / f"{name}-data"
        directory.mkdir(parents=True, exist_ok=True)
        argv = [
            REDIS_SERVER,
            "--bind",
            HOST,
            "--port",
            str(port),
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(directory),
            "--protected-mode",
            "yes",
        ]
        super().__init__(name, argv, port, log_dir, {})
        deadline = time.monotonic() + 30
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"{name} exited early; see {self.log_path}")
            try:
                if self.command("PING") == b"+PONG\r\n":
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{name} did not answer PING within 30 s")
            time.sleep(0.05)

    def database(self, number: int) -> str:
        """The URL of one of its databases (a fleet of its own for each case)."""
        return f"redis://{HOST}:{self.port}/{number}"

    def command(self, line: str) -> bytes:
        """One inline command's whole reply, raw (enough for PING and INFO; no client library needed)."""
        with socket.create_connection((HOST, self.port), timeout=10) as connection:
            connection.sendall(line.encode() + b"\r\n")
            reply = bytearray()
            while True:
                chunk = connection.recv(65536)
                if not chunk:
                    break
                reply += chunk
                if reply[:1] != b"$":
                    if reply.endswith(b"\r\n"):
                        break
                    continue
                head = reply.find(b"\r\n")
                if head > 0 and len(reply) >= head + 2 + int(reply[1:head]) + 2:
                    break
            return bytes(reply)

    def info(self, section: str) -> dict[str, str]:
        """``INFO section`` as a dict of its fields."""
        fields: dict[str, str] = {}
        for line in self.command(f"INFO {section}").decode().splitlines()[1:]:
            name, sep, value = line.partition(":")
            if sep:
                fields[name] = value
        return fields


class JupyterServer(ChildServer):
    """``jupyter server`` with a token on a free loopback port (default settings otherwise)."""

    stop_signal = signal.SIGTERM  # SIGINT makes it ask for confirmation on its terminal

    def __init__(self, log_dir: Path) -> None:
        port = free_port()
        self.token = secrets.token_hex(16)
        root = log_dir / "jupyter-server-root"
        root.mkdir(parents=True, exist_ok=True)
        runtime = log_dir / "jupyter-server-runtime"
        runtime.mkdir(parents=True, exist_ok=True)
        argv = [
            sys.executable,
            "-m",
            "jupyter_server",
            "--no-browser",
            "--allow-root",
            f"--ServerApp.ip={HOST}",
            f"--ServerApp.port={port}",
            "--ServerApp.port_retries=0",
            f"--IdentityProvider.token={self.token}",
            f"--ServerApp.root_dir={root}",
        ]
        super().__init__(
            "jupyter-server", argv, port, log_dir, {"JUPYTER_RUNTIME_DIR": str(runtime)}
        )
        self.wait_http("/api/kernelspecs", headers=self.headers)

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"token {self.token}"}

    def spawn(self, spec: str = "python3") -> str:
        response = requests.post(
            f"{self.url}/api/kernels", json={"name": spec}, headers=self.headers, timeout=120
        )
        response.raise_for_status()
        kernel_id: str = response.json()["id"]
        return kernel_id

    def shutdown(self, kernel_id: str) -> None:
        requests.delete(f"{self.url}/api/kernels/{kernel_id}", headers=self.headers, timeout=60)

    def channels_url(self, kernel_id: str, session_id: str) -> str:
        return (
            f"ws://{HOST}:{self.port}/api/kernels/{kernel_id}/channels"
            f"?session_id={session_id}&token={self.token}"
        )


class DirectKernel:
    """
    A python3 kernel started by jupyter_client in this process (for the direct client, or the forwarder);
    ``encryption`` is jupyter_client's ``transport_encryption`` (``auto``: CurveZMQ, as the relay's kernels
    have by default, when the kernelspec declares it).
    """

    def __init__(self, log_dir: Path, encryption: str = "disabled") -> None:
        from jupyter_client.manager import KernelManager

        runtime = log_dir / "direct-runtime"
        runtime.mkdir(parents=True, exist_ok=True)
        self.manager = KernelManager(
            kernel_name="python3",
            connection_file=str(runtime / f"kernel-{secrets.token_hex(4)}.json"),
            transport_encryption=encryption,
        )
        self.manager.start_kernel()
        client = self.manager.blocking_client()
        client.start_channels()
        client.wait_for_ready(timeout=120)
        client.stop_channels()
        self.connection_info: dict[str, Any] = json.loads(
            Path(self.manager.connection_file).read_text()
        )

    @property
    def pid(self) -> int | None:
        provisioner = self.manager.provisioner
        process = getattr(provisioner, "process", None)
        return getattr(process, "pid", None)

    def stop(self) -> None:
        self.manager.shutdown_kernel(now=False)


class Forwarder:
    """:mod:`bench.forwarder` in a child process, on a kernel's shell and iopub sockets."""

    def __init__(self, connection_info: dict[str, Any], pass_iopub: bool = False) -> None:
        ip = connection_info["ip"]
        shell = f"tcp://{ip}:{connection_info['shell_port']}"
        iopub = f"tcp://{ip}:{connection_info['iopub_port']}"
        # A kernel's CurveZMQ key pair, if it has one: the forwarder's sockets are Curve clients with it.
        keys = {
            f"FORWARDER_{key.upper()}": str(connection_info[key])
            for key in ("curve_publickey", "curve_secretkey")
            if connection_info.get(key)
        }
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench.forwarder",
                shell,
                iopub,
                *(["--iopub"] if pass_iopub else []),
            ],
            stdout=subprocess.PIPE,
            text=True,
            cwd=Path(__file__).resolve().parent.parent,
            env={**os.environ, **keys},
            start_new_session=True,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line.strip().isdigit():
            self.stop()
            raise RuntimeError(f"the forwarder did not start (it printed {line!r})")
        self.port = int(line)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(10)
        if self.process.stdout is not None:
            self.process.stdout.close()

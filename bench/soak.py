"""
``python -m bench.soak``: a long run of mixed traffic with churn against a real relay process.

Workers (threads), all on loopback:

- *watchers*: socket.io clients joined to a long-lived kernel's iopub for the whole run; each counts
  the output lines it receives.
- *driver*: runs ``print`` loops on the long-lived kernel; after each, every watcher and the driver
  itself must have received every line (the difference is "messages lost").
- *client churn*: clients join the long-lived kernel (shell + iopub), run code, check its output, leave.
- *kernel churn*: spawn a kernel, run code on it, shut it down, again and again.
- *REST*: ``/api/kernels``, ``/api/kernelspecs``, ``/api/health`` and ``/metrics`` in a loop.
- *buffers*: a kernel of its own publishes a display with a 1 MB binary buffer, again and again, to a raw
  socket.io reader (:class:`bench.clients.RelayClient`) that checks each arrives whole. The relay must
  free each buffer once sent: its RSS at the end tells.

At the end it prints requests served, errors, messages lost (must be 0), and the relay's RSS and open
fds after warm-up and at the end, then one JSON line with the same numbers. The exit status is 1 when
anything was lost or failed. ``--minutes`` (default 30) sets the length; ``--seconds`` overrides it for
smoke runs.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import tempfile
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psutil
import requests
import socketio

from bench.clients import RelayClient
from bench.scenarios import BUFFER_CODE, iopub_ready, wait_for
from bench.sio_order import in_arrival_order

HOST = "127.0.0.1"
#: The binary buffer the *buffers* worker has its kernel publish each turn.
BUFFER_BYTES = 1_000_000


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


def wait_port(port: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((HOST, port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"the relay did not listen on {port}")


@dataclass
class Tally:
    """Counters shared by the workers."""

    requests: int = 0
    executes: int = 0
    messages_expected: int = 0
    """Stream lines and binary buffers the clients should receive, each counted once."""
    lost: int = 0
    errors: list[str] = field(default_factory=list)
    spawned: int = 0
    clients_joined: int = 0
    buffers: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, **counts: int) -> None:
        with self.lock:
            for name, value in counts.items():
                setattr(self, name, getattr(self, name) + value)

    def error(self, where: str, exc: BaseException) -> None:
        with self.lock:
            self.errors.append(f"{where}: {type(exc).__name__}: {exc}")


class Client:
    """A python-socketio client on some channels of a kernel that collects iopub stream text."""

    def __init__(self, url: str, kernel_id: str, channels: tuple[str, ...]) -> None:
        self.kernel_id = kernel_id
        self.text: dict[str, list[str]] = {}
        self.replies: dict[str, dict[str, Any]] = {}
        self.idle: set[str] = set()
        self.cond = threading.Condition()
        self.sio = in_arrival_order(socketio.Client(reconnection=False))
        if "iopub" in channels:
            self.sio.on("msg", self._iopub, namespace=f"/iopub/{kernel_id}")
        if "shell" in channels:
            self.sio.on("msg", self._shell, namespace=f"/shell/{kernel_id}")
        self.sio.connect(
            url,
            namespaces=[f"/{channel}/{kernel_id}" for channel in channels],
            transports=["websocket"],
            wait_timeout=30,
        )

    def _iopub(self, message: dict[str, Any]) -> None:
        parent = message.get("parent_header", {}).get("msg_id", "")
        with self.cond:
            if message["header"]["msg_type"] == "stream":
                self.text.setdefault(parent, []).append(message["content"]["text"])
            elif message["content"].get("execution_state") == "idle":
                self.idle.add(parent)
            self.cond.notify_all()

    def _shell(self, message: dict[str, Any]) -> None:
        with self.cond:
            self.replies[message["parent_header"].get("msg_id", "")] = message
            self.cond.notify_all()

    def execute(self, code: str, timeout: float = 120.0) -> str:
        msg_id = uuid.uuid4().hex
        self.sio.emit(
            "msg",
            {
                "header": {"msg_id": msg_id, "msg_type": "execute_request"},
                "content": {"code": code},
            },
            namespace=f"/shell/{self.kernel_id}",
        )
        self.wait(lambda: msg_id in self.replies and msg_id in self.idle, timeout)
        return msg_id

    def wait(self, predicate: Callable[[], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with self.cond:
            while not predicate():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError("no answer in time")
                self.cond.wait(remaining)

    def lines(self, msg_id: str, marker: str) -> int:
        with self.cond:
            return "".join(self.text.get(msg_id, [])).count(marker)

    def close(self) -> None:
        self.sio.disconnect()


def relay_stats(pid: int) -> dict[str, int]:
    process = psutil.Process(pid)
    return {
        "rss_bytes": process.memory_info().rss,
        "fds": process.num_fds(),
        "threads": process.num_threads(),
    }


def spawn(url: str, tally: Tally) -> str:
    response = requests.get(f"{url}/spawn/python3", timeout=120)
    response.raise_for_status()
    tally.add(requests=1, spawned=1)
    kernel_id: str = response.json()["id"]
    return kernel_id


def shutdown(url: str, kernel_id: str, tally: Tally) -> None:
    requests.get(f"{url}/shutdown/{kernel_id}", timeout=120).raise_for_status()
    tally.add(requests=1)


def run_workers(url: str, deadline: float, tally: Tally, watchers: int) -> None:
    main_kernel = spawn(url, tally)
    watching = [Client(url, main_kernel, ("iopub",)) for _ in range(watchers)]
    driver = Client(url, main_kernel, ("shell", "iopub"))
    stop = threading.Event()

    def loop(name: str, body: Callable[[int], None], pause: float) -> Callable[[], None]:
        def run() -> None:
            turn = 0
            while not stop.is_set() and time.monotonic() < deadline:
                turn += 1
                try:
                    body(turn)
                except Exception as exc:
                    tally.error(name, exc)
                    traceback.print_exc()
                stop.wait(pause)

        return run

    def drive(turn: int) -> None:
        marker, count = f"drive{turn}-", 50
        msg_id = driver.execute(f"for i in range({count}): print('{marker}', i)")
        tally.add(executes=1, messages_expected=count * (len(watching) + 1))
        for client in [driver, *watching]:
            try:
                client.wait(lambda c=client: c.lines(msg_id, marker) >= count, 30)
            except TimeoutError:
                pass
            tally.add(lost=count - client.lines(msg_id, marker))

    def churn_clients(turn: int) -> None:
        client = Client(url, main_kernel, ("shell", "iopub"))
        tally.add(clients_joined=1)
        try:
            msg_id = client.execute(f"print('churn{turn}')")
            tally.add(
                executes=1,
                messages_expected=1,
                lost=1 - min(1, client.lines(msg_id, f"churn{turn}")),
            )
        finally:
            client.close()

    def churn_kernels(turn: int) -> None:
        kernel_id = spawn(url, tally)
        try:
            client = Client(url, kernel_id, ("shell", "iopub"))
            tally.add(clients_joined=1)
            try:
                msg_id = client.execute(f"print('kernel{turn}')")
                tally.add(
                    executes=1,
                    messages_expected=1,
                    lost=1 - min(1, client.lines(msg_id, f"kernel{turn}")),
                )
            finally:
                client.close()
        finally:
            shutdown(url, kernel_id, tally)

    buffer_kernel = spawn(url, tally)
    reader = RelayClient(urlsplit(url).port or 80, buffer_kernel, ("shell", "iopub"))
    iopub_ready(reader)

    def publish_buffers(turn: int) -> None:
        code = BUFFER_CODE.format(n=BUFFER_BYTES)
        msg_id = reader.send("shell", "execute_request", {"code": code})
        message = wait_for(
            reader,
            lambda m: (
                m.channel == "iopub" and m.parent_id == msg_id and m.msg_type == "display_data"
            ),
        )
        whole = [len(buffer) for buffer in message.buffers] == [BUFFER_BYTES]
        tally.add(executes=1, buffers=1, messages_expected=1, lost=0 if whole else 1)

    def rest(turn: int) -> None:
        for path in ("/api/kernels", "/api/kernelspecs", "/api/health", "/metrics"):
            requests.get(f"{url}{path}", timeout=60).raise_for_status()
            tally.add(requests=1)

    threads = [
        threading.Thread(target=loop("driver", drive, 0.2)),
        threading.Thread(target=loop("client churn", churn_clients, 0.1)),
        threading.Thread(target=loop("kernel churn", churn_kernels, 0.5)),
        threading.Thread(target=loop("rest", rest, 0.2)),
        threading.Thread(target=loop("buffers", publish_buffers, 0.2)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for client in [driver, *watching]:
        client.close()
    reader.close()
    shutdown(url, main_kernel, tally)
    shutdown(url, buffer_kernel, tally)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.soak", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--minutes", type=float, default=30.0, help="length of the run (default 30)"
    )
    parser.add_argument("--seconds", type=float, default=None, help="length in seconds (overrides)")
    parser.add_argument("--watchers", type=int, default=3, help="long-lived iopub clients")
    args = parser.parse_args(argv)
    duration = args.seconds if args.seconds is not None else args.minutes * 60

    port = free_port()
    runtime = tempfile.mkdtemp(prefix="soak-runtime-")
    log_path = Path(runtime) / "relay.log"
    with log_path.open("wb") as log:
        relay = psutil.Popen(
            [sys.executable, "-m", "twisted", "kernel-relay", "--port", str(port)],
            stdout=log,
            stderr=log,
            env={**os.environ, "JUPYTER_RUNTIME_DIR": runtime},
        )
        url = f"http://{HOST}:{port}"
        tally = Tally()
        try:
            wait_port(port)
            # Warm up: one kernel, one client, so start figures include what is allocated once.
            warm = spawn(url, tally)
            Client(url, warm, ("shell", "iopub")).close()
            shutdown(url, warm, tally)
            time.sleep(1)
            start = relay_stats(relay.pid)
            began = time.monotonic()
            run_workers(url, began + duration, tally, args.watchers)
            time.sleep(2)
            end = relay_stats(relay.pid)
            elapsed = time.monotonic() - began
        finally:
            relay.terminate()
            relay.wait(60)
    summary = {
        "seconds": round(elapsed, 1),
        "requests_served": tally.requests + tally.executes,
        "rest_requests": tally.requests,
        "executes": tally.executes,
        "kernels_spawned": tally.spawned,
        "clients_joined": tally.clients_joined,
        "buffers_relayed": tally.buffers,
        "messages_expected": tally.messages_expected,
        "messages_lost": tally.lost,
        "errors": len(tally.errors),
        "rss_start_mb": round(start["rss_bytes"] / 2**20, 1),
        "rss_end_mb": round(end["rss_bytes"] / 2**20, 1),
        "fds_start": start["fds"],
        "fds_end": end["fds"],
        "threads_start": start["threads"],
        "threads_end": end["threads"],
    }
    print(f"soak: {summary['seconds']} s of mixed traffic against the relay")
    print(
        f"  requests served {summary['requests_served']} ({tally.requests} REST, "
        f"{tally.executes} executes); kernels spawned {tally.spawned}; clients joined "
        f"{tally.clients_joined}; {tally.buffers} binary buffers of {BUFFER_BYTES:,} bytes"
    )
    print(f"  errors {len(tally.errors)}; messages lost {tally.lost} of {tally.messages_expected}")
    print(
        f"  relay RSS {summary['rss_start_mb']} -> {summary['rss_end_mb']} MiB; "
        f"open fds {start['fds']} -> {end['fds']}; threads {start['threads']} -> {end['threads']} "
        "(each new thread-pool thread holds 3 fds of its own for its life)"
    )
    for error in tally.errors[:20]:
        print(f"  error: {error}")
    print(json.dumps(summary))
    return 1 if tally.lost or tally.errors else 0


if __name__ == "__main__":
    raise SystemExit(main())

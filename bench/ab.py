"""
``python -m bench.ab NAME=SRC [NAME=SRC ...] [--rounds N] [--per N] [--floor]``: the relay's CPU per kernel_info
request, of several source trees (or option sets) side by side, in one sitting.

Each ``NAME=SRC`` is one relay whose ``PYTHONPATH`` is ``SRC`` (a checkout's ``src``, e.g. one made by ``git
archive main src | tar -x -C /tmp/main``), optionally followed by relay options, each after a ``|``
(``B=src|--kernel-encryption|disabled``). Each relay gets two kernels: one for a socket.io client on the shell
namespace, one for a Jupyter WebSocket (v1) client; ``--floor`` adds the forwarder on a kernel encrypted as the
relay's are (:data:`bench.run.FLOOR_ENCRYPTION`). The targets take turns of ``--per`` requests, ``--rounds``
times, every other round in reverse order, and each turn counts its server process's CPU (every thread, and the
main thread alone): code costs, which the load of a shared machine moves less than it moves times. A change
worth a few per cent shows only over several runs with the order of the relays swapped (the relay started
first tends to differ by a few per cent, whatever its code).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path

from bench.clients import BenchClient, ForwarderClient, JupyterServerClient, RelayClient
from bench.processes import HOST, DirectKernel, Forwarder, RelayServer, cpu_seconds
from bench.run import FLOOR_ENCRYPTION
from bench.scenarios import wait_reply


def main_thread_seconds(pid: int) -> float:
    """CPU time of the process's main thread (its reactor's: the relay's Python), from Linux's schedstat."""
    with open(f"/proc/{pid}/task/{pid}/schedstat") as stats:
        return int(stats.read().split()[0]) / 1e9


def _round_trips(client: BenchClient, count: int) -> None:
    for _ in range(count):
        wait_reply(client, client.send("shell", "kernel_info_request", {}))


def _start(
    variants: list[str], floor: bool, logs: Path, cleanups: list[Callable[[], None]]
) -> dict[str, tuple[BenchClient, int]]:
    """The targets: name -> (client, its server's pid)."""
    targets: dict[str, tuple[BenchClient, int]] = {}
    path = os.environ.get("PYTHONPATH")
    for variant in variants:
        name, _, spec = variant.partition("=")
        source, *options = spec.split("|")
        os.environ["PYTHONPATH"] = str(
            Path(source).resolve()
        )  # the relay's own source (a child inherits it)
        try:
            relay = RelayServer(logs, "--ping-interval", "600", *options, name=f"relay-{name}")
        finally:
            if path is None:
                del os.environ["PYTHONPATH"]
            else:
                os.environ["PYTHONPATH"] = path
        cleanups.append(relay.stop)
        shell_kernel, jupyter_kernel = relay.spawn(), relay.spawn()
        targets[f"{name} socket.io"] = (
            RelayClient(relay.port, shell_kernel, ("shell",)),
            relay.pid,
        )
        url = f"ws://{HOST}:{relay.port}/api/kernels/{jupyter_kernel}/channels"
        jupyter = JupyterServerClient(f"{url}?session_id={uuid.uuid4().hex}", v1=True)
        targets[f"{name} jupyter"] = (jupyter, relay.pid)
    if floor:
        kernel = DirectKernel(logs, FLOOR_ENCRYPTION)
        cleanups.append(kernel.stop)
        forwarder = Forwarder(kernel.connection_info)
        cleanups.append(forwarder.stop)
        client = ForwarderClient(forwarder.port, kernel.connection_info)
        targets["forwarder"] = (client, forwarder.process.pid)
    return targets


def measure(
    targets: dict[str, tuple[BenchClient, int]], rounds: int, per: int
) -> dict[str, tuple[list[float], list[float]]]:
    """Per target, the µs of CPU per request of each turn: the whole process's, and its main thread's."""
    for client, _ in targets.values():
        _round_trips(client, 20)
    turns: dict[str, tuple[list[float], list[float]]] = {name: ([], []) for name in targets}
    order = list(targets.items())
    for index in range(rounds):
        for name, (client, pid) in order if index % 2 == 0 else order[::-1]:
            process, main = cpu_seconds(pid), main_thread_seconds(pid)
            _round_trips(client, per)
            turns[name][0].append((cpu_seconds(pid) - process) / per * 1e6)
            turns[name][1].append((main_thread_seconds(pid) - main) / per * 1e6)
    return turns


def report(turns: dict[str, tuple[list[float], list[float]]]) -> list[str]:
    """A line per target: mean and median µs per request, the main thread's, and the ratio to the floor."""
    floor = statistics.fmean(turns["forwarder"][0]) if "forwarder" in turns else None
    lines = []
    for name, (process, main) in turns.items():
        mean = statistics.fmean(process)
        line = (
            f"{name:24s} {mean:6.1f} us (median {statistics.median(process):6.1f}), "
            f"main thread {statistics.fmean(main):6.1f} us"
        )
        lines.append(line + (f", {mean / floor:.2f} x the forwarder" if floor else ""))
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.ab", description=__doc__.split("\n\n")[1]
    )
    parser.add_argument("variants", nargs="+", metavar="NAME=SRC[|OPTION...]")
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--per", type=int, default=50, help="requests per turn")
    parser.add_argument("--floor", action="store_true", help="add the forwarder (the floor)")
    args = parser.parse_args(argv)
    if any("=" not in variant for variant in args.variants):
        parser.error("each variant is NAME=SRC")
    cleanups: list[Callable[[], None]] = []
    clients: list[BenchClient] = []
    try:
        with tempfile.TemporaryDirectory(prefix="bench-ab-") as logs:
            targets = _start(args.variants, args.floor, Path(logs), cleanups)
            clients = [client for client, _ in targets.values()]
            for line in report(measure(targets, args.rounds, args.per)):
                print(line, flush=True)
            print(f"load average {os.getloadavg()}", flush=True)
            for client in clients:
                client.close()
            for stop in reversed(cleanups):
                stop()
            cleanups = []
    finally:
        for stop in reversed(cleanups):
            stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

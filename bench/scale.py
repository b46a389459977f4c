"""
Scale (issue 35): what each kernel costs an idle relay (threads, fds, RSS, idle CPU, the N-th spawn), kernels
started all at once, and the K x R grid: K kernels with one client each sending R execute requests a second,
on the relay's two fronts, Jupyter Server and direct ZeroMQ clients (the kernels' own share).
"""

from __future__ import annotations

import os
import statistics
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import psutil

from bench.clients import BenchClient, DirectClient, JupyterServerClient, RelayClient
from bench.processes import HOST, DirectKernel, JupyterServer, RelayServer, cpu_seconds
from bench.scenarios import percentile, progress, wait_reply

#: The relay's options in each footprint case.
MODES = {"off": ("--kernel-sandbox", "off"), "sandboxed": ("--kernel-sandbox", "required")}
#: Kernels are not started past this much free memory (the machine is shared): the report says how far it got.
MEMORY_RESERVE = 3 * 2**30
#: The grid's cells: an ``1+1`` and a cell printing about 1 KB.
CELLS = {"1+1": "1+1", "print_1kb": "print('x' * 1000)"}


@dataclass(frozen=True)
class ScaleSizes:
    footprint_kernels: tuple[int, ...]
    footprint_modes: tuple[str, ...]
    idle_seconds: float
    concurrent: tuple[int, ...]
    grid_kernels: tuple[int, ...]
    grid_rates: tuple[int, ...]
    grid_seconds: float
    grid_targets: tuple[str, ...]


FULL = ScaleSizes(
    footprint_kernels=(0, 50, 100, 200),
    footprint_modes=tuple(MODES),
    idle_seconds=10.0,
    concurrent=(20, 50),
    grid_kernels=(1, 8, 16, 32, 64),
    grid_rates=(10, 100),
    grid_seconds=20.0,
    grid_targets=("relay", "relay_jupyter", "jupyter_server", "direct"),
)
QUICK = ScaleSizes(
    footprint_kernels=(0, 2),
    footprint_modes=tuple(MODES),
    idle_seconds=1.0,
    concurrent=(2,),
    grid_kernels=(2,),
    grid_rates=(10,),
    grid_seconds=1.0,
    grid_targets=("relay", "relay_jupyter", "jupyter_server", "direct"),
)


def sizes(quick: bool) -> ScaleSizes:
    """QUICK or FULL, with fields overridden by ``BENCH_SCALE_<FIELD>`` (numbers or names, comma-separated)."""
    base = QUICK if quick else FULL
    changes: dict[str, Any] = {}
    for name, value in base.__dict__.items():
        given = os.environ.get(f"BENCH_SCALE_{name.upper()}")
        if given is None:
            continue
        if isinstance(value, tuple):
            items = [item.strip() for item in given.split(",") if item.strip()]
            named = name in ("grid_targets", "footprint_modes")
            changes[name] = tuple(item if named else int(item) for item in items)
        else:
            changes[name] = float(given)
    return replace(base, **changes)


def _sample(pid: int) -> dict[str, Any]:
    names = []
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/comm") as comm:
                names.append(comm.read().strip())
        except OSError:
            pass
    return {
        "threads": len(names),
        "zmq_threads": sum(name.startswith("ZMQbg") for name in names),
        "fds": len(os.listdir(f"/proc/{pid}/fd")),
        "rss": psutil.Process(pid).memory_info().rss,
    }


def _idle_cpu(pid: int, seconds: float) -> float:
    """The relay's CPU seconds per second while nothing happens."""
    before = cpu_seconds(pid)
    time.sleep(seconds)
    return (cpu_seconds(pid) - before) / seconds


def footprint(
    logs: Path, counts: tuple[int, ...], idle_seconds: float, modes: tuple[str, ...]
) -> dict[str, Any]:
    """Per mode, the relay at each count of kernels: threads, fds, RSS, idle CPU and the last spawn's time."""
    results: dict[str, Any] = {}
    for mode in modes:
        options = MODES[mode]
        relay = RelayServer(logs, *options, name=f"relay-scale-{mode}")
        rows: list[dict[str, Any]] = []
        kernels: list[str] = []
        try:
            for count in counts:
                last_spawn = None
                while len(kernels) < count:
                    if psutil.virtual_memory().available < MEMORY_RESERVE:
                        progress(f"footprint {mode}: memory is short at {len(kernels)} kernels")
                        break
                    started = time.perf_counter()
                    kernels.append(relay.spawn())
                    last_spawn = time.perf_counter() - started
                time.sleep(1.0)  # the last spawn's threads go back to waiting
                row = {
                    "kernels": len(kernels),
                    **_sample(relay.pid),
                    "idle_cpu": _idle_cpu(relay.pid, idle_seconds),
                    "last_spawn_s": last_spawn,
                }
                progress(f"footprint {mode}: {row}")
                rows.append(row)
                if len(kernels) < count:
                    break
        finally:
            _shutdown_all(relay, kernels)
            relay.stop()
        results[mode] = {"rows": rows, "per_kernel": _per_kernel(rows)}
    return results


def _per_kernel(rows: list[dict[str, Any]]) -> dict[str, float] | None:
    """
    Growth per kernel from the first row with kernels to the last (threads, fds, RSS bytes, idle CPU): the
    first kernel also brings what any kernel needs once (ZeroMQ's contexts are made when first needed).
    """
    with_kernels = [row for row in rows if row["kernels"]]
    first, last = (
        (with_kernels[0], with_kernels[-1]) if len(with_kernels) > 1 else (rows[0], rows[-1])
    )
    if last["kernels"] == first["kernels"]:
        return None
    n = last["kernels"] - first["kernels"]
    return {
        key: (last[key] - first[key]) / n
        for key in ("threads", "zmq_threads", "fds", "rss", "idle_cpu")
    }


def _shutdown_all(relay: RelayServer, kernels: list[str]) -> None:
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(relay.shutdown, kernels))
    kernels.clear()


def _spawn_at_once(relay: RelayServer, count: int, kernels: list[str]) -> tuple[list[str], float]:
    """Ask for ``count`` kernels at once; the ids go to ``kernels``; returns the failures and the time taken."""
    failures: list[str] = []

    def one() -> None:
        try:
            kernels.append(relay.spawn())
        except Exception as error:
            failures.append(repr(error)[:200])

    started = time.perf_counter()
    threads = [threading.Thread(target=one) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return failures, time.perf_counter() - started


def concurrent_spawns(logs: Path, counts: tuple[int, ...]) -> dict[str, Any]:
    """N spawns asked at once of a fresh relay: time until all are ready, and how many failed."""
    results: dict[str, Any] = {}
    for count in counts:
        relay = RelayServer(logs, "--kernel-sandbox", "off", name=f"relay-concurrent-{count}")
        kernels: list[str] = []
        try:
            failures, seconds = _spawn_at_once(relay, count, kernels)
            results[str(count)] = {
                "count": count,
                "ready": len(kernels),
                "failures": len(failures),
                "errors": failures[:3],
                "seconds": seconds,
            }
            progress(f"concurrent spawns: {results[str(count)]}")
        finally:
            _shutdown_all(relay, kernels)
            relay.stop()
    return results


# -- the K x R grid ------------------------------------------------------------------------------


def _drive(
    client: BenchClient, code: str, rate: float, seconds: float, drain: float
) -> dict[str, Any]:
    """One client: an execute request every 1/rate s for ``seconds``, then replies awaited up to ``drain`` s."""
    sent: dict[str, float] = {}
    latencies: list[float] = []
    errors = 0
    dropped = False
    start = time.perf_counter()
    next_send = start
    stop_sending = start + seconds
    deadline = stop_sending + drain
    content = {"code": code, "silent": False, "store_history": False}
    try:
        while True:
            now = time.perf_counter()
            if now >= deadline or (now >= stop_sending and len(latencies) + errors >= len(sent)):
                break
            if now >= next_send and now < stop_sending:
                sent[client.send("shell", "execute_request", content)] = time.perf_counter()
                next_send += 1.0 / rate
                continue
            wait = (next_send if now < stop_sending else deadline) - now
            message = client.recv(max(0.001, min(wait, 0.5)))
            if message is None or message.channel != "shell":
                continue
            asked = sent.get(message.parent_id or "")
            if asked is None:
                continue
            if message.content.get("status") == "ok":
                latencies.append(time.perf_counter() - asked)
            else:
                errors += 1
    except Exception:
        dropped = True
    return {"requests": len(sent), "latencies": latencies, "errors": errors, "dropped": dropped}


class _Target:
    """K kernels of one server, and how to open a client on each."""

    def __init__(
        self,
        name: str,
        kernels: list[Any],
        client: Callable[[Any], BenchClient],
        pid: int | None,
    ) -> None:
        self.name, self.kernels, self.client, self.pid = name, kernels, client, pid


def _cell(target: _Target, code: str, rate: int, seconds: float) -> dict[str, Any]:
    clients: list[BenchClient] = []
    failed_connects = 0
    for kernel in target.kernels:
        try:
            client = target.client(kernel)
            wait_reply(client, client.send("shell", "kernel_info_request", {}), 60)
            clients.append(client)
        except Exception:
            failed_connects += 1
    before = cpu_seconds(target.pid) if target.pid else None
    drain = max(5.0, seconds)
    with ThreadPoolExecutor(max(1, len(clients))) as pool:
        runs = list(pool.map(lambda c: _drive(c, code, rate, seconds, drain), clients))
    cpu = cpu_seconds(target.pid) - before if target.pid and before is not None else None
    for client in clients:
        try:
            client.close()
        except Exception:
            pass
    latencies = [value for run in runs for value in run["latencies"]]
    return {
        "kernels": len(target.kernels),
        "rate": rate,
        "requests": sum(run["requests"] for run in runs),
        "replies": len(latencies),
        "errors": sum(run["errors"] for run in runs) + failed_connects,
        "dropped": sum(run["dropped"] for run in runs),
        "p50": statistics.median(latencies) if latencies else None,
        "p99": percentile(latencies, 0.99) if latencies else None,
        "server_cpu_s": cpu,
    }


def grid(logs: Path, sizes: ScaleSizes) -> dict[str, Any]:
    """Per target, per cell code, per 'KxR': one cell's figures (see :func:`_cell`)."""
    results: dict[str, Any] = {}
    top = max(sizes.grid_kernels)
    wanted = set(sizes.grid_targets)
    if {"relay", "relay_jupyter"} & wanted:
        relay = RelayServer(
            logs, "--kernel-sandbox", "off", "--ping-interval", "600", name="relay-grid"
        )
        kernels: list[str] = []
        try:
            kernels += [relay.spawn() for _ in range(top)]
            port = relay.port
            if "relay" in wanted:
                results["relay"] = _grid_of(
                    _Target(
                        "relay", kernels, lambda k: RelayClient(port, k, ("shell",)), relay.pid
                    ),
                    sizes,
                )
            if "relay_jupyter" in wanted:

                def jupyter_front(kernel: str) -> BenchClient:
                    url = f"ws://{HOST}:{port}/api/kernels/{kernel}/channels?session_id={uuid.uuid4().hex}"
                    return JupyterServerClient(url, v1=True)

                results["relay_jupyter"] = _grid_of(
                    _Target("relay_jupyter", kernels, jupyter_front, relay.pid), sizes
                )
        finally:
            _shutdown_all(relay, kernels)
            relay.stop()
    if "jupyter_server" in wanted:
        jupyter = JupyterServer(logs)
        js_kernels: list[str] = []
        try:
            js_kernels += [jupyter.spawn() for _ in range(top)]

            def js_client(kernel: str) -> BenchClient:
                return JupyterServerClient(jupyter.channels_url(kernel, uuid.uuid4().hex))

            results["jupyter_server"] = _grid_of(
                _Target("jupyter_server", js_kernels, js_client, jupyter.pid), sizes
            )
        finally:
            with ThreadPoolExecutor(8) as pool:
                list(pool.map(jupyter.shutdown, js_kernels))
            jupyter.stop()
    if "direct" in wanted:
        direct: list[DirectKernel] = []
        try:
            direct += [DirectKernel(logs) for _ in range(top)]
            results["direct"] = _grid_of(
                _Target(
                    "direct",
                    [kernel.connection_info for kernel in direct],
                    lambda info: DirectClient(info, ("shell",)),
                    None,
                ),
                sizes,
            )
        finally:
            for kernel in direct:
                kernel.stop()
    return results


def _grid_of(target: _Target, sizes: ScaleSizes) -> dict[str, Any]:
    cells: dict[str, Any] = {}
    for name, code in CELLS.items():
        for k in sizes.grid_kernels:
            for rate in sizes.grid_rates:
                sub = _Target(target.name, target.kernels[:k], target.client, target.pid)
                cell = _cell(sub, code, rate, sizes.grid_seconds)
                cells[f"{name} {k}x{rate}"] = {"cell": name, **cell}
                progress(f"grid {target.name} {name} {k}x{rate}: {_brief(cell)}")
    return cells


def _brief(cell: dict[str, Any]) -> str:
    p50, p99 = cell["p50"], cell["p99"]
    return (
        f"{cell['replies']}/{cell['requests']} replies, {cell['errors']} errors, {cell['dropped']} dropped, "
        f"p50 {_ms(p50)}, p99 {_ms(p99)}"
    )


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 1000:.1f} ms"


def scale(logs: Path, sizes: ScaleSizes) -> dict[str, Any]:
    """The footprint, concurrent spawns and the grid, one after the other."""
    return {
        "footprint": footprint(
            logs, sizes.footprint_kernels, sizes.idle_seconds, sizes.footprint_modes
        ),
        "concurrent_spawns": concurrent_spawns(logs, sizes.concurrent),
        "grid": grid(logs, sizes),
    }


# -- report ----------------------------------------------------------------------------------------


def markdown_lines(results: dict[str, Any]) -> list[str]:
    """The report's sections on scale."""
    data = results.get("scale")
    if not data:
        return []
    lines = [
        "",
        "## Scale: the relay's footprint by number of idle kernels",
        "",
        "| sandbox | kernels | threads (ZeroMQ's) | fds | RSS | idle CPU | the last spawn |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for mode, entry in data["footprint"].items():
        for row in entry["rows"]:
            spawn = row["last_spawn_s"]
            lines.append(
                f"| {mode} | {row['kernels']} | {row['threads']} ({row['zmq_threads']}) | {row['fds']} | "
                f"{row['rss'] / 2**20:.1f} MB | {row['idle_cpu'] * 100:.2f} % | "
                f"{'' if spawn is None else f'{spawn:.2f} s'} |"
            )
        per = entry["per_kernel"]
        if per:
            lines.append(
                f"| {mode}: per kernel | | {per['threads']:.2f} ({per['zmq_threads']:.2f}) | {per['fds']:.1f} | "
                f"{per['rss'] / 1024:.0f} KB | {per['idle_cpu'] * 100:.4f} % | |"
            )
    lines += [
        "",
        "## Scale: kernels asked for all at once (sandbox off)",
        "",
        "| at once | ready | failures | time until all ready |",
        "|---:|---:|---:|---:|",
    ]
    for entry in data["concurrent_spawns"].values():
        lines.append(
            f"| {entry['count']} | {entry['ready']} | {entry['failures']} | {entry['seconds']:.1f} s |"
        )
    lines += [
        "",
        "## Scale: K kernels x R execute requests/s, one client per kernel",
        "",
        "| target | cell | K x R | requests | replies | errors | dropped | p50 | p99 | server CPU s |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    firsts: list[str] = []
    for target, cells in data["grid"].items():
        first = None
        for key, cell in cells.items():
            cpu = cell["server_cpu_s"]
            lines.append(
                f"| {target} | {cell['cell']} | {key.split()[-1]} | {cell['requests']} | {cell['replies']} | "
                f"{cell['errors']} | {cell['dropped']} | {_ms(cell['p50'])} | {_ms(cell['p99'])} | "
                f"{'' if cpu is None else f'{cpu:.2f}'} |"
            )
            if first is None and (cell["errors"] or cell["dropped"]):
                first = key
        firsts.append(f"{target}: {first or 'none'}")
    lines += ["", "First cell with errors or dropped connections: " + "; ".join(firsts) + "."]
    return lines

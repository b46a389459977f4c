"""The measurements. Each takes ready targets and returns plain JSON-able results (times in seconds)."""

from __future__ import annotations

import asyncio
import statistics
import time
import uuid
from collections.abc import Callable
from typing import Any

import psutil
import requests

from bench.clients import BenchClient, DirectClient, JupyterServerClient, RelayClient
from bench.processes import JupyterServer, RelayServer, cpu_seconds
from bench.swarm import IDLE, STREAM, SwarmClient, close_swarm, connect_swarm

ClientFactory = Callable[[tuple[str, ...]], BenchClient]

FLOOD_CODE = """\
k = get_ipython().kernel
p = k.get_parent("shell")
for i in range({n}):
    k.session.send(k.iopub_socket, "stream", {{"name": "stdout", "text": "%d\\n" % i}}, parent=p)
"""

DISPLAY_CODE = """\
from IPython.display import display
display({{"text/plain": "x" * {n}}}, raw=True)
"""

BUFFER_CODE = """\
k = get_ipython().kernel
k.session.send(k.iopub_socket, "display_data", {{"data": {{"text/plain": "buffer"}}, "metadata": {{}}}},
               parent=k.get_parent("shell"), buffers=[b"\\0" * {n}])
"""


def progress(text: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}]   {text}", flush=True)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


def summary(values: list[float]) -> dict[str, float]:
    return {
        "n": len(values),
        "median": statistics.median(values),
        "p99": percentile(values, 0.99),
        "mean": statistics.fmean(values),
        "min": min(values),
    }


def wait_for(client: BenchClient, predicate: Callable[[Any], bool], timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"{client.name}: no matching message within {timeout} s")
        message = client.recv(left)
        if message is not None and predicate(message):
            return message


def wait_reply(client: BenchClient, msg_id: str, timeout: float = 60.0) -> Any:
    return wait_for(client, lambda m: m.channel == "shell" and m.parent_id == msg_id, timeout)


def iopub_ready(client: BenchClient, timeout: float = 60.0) -> None:
    """Ask kernel_info until an iopub message arrives (ZMQ subscriptions take a moment)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        client.send("shell", "kernel_info_request", {})
        end = time.monotonic() + 0.5
        while time.monotonic() < end:
            message = client.recv(max(0.01, end - time.monotonic()))
            if message is not None and message.channel == "iopub":
                # Drain what is left of this exchange.
                while client.recv(0.2) is not None:
                    pass
                return
    raise TimeoutError(f"{client.name}: iopub never delivered")


def round_trip(
    factories: dict[str, ClientFactory],
    msg_type: str,
    content: dict[str, Any],
    count: int,
    blocks: int,
    servers: dict[str, int] | None = None,
) -> dict[str, Any]:
    """
    ``count`` sequential request/reply pairs per target, interleaved in ``blocks`` rounds; every other
    round takes the targets in reverse order, so that none always goes first.

    For a target in ``servers`` (its server's process id), ``server_cpu`` is that process's CPU time per
    request, counted over its own turns only: what its code costs, which scheduling noise moves far less
    than it moves the times.
    """
    servers = servers or {}
    clients = {name: factory(("shell",)) for name, factory in factories.items()}
    samples: dict[str, list[float]] = {name: [] for name in clients}
    cpu = dict.fromkeys(servers, 0.0)
    try:
        for client in clients.values():
            for _ in range(10):
                wait_reply(client, client.send("shell", msg_type, content))
        per_block = max(1, count // blocks)
        order = list(clients.items())
        for block in range(blocks):
            for name, client in order if block % 2 == 0 else order[::-1]:
                pid = servers.get(name)
                used = cpu_seconds(pid) if pid is not None else 0.0
                for _ in range(per_block):
                    start = time.perf_counter()
                    wait_reply(client, client.send("shell", msg_type, content))
                    samples[name].append(time.perf_counter() - start)
                if pid is not None:
                    cpu[name] += cpu_seconds(pid) - used
    finally:
        for client in clients.values():
            client.close()
    results = {name: summary(values) for name, values in samples.items()}
    for name, used in cpu.items():
        if name in results:
            results[name]["server_cpu"] = used / results[name]["n"]
    return results


def _flood_once(client: BenchClient, count: int, silence: float = 15.0) -> dict[str, Any]:
    """
    One flood; ends at the kernel's idle status, or after ``silence`` s without a flood message.

    Through the relay, a loss is split in two: ``lost_in_relay`` (the relay forwarded more than its one
    client received) and the rest, which never reached the relay (a kernel's iopub socket drops what
    its queue of 1,000 messages to a subscriber cannot hold).
    """
    relay = client if isinstance(client, RelayClient) else None
    forwarded, events = (relay.forwarded(), relay.events) if relay is not None else (0, 0)
    start = time.perf_counter()
    msg_id = client.send(
        "shell", "execute_request", {"code": FLOOD_CODE.format(n=count), "silent": False}
    )
    received = 0
    last = time.perf_counter()
    idle_seen = False
    while time.perf_counter() - last < silence:
        message = client.recv(1.0)
        if message is None or message.channel != "iopub" or message.parent_id != msg_id:
            continue
        last = time.perf_counter()
        if message.msg_type == "stream" and message.content.get("text", "").strip().isdigit():
            received += 1
        elif message.msg_type == "status" and message.content.get("execution_state") == "idle":
            idle_seen = True
            break
    elapsed = last - start
    while client.recv(0.2) is not None:
        pass
    result: dict[str, Any] = {
        "sent": count,
        "received": received,
        "lost": count - received,
        "idle_seen": idle_seen,
        "seconds": elapsed,
        "msgs_per_s": received / elapsed if elapsed > 0 else 0.0,
    }
    if relay is not None:
        result["lost_in_relay"] = (relay.forwarded() - forwarded) - (relay.events - events)
    return result


def flood(
    factories: dict[str, ClientFactory],
    floods: list[tuple[int, int]],
    servers: dict[str, int] | None = None,
) -> dict[str, Any]:
    """
    For each (size, repeats): the kernel publishes ``size`` stream messages as fast as it can, ``repeats``
    times per target, the targets taking turns; count what arrives and how fast (median rate). For a
    target in ``servers`` (its server's process id), ``server_cpu`` is that process's median CPU time per
    message the kernel published (a server that drops messages still spends time on them).
    """
    servers = servers or {}
    results: dict[str, Any] = {}
    clients = {name: factory(("shell", "iopub")) for name, factory in factories.items()}
    try:
        for client in clients.values():
            iopub_ready(client)
        for size, repeats in floods:
            runs: dict[str, list[dict[str, Any]]] = {name: [] for name in clients}
            for _ in range(repeats):
                for name, client in clients.items():
                    pid = servers.get(name)
                    used = cpu_seconds(pid) if pid is not None else 0.0
                    run = _flood_once(client, size)
                    if pid is not None:
                        run["server_cpu"] = (cpu_seconds(pid) - used) / size
                    runs[name].append(run)
                    progress(f"flood {size}: {name} {run}")
            for name, measured in runs.items():
                rates = [run["msgs_per_s"] for run in measured]
                results.setdefault(str(size), {})[name] = {
                    "msgs_per_s": statistics.median(rates),
                    "lost": max(run["lost"] for run in measured),
                    "lost_in_relay": max(run.get("lost_in_relay", 0) for run in measured),
                    "seconds": statistics.median(run["seconds"] for run in measured),
                    "runs": measured,
                }
                used = [run["server_cpu"] for run in measured if "server_cpu" in run]
                if used:
                    results[str(size)][name]["server_cpu"] = statistics.median(used)
    finally:
        for client in clients.values():
            client.close()
    return results


def large(factories: dict[str, ClientFactory], size: int, repeats: int) -> dict[str, Any]:
    """End-to-end time of one execute that makes the kernel publish ``size`` bytes on iopub."""
    results: dict[str, Any] = {}
    clients = {name: factory(("shell", "iopub")) for name, factory in factories.items()}
    try:
        for client in clients.values():
            iopub_ready(client)
        for kind, code in (("display_data", DISPLAY_CODE), ("binary_buffer", BUFFER_CODE)):
            times: dict[str, list[float]] = {name: [] for name in clients}
            for _ in range(repeats):
                for name, client in clients.items():
                    start = time.perf_counter()
                    msg_id = client.send("shell", "execute_request", {"code": code.format(n=size)})
                    message = wait_for(
                        client,
                        lambda m, msg_id=msg_id: (
                            m.channel == "iopub"
                            and m.parent_id == msg_id
                            and m.msg_type == "display_data"
                        ),
                        timeout=120,
                    )
                    elapsed = time.perf_counter() - start
                    got = (
                        len(message.buffers[0])
                        if kind == "binary_buffer" and message.buffers
                        else len(message.content["data"]["text/plain"])
                    )
                    if got != size:
                        raise RuntimeError(f"{name}: {kind} arrived with {got} bytes, not {size}")
                    times[name].append(elapsed)
                    while client.recv(0.2) is not None:
                        pass
            results[kind] = {name: summary(values) for name, values in times.items()}
    finally:
        for client in clients.values():
            client.close()
    results["bytes"] = size
    return results


def fanout(
    relay: RelayServer, kernel_id: str, counts: list[int], messages: int, jupyter: bool = False
) -> dict[str, Any]:
    """
    N socket.io clients on one kernel's iopub during a flood (``jupyter``: N Jupyter kernel WebSockets, v1):
    deliveries, rate, relay CPU.
    """
    driver = RelayClient(relay.port, kernel_id, ("shell",))
    namespace = f"/iopub/{kernel_id}"
    results: dict[str, Any] = {}

    async def one(count: int) -> dict[str, Any]:
        finished = asyncio.get_running_loop().create_future()
        state = {"msg_id": b"", "done": 0}

        def on_event(client: SwarmClient, payload: bytes) -> None:
            if STREAM.search(payload):
                client.streams += 1
            elif state["msg_id"] and state["msg_id"] in payload and IDLE.search(payload):  # type: ignore[operator]
                if not client.done:
                    client.done = True
                    state["done"] += 1  # type: ignore[operator]
                    if state["done"] == count and not finished.done():
                        finished.set_result(None)

        channels = f"/api/kernels/{kernel_id}/channels" if jupyter else None
        clients = await connect_swarm(relay.port, count, [namespace], on_event, channels=channels)
        await asyncio.sleep(0.5)
        for client in clients:
            client.streams = 0
        cpu = cpu_seconds(relay.pid)
        start = time.perf_counter()
        msg_id = driver.send("shell", "execute_request", {"code": FLOOD_CODE.format(n=messages)})
        state["msg_id"] = msg_id.encode()
        try:
            await asyncio.wait_for(finished, timeout=max(120.0, count * messages / 2000))
        except TimeoutError:
            pass
        elapsed = time.perf_counter() - start
        used = cpu_seconds(relay.pid) - cpu
        delivered = sum(client.streams for client in clients)
        expected = count * messages
        complete = sum(1 for client in clients if client.streams == messages)
        await close_swarm(clients)
        return {
            "clients": count,
            "messages": messages,
            "expected": expected,
            "delivered": delivered,
            "lost": expected - delivered,
            "clients_complete": complete,
            "seconds": elapsed,
            "deliveries_per_s": delivered / elapsed if elapsed > 0 else 0.0,
            "relay_cpu_s": used,
            "relay_cpu_s_per_1000": used / delivered * 1000 if delivered else None,
        }

    try:
        for count in counts:
            results[str(count)] = asyncio.run(one(count))
            wait_reply_any(driver)
    finally:
        driver.close()
    return results


def wait_reply_any(client: BenchClient) -> None:
    while client.recv(0.5) is not None:
        pass


def idle(
    relay: RelayServer, kernel_id: str, count: int, hold: float, ping_interval: float
) -> dict[str, Any]:
    """``count`` idle clients joined to a kernel's iopub, held through several heartbeats."""
    process = psutil.Process(relay.pid)

    async def run() -> dict[str, Any]:
        rss_before = process.memory_info().rss
        start = time.perf_counter()
        clients = await connect_swarm(relay.port, count, [f"/iopub/{kernel_id}"], lambda c, p: None)
        connect_seconds = time.perf_counter() - start
        rss_connected = process.memory_info().rss
        await asyncio.sleep(hold)
        rss_held = process.memory_info().rss
        dropped = sum(1 for client in clients if client.closed_by_server)
        pings = [client.pings for client in clients]
        listing = requests.get(f"{relay.url}/api/kernels", timeout=30).json()
        connections = next((k["connections"] for k in listing if k["id"] == kernel_id), None)
        await close_swarm(clients)
        return {
            "clients": count,
            "hold_s": hold,
            "ping_interval_s": ping_interval,
            "heartbeats_min": min(pings),
            "heartbeats_max": max(pings),
            "dropped": dropped,
            "relay_reported_connections": connections,
            "connect_seconds": connect_seconds,
            "relay_rss_before": rss_before,
            "relay_rss_connected": rss_connected,
            "relay_rss_held": rss_held,
            "relay_rss_per_client": (rss_held - rss_before) / count,
        }

    return asyncio.run(run())


def spawn(relay: RelayServer | None, jupyter: JupyterServer | None, repeats: int) -> dict[str, Any]:
    """Start a kernel and wait until it answers kernel_info: relay /spawn, jupyter_client, Jupyter Server."""
    from jupyter_client.manager import KernelManager

    times: dict[str, list[float]] = {"direct": []}
    if relay is not None:
        times["relay"] = []
    if jupyter is not None:
        times["jupyter_server"] = []
    for _ in range(repeats):
        start = time.perf_counter()
        manager = KernelManager(kernel_name="python3")
        manager.start_kernel()
        kc = manager.blocking_client()
        kc.start_channels()
        kc.wait_for_ready(timeout=120)
        times["direct"].append(time.perf_counter() - start)
        kc.stop_channels()
        manager.shutdown_kernel(now=True)
        if relay is not None:
            start = time.perf_counter()
            kernel_id = relay.spawn()
            client: BenchClient = RelayClient(relay.port, kernel_id, ("shell",))
            wait_reply(client, client.send("shell", "kernel_info_request", {}))
            times["relay"].append(time.perf_counter() - start)
            client.close()
            relay.shutdown(kernel_id)
        if jupyter is not None:
            start = time.perf_counter()
            kernel_id = jupyter.spawn()
            client = JupyterServerClient(jupyter.channels_url(kernel_id, uuid.uuid4().hex))
            wait_reply(client, client.send("shell", "kernel_info_request", {}))
            times["jupyter_server"].append(time.perf_counter() - start)
            client.close()
            jupyter.shutdown(kernel_id)
    return {name: summary(values) for name, values in times.items()}


def pooled_spawn(relay: RelayServer, repeats: int) -> dict[str, Any]:
    """
    ``/spawn`` until kernel_info answers on a relay started with ``--pool python3=N``: each spawn waits
    for the pool to be full again first, so every sample is a hand-out from the pool.
    """
    times: list[float] = []
    for _ in range(repeats):
        deadline = time.monotonic() + 120
        while requests.get(f"{relay.url}/api/health", timeout=10).json()["pooled_kernels"] < 1:
            if time.monotonic() > deadline:
                raise RuntimeError("the warm pool did not refill within 120 s")
            time.sleep(0.1)
        start = time.perf_counter()
        kernel_id = relay.spawn()
        client: BenchClient = RelayClient(relay.port, kernel_id, ("shell",))
        wait_reply(client, client.send("shell", "kernel_info_request", {}))
        times.append(time.perf_counter() - start)
        client.close()
        relay.shutdown(kernel_id)
    return {"relay_pooled": summary(times)}


__all__ = [
    "DirectClient",
    "fanout",
    "flood",
    "idle",
    "large",
    "pooled_spawn",
    "round_trip",
    "spawn",
]

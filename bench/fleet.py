"""
Fan-out over a fleet (issue 23): one kernel's iopub flood to many socket.io clients, all on one relay of a
fleet, or split over two relays sharing one Redis, beside a plain relay (no ``--redis``) in the same run.

In a fleet every relay subscribes to the kernel's iopub itself and asks Redis to number each message (one
Redis call per message per relay), so what a second relay costs shows in Redis's CPU as well as in the relays'.
Each case starts its own relays on a Redis database of its own, so no case inherits another's kernels or
numbering.
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from bench.clients import RelayClient
from bench.processes import RedisServer, RelayServer, cpu_seconds
from bench.scenarios import FLOOD_CODE, progress, wait_reply_any
from bench.swarm import IDLE, STREAM, SwarmClient, close_swarm, connect_swarm

LOCAL_NUMBERS = re.compile(r"^kernel_relay_fleet_local_numbers(?:_total)? (\S+)$", re.MULTILINE)

#: Cases in the order they run: (name, relays, fleet?). The plain relay is the baseline of the same run.
CASES = (("plain", 1, False), ("one_relay", 1, True), ("two_relays", 2, True))
#: The bench's clients answer Engine.IO pings only when their event loop gets to it; a flood to 1,000 of them
#: keeps it busy, so the relays ping rarely (as for ``fanout``): nothing per message changes.
RELAY_ARGS = ("--ping-interval", "600")


@dataclass
class _Group:
    """The clients of one relay, and when the first and last flood message reached any of them."""

    relay: RelayServer
    clients: list[SwarmClient] = field(default_factory=list)
    first: float = 0.0
    last: float = 0.0


class _Watch:
    """Which execute's idle status the clients wait for, and the future set once every client saw it."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.msg_id = b""
        self.done = 0
        self.finished: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def expect(self, msg_id: str, clients: list[SwarmClient]) -> None:
        for client in clients:
            client.done = False
        self.msg_id = msg_id.encode()
        self.done = 0
        self.finished = asyncio.get_running_loop().create_future()

    def handler(self, group: _Group) -> Any:
        def on_event(client: SwarmClient, payload: bytes) -> None:
            if STREAM.search(payload):
                now = time.perf_counter()
                if not group.first:
                    group.first = now
                group.last = now
                client.streams += 1
            elif self.msg_id and self.msg_id in payload and IDLE.search(payload):
                if not client.done:
                    client.done = True
                    self.done += 1
                    if self.done == self.count and not self.finished.done():
                        self.finished.set_result(None)

        return on_event


async def _measure(
    relays: list[RelayServer],
    kernel_id: str,
    per_relay: int,
    messages: int,
    redis: RedisServer | None,
) -> dict[str, Any]:
    """``per_relay`` clients on each relay; the kernel floods ``messages``; count, time, CPU."""
    count = per_relay * len(relays)
    watch = _Watch(count)
    groups = [_Group(relay) for relay in relays]
    namespace = f"/iopub/{kernel_id}"
    for group in groups:
        group.clients = await connect_swarm(
            group.relay.port, per_relay, [namespace], watch.handler(group)
        )
    everyone = [client for group in groups for client in group.clients]
    driver = RelayClient(relays[0].port, kernel_id, ("shell",))
    try:
        # Every client's iopub is live (each relay subscribed to the kernel) once each saw a cell's idle.
        for _ in range(20):
            watch.expect(driver.send("shell", "execute_request", {"code": "pass"}), everyone)
            try:
                await asyncio.wait_for(asyncio.shield(watch.finished), 5)
                break
            except TimeoutError:
                progress(f"warm-up: {watch.done} of {count} clients saw the idle status; again")
        else:
            raise RuntimeError(f"only {watch.done} of {count} clients saw a cell's output")
        for group in groups:
            group.first = group.last = 0.0
        for client in everyone:
            client.streams = 0
        pids = [relay.pid for relay in relays]
        relay_cpu = [cpu_seconds(pid) for pid in pids]
        redis_cpu = cpu_seconds(redis.pid) if redis is not None else 0.0
        redis_calls = _calls(redis) if redis is not None else {}
        bench_cpu = time.process_time()
        start = time.perf_counter()
        watch.expect(
            driver.send("shell", "execute_request", {"code": FLOOD_CODE.format(n=messages)}),
            everyone,
        )
        try:
            await asyncio.wait_for(
                asyncio.shield(watch.finished), max(120.0, count * messages / 2000)
            )
        except TimeoutError:
            progress(f"only {watch.done} of {count} clients saw the flood's idle status")
        ended = time.perf_counter()
        bench_used = time.process_time() - bench_cpu
        relay_used = [
            cpu_seconds(pid) - before for pid, before in zip(pids, relay_cpu, strict=True)
        ]
        redis_used = cpu_seconds(redis.pid) - redis_cpu if redis is not None else None
        calls = _calls(redis, redis_calls) if redis is not None else {}
    finally:
        await close_swarm(everyone)
        wait_reply_any(driver)
        driver.close()
    delivered = sum(client.streams for client in everyone)
    first = min((g.first for g in groups if g.first), default=0.0)
    last = max((g.last for g in groups), default=0.0)
    spread = last - first
    relay_total = sum(relay_used)
    result: dict[str, Any] = {
        "relays": len(relays),
        "clients": count,
        "messages": messages,
        "expected": count * messages,
        "delivered": delivered,
        "lost": count * messages - delivered,
        "clients_complete": sum(1 for client in everyone if client.streams == messages),
        "dropped_by_relay": sum(1 for client in everyone if client.closed_by_server),
        "seconds": spread,
        "seconds_from_execute": ended - start,
        "deliveries_per_s": delivered / spread if spread > 0 else 0.0,
        "relay_cpu_s": relay_used,
        "relay_cpu_s_per_1000": relay_total / delivered * 1000 if delivered else None,
        "redis_cpu_s": redis_used,
        "redis_cpu_s_per_1000": (
            redis_used / delivered * 1000 if redis_used is not None and delivered else None
        ),
        # A script's own commands count too: EVAL and EVALSHA are the relays' calls.
        "redis_commands": calls,
        "redis_scripts_per_message": (
            (calls.get("evalsha", 0) + calls.get("eval", 0)) / messages
            if redis is not None
            else None
        ),
        "bench_client_cpu_s": bench_used,
        "per_relay": [
            {
                "port": group.relay.port,
                "clients": len(group.clients),
                "delivered": sum(client.streams for client in group.clients),
                "last_delivery_after_s": group.last - start if group.last else None,
                # A relay too busy to read Redis's answers in time numbers on alone (not in the fleet's
                # stream: a client resuming on another relay across them is told of a gap).
                "numbered_alone": _local_numbers(group.relay) if redis is not None else None,
            }
            for group in groups
        ],
    }
    return result


def _calls(redis: RedisServer, since: dict[str, int] | None = None) -> dict[str, int]:
    """Calls of each Redis command so far (``INFO commandstats``), or made after ``since`` but the INFO."""
    counts: dict[str, int] = {}
    for name, value in redis.info("commandstats").items():
        fields = dict(item.split("=", 1) for item in value.split(","))
        counts[name.removeprefix("cmdstat_")] = int(fields["calls"])
    if since is None:
        return counts
    counts["info"] = counts.get("info", 0) - 1
    return {
        name: count - since.get(name, 0)
        for name, count in counts.items()
        if count - since.get(name, 0) > 0
    }


def _local_numbers(relay: RelayServer) -> int | None:
    """Messages the relay numbered by itself, Redis not answering in time (its /metrics), if it says."""
    found = LOCAL_NUMBERS.search(requests.get(f"{relay.url}/metrics", timeout=30).text)
    return int(float(found.group(1))) if found else None


def _wait_listed(relay: RelayServer, kernel_id: str, timeout: float = 30.0) -> None:
    """Until ``relay`` lists the kernel another relay of its fleet spawned (it serves it from then on)."""
    deadline = time.monotonic() + timeout
    while kernel_id not in relay.kernel_ids():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{relay.name} did not list kernel {kernel_id} within {timeout} s")
        time.sleep(0.1)


def _case(
    log_dir: Path,
    name: str,
    relay_count: int,
    redis: RedisServer | None,
    database: int,
    clients: int,
    messages: int,
) -> dict[str, Any]:
    """Start the case's relays, spawn the kernel on the first, measure, and stop it all again."""
    fleet_args: tuple[str, ...] = ()
    if redis is not None:
        # A fleet needs a secret its relays share (no token here: the relays are on loopback).
        fleet_args = ("--redis", redis.database(database), "--fleet-secret", "bench-fleet-secret")
    relays: list[RelayServer] = []
    kernel_id = None
    try:
        for index in range(relay_count):
            relays.append(
                RelayServer(log_dir, *RELAY_ARGS, *fleet_args, name=f"fleet-{name}-{index}")
            )
        kernel_id = relays[0].spawn()
        for relay in relays[1:]:
            _wait_listed(relay, kernel_id)
        result = asyncio.run(_measure(relays, kernel_id, clients // relay_count, messages, redis))
        progress(f"{name}: {result}")
        return result
    finally:
        if kernel_id is not None and relays:
            # A fleet's kernels outlive their relays (for another to adopt): shut it down explicitly.
            try:
                relays[0].shutdown(kernel_id)
            except Exception as error:
                progress(f"{name}: shutting kernel {kernel_id} down failed: {error!r}")
        for relay in reversed(relays):
            relay.stop()


def fleet_fanout(log_dir: Path, clients: int, messages: int) -> dict[str, Any]:
    """Each of :data:`CASES` on one Redis (a database each): ``clients`` in all, ``messages`` each."""
    redis = RedisServer(log_dir, name="redis-fleet")
    results: dict[str, Any] = {}
    try:
        for database, (name, relay_count, fleet) in enumerate(CASES, start=1):
            results[name] = _case(
                log_dir,
                name,
                relay_count,
                redis if fleet else None,
                database,
                clients,
                messages,
            )
    finally:
        redis.stop()
    return results


__all__ = ["CASES", "fleet_fanout"]

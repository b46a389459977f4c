"""
What the kernel sandbox costs (issue 29): cold spawn, spawn from a warm pool, and execute round trips, each on
a relay with ``--kernel-sandbox required`` and on one with ``--kernel-sandbox off``, side by side in one run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.clients import BenchClient, RelayClient
from bench.processes import RelayServer
from bench.scenarios import pooled_spawn, progress, round_trip, spawn

#: The two cases: the relay's options for each.
MODES = {"sandboxed": ("--kernel-sandbox", "required"), "off": ("--kernel-sandbox", "off")}


def sandbox_cost(
    logs: Path, spawn_repeats: int, pooled_repeats: int, round_trips: int, blocks: int
) -> dict[str, Any]:
    """Per mode: ``cold_spawn``, ``pooled_spawn`` and ``round_trip_execute`` summaries (seconds)."""
    results: dict[str, Any] = {"cold_spawn": {}, "pooled_spawn": {}, "round_trip_execute": {}}
    relays: dict[str, RelayServer] = {}
    try:
        for mode, options in MODES.items():
            relays[mode] = RelayServer(logs, *options, name=f"relay-{mode}")
        for mode, relay in relays.items():
            progress(f"cold spawn, sandbox {mode}")
            results["cold_spawn"][mode] = spawn(relay, None, spawn_repeats)["relay"]
        kernels = {mode: relay.spawn() for mode, relay in relays.items()}

        def client_of(mode: str) -> Any:
            def factory(channels: tuple[str, ...]) -> BenchClient:
                return RelayClient(relays[mode].port, kernels[mode], channels)

            return factory

        progress("execute round trips, sandboxed and not, in turns")
        results["round_trip_execute"] = round_trip(
            {mode: client_of(mode) for mode in relays},
            "execute_request",
            {"code": "pass", "silent": False},
            round_trips,
            blocks,
            {mode: relay.pid for mode, relay in relays.items()},
        )
    finally:
        for relay in relays.values():
            relay.stop()
    for mode, options in MODES.items():
        progress(f"pooled spawn, sandbox {mode}")
        pooled = RelayServer(logs, *options, "--pool", "python3=1", name=f"relay-pool-{mode}")
        try:
            results["pooled_spawn"][mode] = pooled_spawn(pooled, pooled_repeats)["relay_pooled"]
        finally:
            pooled.stop()
    return results


def markdown_lines(results: dict[str, Any]) -> list[str]:
    """The report's section: each measure's median, sandboxed and not, and their ratio."""
    data = results.get("sandbox")
    if not data:
        return []
    lines = [
        "",
        "## The kernel sandbox: bubblewrap (--kernel-sandbox required) against none (off)",
        "",
        "| measure | sandboxed (median) | off (median) | sandboxed ÷ off |",
        "|---|---:|---:|---:|",
    ]
    for key, label in (
        ("cold_spawn", "cold spawn until kernel_info answers"),
        ("pooled_spawn", "spawn from a warm pool"),
        ("round_trip_execute", "execute round trip"),
    ):
        sandboxed = data[key].get("sandboxed", {}).get("median")
        off = data[key].get("off", {}).get("median")
        if sandboxed is None or off is None:
            continue
        lines.append(
            f"| {label} | {sandboxed * 1000:.2f} ms | {off * 1000:.2f} ms | {sandboxed / off:.2f} |"
        )
    return lines

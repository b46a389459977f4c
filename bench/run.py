"""
``python -m bench [--quick] [--only NAMES] [--out DIR] [--profile]``: run the scenarios side by side.

Scenarios (``--only`` takes a comma-separated subset): ``round_trip``, ``flood``, ``large``,
``fanout``, ``idle``, ``spawn``, ``sandbox`` (spawns and round trips with and without the kernel sandbox),
and ``fleet_fanout`` (only when asked for: it needs ``redis-server``), and ``scale`` (only when asked for: hundreds of
kernels, see :mod:`bench.scale`). Outputs in ``--out`` (default ``bench/results/``): ``results.json``,
``results.md`` (the ratio table) and ``*.png`` plots, plus the servers' logs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import signal
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import zmq

from bench import fleet, report, sandbox, scale, scenarios
from bench.clients import (
    BenchClient,
    DirectClient,
    ForwarderClient,
    JupyterServerClient,
    RelayClient,
)
from bench.processes import (
    HOST,
    DirectKernel,
    Forwarder,
    JupyterServer,
    RelayServer,
    raise_fd_limit,
)
from bench.rest import RestExecuteClient

SCENARIOS = (
    "round_trip",
    "flood",
    "large",
    "fanout",
    "idle",
    "spawn",
    "sandbox",
    "fleet_fanout",
    "scale",
)
#: What runs without ``--only``: the fleet's fan-out needs a redis-server, which a developer may not have.
DEFAULT_SCENARIOS = ("round_trip", "flood", "large", "fanout", "idle", "spawn", "sandbox")
DEFAULT_OUT = Path(__file__).resolve().parent / "results"
#: The forwarders' kernels are encrypted as the relay's are by default (its --kernel-encryption auto): a floor
#: that skipped CurveZMQ would book the relay's I/O thread's decryption as the relay's own code.
FLOOR_ENCRYPTION = "auto" if zmq.has("curve") else "disabled"
TARGETS = ("direct", "relay", "relay_jupyter", "jupyter_server", "forwarder", "forwarder_iopub")


@dataclass(frozen=True)
class Sizes:
    round_trips: int
    #: Rounds in which the targets take turns. In an A/A test (two direct clients, two kernels) on the
    #: 2-core VM, 5 rounds of 100 gave ratios of 0.92-1.08, and 50 rounds of 10 gave 0.97-1.04: the
    #: machine drifts, and short turns share the drift out evenly.
    round_trip_blocks: int
    #: (messages, repeats) of each flood: a short flood lasts about a second, so one run's ratio is
    #: mostly the kernel's and the VM's noise; it is repeated more, and its median reported.
    floods: tuple[tuple[int, int], ...]
    large_bytes: int
    large_repeats: int
    fanout_clients: tuple[int, ...]
    fanout_messages: int
    idle_clients: int
    idle_ping_interval: float
    idle_periods: int
    spawn_repeats: int
    pooled_spawn_repeats: int
    #: Clients in all on one kernel's iopub in each fleet case (split evenly over its relays), and the
    #: messages the kernel floods to them.
    fleet_clients: int
    fleet_messages: int


FULL = Sizes(
    round_trips=500,
    round_trip_blocks=50,
    floods=((5_000, 7), (50_000, 3)),
    large_bytes=10_000_000,
    large_repeats=9,
    fanout_clients=(1, 10, 100, 500),
    fanout_messages=1_000,
    idle_clients=2_000,
    idle_ping_interval=2.0,
    idle_periods=4,
    spawn_repeats=5,
    pooled_spawn_repeats=20,
    fleet_clients=1_000,
    fleet_messages=1_000,
)

QUICK = Sizes(
    round_trips=20,
    round_trip_blocks=2,
    floods=((50, 1), (200, 1)),
    large_bytes=100_000,
    large_repeats=1,
    fanout_clients=(1, 5),
    fanout_messages=50,
    idle_clients=20,
    idle_ping_interval=0.5,
    idle_periods=3,
    spawn_repeats=1,
    pooled_spawn_repeats=2,
    fleet_clients=10,
    fleet_messages=50,
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmark kernel-relay against direct ZMQ and Jupyter Server, side by side.",
    )
    parser.add_argument(
        "--quick", action="store_true", help="tiny sizes (a smoke run, not a measurement)"
    )
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="NAMES",
        help=(
            f"comma-separated scenarios to run [{','.join(DEFAULT_SCENARIOS)}]; also: "
            f"{', '.join(s for s in SCENARIOS if s not in DEFAULT_SCENARIOS)}"
        ),
    )
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help="output directory [bench/results]"
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="run the main relay under cProfile; writes relay.prof and relay-profile.txt",
    )
    parser.add_argument(
        "--targets",
        default=",".join(TARGETS),
        help=(
            f"comma-separated targets for the side-by-side scenarios [{','.join(TARGETS)}]; the "
            "forwarders (relays that do no work, on kernels of their own; forwarder_iopub passes the "
            "kernel's iopub on to its client, as the Jupyter front must) take part in the round trips only"
        ),
    )
    args = parser.parse_args(argv)
    only = [name.strip() for item in args.only for name in item.split(",") if name.strip()]
    unknown = [name for name in only if name not in SCENARIOS]
    if unknown:
        parser.error(
            f"unknown scenario(s) {', '.join(unknown)}; choose from {', '.join(SCENARIOS)}"
        )
    args.only = only or list(DEFAULT_SCENARIOS)
    args.targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    unknown = [name for name in args.targets if name not in TARGETS]
    if unknown:
        parser.error(f"unknown target(s) {', '.join(unknown)}; choose from {', '.join(TARGETS)}")
    return args


def say(text: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {text}", flush=True)


def _versions() -> dict[str, str]:
    found: dict[str, str] = {}
    for name in (
        "kernel-relay",
        "ipykernel",
        "jupyter_client",
        "jupyter_server",
        "pyzmq",
        "twisted",
        "autobahn",
    ):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return found


def _load() -> list[float]:
    return [round(value, 2) for value in os.getloadavg()]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    sizes = QUICK if args.quick else FULL
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    logs = out / "logs"
    logs.mkdir(exist_ok=True)
    fd_limit = raise_fd_limit()
    meta: dict[str, Any] = {
        "command": shlex.join(["python", "-m", "bench", *(sys.argv[1:] if argv is None else argv)]),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "quick": args.quick,
        "cpus": os.cpu_count(),
        "machine": platform.platform(),
        "python": platform.python_version(),
        "versions": _versions(),
        "fd_limit": fd_limit,
        "sizes": sizes.__dict__,
        "load_start": _load(),
        "load": {},
    }
    results: dict[str, Any] = {}
    side_by_side = {"round_trip", "flood", "large"} & set(args.only)
    targets = args.targets
    cleanups: list[Any] = []
    started = time.perf_counter()
    try:
        relay: RelayServer | None = None
        jupyter: JupyterServer | None = None
        factories: dict[str, scenarios.ClientFactory] = {}
        #: Targets of the round trips only (the forwarder).
        round_trip_factories: dict[str, scenarios.ClientFactory] = {}
        #: The process of each target that has one of its own, whose CPU the round trips count.
        servers: dict[str, int] = {}
        relay_wanted = {"relay", "relay_jupyter"} & set(targets)
        if relay_wanted and (side_by_side or {"fanout", "spawn"} & set(args.only)):
            say("starting kernel-relay")
            # The bench's clients are synchronous: they answer Engine.IO pings only while reading,
            # and a client may wait a minute while another target floods (Jupyter Server's
            # rate-limited 50,000-message flood ends only after 15 s of silence). Rare pings keep
            # such a client connected; they change nothing per message.
            relay = RelayServer(
                logs,
                "--ping-interval",
                "600",
                profile_to=out / "relay.prof" if args.profile else None,
            )
            cleanups.append(relay.stop)
        if "jupyter_server" in targets and (side_by_side or "spawn" in args.only):
            say("starting Jupyter Server")
            jupyter = JupyterServer(logs)
            cleanups.append(jupyter.stop)
        if side_by_side:
            if "direct" in targets:
                say("starting a kernel with jupyter_client (direct ZMQ)")
                direct = DirectKernel(logs)
                cleanups.append(direct.stop)
                info = direct.connection_info

                def direct_client(channels: tuple[str, ...]) -> BenchClient:
                    return DirectClient(info, channels)

                factories["direct"] = direct_client
            if "forwarder" in targets and "round_trip" in args.only:
                say("starting a kernel with jupyter_client for the forwarder, and the forwarder")
                floor_kernel = DirectKernel(logs, FLOOR_ENCRYPTION)
                cleanups.append(floor_kernel.stop)
                floor_info = floor_kernel.connection_info
                floor = Forwarder(floor_info)
                cleanups.append(floor.stop)

                def forwarder_client(channels: tuple[str, ...]) -> BenchClient:
                    return ForwarderClient(floor.port, floor_info)

                round_trip_factories["forwarder"] = forwarder_client
                servers["forwarder"] = floor.process.pid
            if "forwarder_iopub" in targets and "round_trip" in args.only:
                say("starting a kernel for the forwarder that passes iopub on, and that forwarder")
                iopub_kernel = DirectKernel(logs, FLOOR_ENCRYPTION)
                cleanups.append(iopub_kernel.stop)
                iopub_info = iopub_kernel.connection_info
                iopub_floor = Forwarder(iopub_info, pass_iopub=True)
                cleanups.append(iopub_floor.stop)

                def forwarder_iopub_client(channels: tuple[str, ...]) -> BenchClient:
                    return ForwarderClient(iopub_floor.port, iopub_info, iopub=True)

                round_trip_factories["forwarder_iopub"] = forwarder_iopub_client
                servers["forwarder_iopub"] = iopub_floor.process.pid
            if relay is not None and "relay" in targets:
                say("spawning a kernel through the relay")
                relay_kernel = relay.spawn()
                port = relay.port

                def relay_client(channels: tuple[str, ...]) -> BenchClient:
                    return RelayClient(port, relay_kernel, channels)

                factories["relay"] = relay_client
                servers["relay"] = relay.pid
            if relay is not None and "relay_jupyter" in targets:
                say("spawning a kernel through the relay for its Jupyter front")
                jupyter_kernel = relay.spawn()
                jupyter_url = f"ws://{HOST}:{relay.port}/api/kernels/{jupyter_kernel}/channels"

                def relay_jupyter_client(channels: tuple[str, ...]) -> BenchClient:
                    import uuid

                    client = JupyterServerClient(
                        f"{jupyter_url}?session_id={uuid.uuid4().hex}", v1=True
                    )
                    client.name = "relay_jupyter"
                    return client

                factories["relay_jupyter"] = relay_jupyter_client
                servers["relay_jupyter"] = relay.pid
            if jupyter is not None:
                say("starting a kernel through Jupyter Server")
                js_kernel = jupyter.spawn()
                js = jupyter

                def js_client(channels: tuple[str, ...]) -> BenchClient:
                    import uuid

                    return JupyterServerClient(js.channels_url(js_kernel, uuid.uuid4().hex))

                factories["jupyter_server"] = js_client
                servers["jupyter_server"] = js.pid

        def run(key: str, function: Any, *params: Any) -> None:
            say(f"{key}: running (load {_load()})")
            meta["load"][key] = {"before": _load()}
            begun = time.perf_counter()
            results[key] = function(*params)
            meta["load"][key]["after"] = _load()
            meta["load"][key]["seconds"] = round(time.perf_counter() - begun, 1)
            say(f"{key}: done in {meta['load'][key]['seconds']} s")

        if "round_trip" in args.only:
            for key, msg_type, content in (
                ("round_trip_kernel_info", "kernel_info_request", {}),
                ("round_trip_execute", "execute_request", {"code": "pass", "silent": False}),
            ):
                run(
                    key,
                    scenarios.round_trip,
                    {**factories, **round_trip_factories},
                    msg_type,
                    content,
                    sizes.round_trips,
                    sizes.round_trip_blocks,
                    servers,
                )
        if "round_trip" in args.only and "relay" in factories and relay is not None:
            # The execute API (REST, long-poll) beside the WebSocket fronts, on the relay's kernel.
            rest = {"relay_rest": lambda _: RestExecuteClient(relay.port, relay_kernel)}
            execute = {"code": "pass", "silent": False}
            run(
                "round_trip_execute_rest",
                scenarios.round_trip,
                {**factories, **rest},
                "execute_request",
                execute,
                sizes.round_trips,
                sizes.round_trip_blocks,
                servers,
            )
        if "flood" in args.only:
            run(
                "flood",
                scenarios.flood,
                factories,
                list(sizes.floods),
                servers,
            )
        if "large" in args.only:
            run("large", scenarios.large, factories, sizes.large_bytes, sizes.large_repeats)
        fanouts = [("fanout", "relay", False), ("fanout_jupyter", "relay_jupyter", True)]
        for key, target, jupyter_front in fanouts:
            if "fanout" not in args.only or relay is None or target not in targets:
                continue
            fan_kernel = relay.spawn()
            run(
                key,
                scenarios.fanout,
                relay,
                fan_kernel,
                list(sizes.fanout_clients),
                sizes.fanout_messages,
                jupyter_front,
            )
            relay.shutdown(fan_kernel)
        if "idle" in args.only and "relay" in targets:
            interval = sizes.idle_ping_interval
            idle_relay = RelayServer(
                logs,
                "--ping-interval",
                str(interval),
                "--ping-timeout",
                str(max(5.0, 2 * interval)),
                name="relay-idle",
            )
            try:
                idle_kernel = idle_relay.spawn()
                run(
                    "idle",
                    scenarios.idle,
                    idle_relay,
                    idle_kernel,
                    sizes.idle_clients,
                    interval * sizes.idle_periods + 0.5,
                    interval,
                )
                idle_relay.shutdown(idle_kernel)
            finally:
                idle_relay.stop()
        if "spawn" in args.only:
            run("spawn", scenarios.spawn, relay, jupyter, sizes.spawn_repeats)
            if "relay" in targets:
                say("starting a relay with a warm pool (--pool python3=2)")
                pool_relay = RelayServer(out / "logs", "--pool", "python3=2", name="relay-pool")
                try:
                    run(
                        "spawn_pooled",
                        scenarios.pooled_spawn,
                        pool_relay,
                        sizes.pooled_spawn_repeats,
                    )
                finally:
                    pool_relay.stop()
        if "sandbox" in args.only:
            run(
                "sandbox",
                sandbox.sandbox_cost,
                logs,
                sizes.spawn_repeats,
                sizes.pooled_spawn_repeats,
                sizes.round_trips,
                sizes.round_trip_blocks,
            )
        if "fleet_fanout" in args.only:
            run(
                "fleet_fanout",
                fleet.fleet_fanout,
                logs,
                sizes.fleet_clients,
                sizes.fleet_messages,
            )
        if "scale" in args.only:
            run("scale", scale.scale, logs, scale.sizes(args.quick))
    finally:
        for cleanup in reversed(cleanups):
            try:
                cleanup()
            except Exception as error:  # a benchmark must still write what it measured
                say(f"cleanup failed: {error!r}")
    meta["load_end"] = _load()
    meta["seconds"] = round(time.perf_counter() - started, 1)
    (out / "results.json").write_text(json.dumps({"meta": meta, "results": results}, indent=2))
    table = report.markdown(results, meta)
    (out / "results.md").write_text(table)
    written = report.plots(results, out)
    if args.profile and (out / "relay.prof").exists():
        _profile_text(out / "relay.prof", out / "relay-profile.txt")
    print(table)
    say(
        f"wrote {out / 'results.json'}, {out / 'results.md'} and {len(written)} plots in {meta['seconds']} s"
    )
    return 0


def _terminate(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _profile_text(profile: Path, text: Path) -> None:
    import io
    import pstats

    stream = io.StringIO()
    stats = pstats.Stats(str(profile), stream=stream)
    stats.sort_stats("tottime").print_stats(40)
    stats.sort_stats("cumulative").print_stats(40)
    text.write_text(stream.getvalue())

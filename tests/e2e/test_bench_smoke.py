"""A smoke run of the benchmark suite with tiny sizes: it must keep working, whatever its numbers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.redis_server import require_redis
from tests.support import ROOT

for module in ("jupyter_server", "matplotlib", "psutil", "websocket"):
    pytest.importorskip(module, reason="the bench extra is not installed")

from bench.clients import Msg  # noqa: E402 (the bench needs its extra, checked above)
from bench.scenarios import round_trip  # noqa: E402

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SIDE_BY_SIDE = ("direct", "relay", "jupyter_server")


@pytest.fixture(scope="module")
def bench_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bench")
    completed = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert completed.returncode == 0, completed.stdout[-4000:] + completed.stderr[-4000:]
    return out


@pytest.mark.timeout(300)
def test_results_json_has_every_scenario_for_every_target(bench_out: Path) -> None:
    """results.json holds round trip, flood and large results for all three targets, plus fan-out, idle, spawn
    and spawn from a warm pool."""
    data = json.loads((bench_out / "results.json").read_text())
    results = data["results"]
    assert data["meta"]["quick"] is True
    for key in ("round_trip_kernel_info", "round_trip_execute"):
        for target in (*SIDE_BY_SIDE, "forwarder", "forwarder_iopub"):
            assert results[key][target]["n"] > 0
            assert results[key][target]["median"] > 0
        # Each server process's CPU per request (the direct client has no server of its own).
        for target in ("relay", "relay_jupyter", "forwarder", "forwarder_iopub", "jupyter_server"):
            assert results[key][target]["server_cpu"] > 0
        assert "server_cpu" not in results[key]["direct"]
    for size, per_target in results["flood"].items():
        for target in (*SIDE_BY_SIDE, "relay_jupyter"):
            assert per_target[target]["msgs_per_s"] > 0
            assert 0 <= per_target[target]["lost"] <= int(size)
        # The relay forwarded exactly what its one client received: nothing lost inside it.
        assert per_target["relay"]["lost_in_relay"] == 0
        for target in ("relay", "jupyter_server"):
            assert per_target[target]["server_cpu"] > 0
    for kind in ("display_data", "binary_buffer"):
        assert {*SIDE_BY_SIDE, "relay_jupyter"} <= set(results["large"][kind])
    for fan in (*results["fanout"].values(), *results["fanout_jupyter"].values()):
        assert fan["delivered"] <= fan["expected"]
        assert fan["deliveries_per_s"] >= 0
    assert results["idle"]["clients"] > 0
    assert results["idle"]["relay_rss_held"] > 0
    assert set(SIDE_BY_SIDE) <= set(results["spawn"])
    assert results["spawn_pooled"]["relay_pooled"]["n"] == 2
    assert results["spawn_pooled"]["relay_pooled"]["median"] > 0
    # The kernel sandbox's cost: each measure with it and without.
    for measure in ("cold_spawn", "pooled_spawn", "round_trip_execute"):
        assert set(results["sandbox"][measure]) == {"sandboxed", "off"}
        assert results["sandbox"][measure]["sandboxed"]["median"] > 0
    # The fleet's fan-out needs a redis-server: it runs only when asked for.
    assert "fleet_fanout" not in results


@pytest.mark.timeout(300)
def test_markdown_table_has_ratio_columns(bench_out: Path) -> None:
    """results.md is a Markdown table with the relay ÷ direct and relay ÷ Jupyter Server columns."""
    table = (bench_out / "results.md").read_text()
    assert "| relay ÷ direct | relay ÷ Jupyter Server |" in table
    assert "round trip kernel_info_request, median" in table
    assert "iopub flood" in table
    assert "Fan-out" in table
    assert "## Round trips: the structural floor" in table
    assert "- kernel_info: forwarder " in table and "- execute: forwarder " in table
    assert "kernel-relay (Jupyter v1) " in table and " x the forwarder passing iopub on." in table
    assert "## Server CPU" in table
    assert "- kernel_info, per request: kernel-relay " in table
    assert "- execute, per request: kernel-relay " in table
    assert "- flood of 50, per message: kernel-relay " in table
    assert "## The Jupyter kernel WebSocket front (v1)" in table
    assert "## The kernel sandbox" in table and "| spawn from a warm pool |" in table


@pytest.mark.timeout(300)
def test_plots_are_png_files(bench_out: Path) -> None:
    """Each scenario's plot is written as a PNG image."""
    for name in ("round_trip", "flood", "large", "fanout", "spawn"):
        path = bench_out / f"{name}.png"
        assert path.read_bytes()[:8] == PNG_MAGIC, name


@pytest.mark.timeout(300)
def test_the_fleet_fanout_runs_one_relay_and_two_on_a_real_redis(tmp_path: Path) -> None:
    """``--only fleet_fanout`` measures a plain relay, a fleet of one and a fleet of two on one Redis, the
    clients split over the two, each fleet relay making its own Redis call per message; results.md has the
    table."""
    require_redis()
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "--quick",
            "--only",
            "fleet_fanout",
            "--out",
            str(tmp_path),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert completed.returncode == 0, completed.stdout[-4000:] + completed.stderr[-4000:]
    fleet = json.loads((tmp_path / "results.json").read_text())["results"]["fleet_fanout"]
    assert list(fleet) == ["plain", "one_relay", "two_relays"]
    for case in fleet.values():
        assert 0 < case["delivered"] <= case["expected"]
        assert case["relay_cpu_s_per_1000"] > 0
    assert fleet["plain"]["redis_cpu_s_per_1000"] is None
    two = fleet["two_relays"]
    assert [relay["clients"] for relay in two["per_relay"]] == [5, 5]
    assert all(relay["delivered"] > 0 for relay in two["per_relay"])
    assert two["redis_cpu_s_per_1000"] > 0
    # One numbering script per iopub message per relay (the cell's status messages are numbered too).
    assert 1 <= fleet["one_relay"]["redis_scripts_per_message"] < 1.5
    assert 2 <= two["redis_scripts_per_message"] < 3
    table = (tmp_path / "results.md").read_text()
    assert "## Fan-out over a fleet" in table
    assert "| two relays, one Redis | 2 | 10 |" in table


@pytest.mark.timeout(300)
def test_the_scale_scenario_measures_footprint_spawns_and_the_grid(tmp_path: Path) -> None:
    """``--only scale`` (quick) reports the relay's footprint with and without the sandbox, concurrent spawns
    and every grid cell of every target, and results.md has its tables."""
    completed = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--only", "scale", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert completed.returncode == 0, completed.stdout[-4000:] + completed.stderr[-4000:]
    scale = json.loads((tmp_path / "results.json").read_text())["results"]["scale"]
    for mode in ("off", "sandboxed"):
        rows = scale["footprint"][mode]["rows"]
        assert [row["kernels"] for row in rows] == [0, 2]
        assert all(row["fds"] > 0 and row["rss"] > 0 for row in rows)
        assert scale["footprint"][mode]["per_kernel"] is not None
    assert scale["concurrent_spawns"]["2"]["ready"] == 2
    assert scale["concurrent_spawns"]["2"]["failures"] == 0
    assert set(scale["grid"]) == {"relay", "relay_jupyter", "jupyter_server", "direct"}
    for cells in scale["grid"].values():
        assert set(cells) == {"1+1 2x10", "print_1kb 2x10"}
        assert all(0 < cell["replies"] <= cell["requests"] for cell in cells.values())
    table = (tmp_path / "results.md").read_text()
    assert "## Scale: the relay's footprint" in table
    assert "## Scale: K kernels x R execute requests/s" in table
    assert "First cell with errors or dropped connections:" in table


def test_a_relay_loss_is_reported_with_where_it_happened() -> None:
    """A flood the relay lost messages of gets a line saying how many were lost inside the relay."""
    from bench.report import _relay_loss_lines

    flood = {
        "5000": {"relay": {"lost": 0, "lost_in_relay": 0}},
        "50000": {"relay": {"lost": 778, "lost_in_relay": 3}, "direct": {"lost": 0}},
    }
    lines = _relay_loss_lines({"flood": flood})
    assert len(lines) == 2 and lines[0] == ""
    assert "Flood of 50,000" in lines[1]
    assert "lost 778 messages" in lines[1] and "at most 3 in a run" in lines[1]
    assert _relay_loss_lines({"flood": {"5000": flood["5000"]}}) == []


def test_the_floor_section_says_whether_the_relay_kept_within_its_bound_over_the_forwarder() -> (
    None
):
    """Each round trip's floor line gives the relay's ratio to the forwarder and whether it met the bound."""
    from bench.report import FLOOR_TARGET, _floor_lines

    def medians(direct: float, forwarder: float, relay: float) -> dict[str, dict[str, float]]:
        return {
            "direct": {"median": direct},
            "forwarder": {"median": forwarder},
            "relay": {"median": relay},
        }

    lines = _floor_lines(
        {
            "round_trip_kernel_info": medians(0.003, 0.0034, 0.0034 * FLOOR_TARGET * 0.99),
            "round_trip_execute": medians(0.007, 0.0072, 0.0072 * FLOOR_TARGET * 1.01),
        }
    )
    kernel_info = next(line for line in lines if line.startswith("- kernel_info:"))
    execute = next(line for line in lines if line.startswith("- execute:"))
    assert "1.13 x direct" in kernel_info and "x the forwarder: met)" in kernel_info
    assert "x the forwarder: MISSED)" in execute
    assert _floor_lines({"round_trip_kernel_info": {"direct": {"median": 0.003}}}) == []


class _Answered:
    """
    A bench client whose every request is answered at once, by a "server" that is this very process: it
    records whose turn each request was, and spends ``work`` seconds of CPU on it.
    """

    def __init__(self, name: str, turns: list[str], work: float = 0.0) -> None:
        self.name = name
        self.turns = turns
        self.work = work
        self._pending: list[Msg] = []

    def send(self, channel: str, msg_type: str, content: dict[str, object]) -> str:
        end = time.thread_time() + self.work
        while time.thread_time() < end:
            pass
        self.turns.append(self.name)
        msg_id = f"{self.name}-{len(self.turns)}"
        self._pending.append(Msg("shell", {"msg_type": "reply"}, {"msg_id": msg_id}, {}))
        return msg_id

    def recv(self, timeout: float) -> Msg | None:
        return self._pending.pop(0) if self._pending else None

    def close(self) -> None:
        pass


def test_round_trip_targets_take_turns_in_alternating_order() -> None:
    """Each round gives every target a turn, and every other round reverses the order of the targets."""
    turns: list[str] = []
    result = round_trip(
        {name: lambda channels, name=name: _Answered(name, turns) for name in ("a", "b")},
        "kernel_info_request",
        {},
        count=6,
        blocks=3,
    )
    assert turns[20:] == ["a", "a", "b", "b", "b", "b", "a", "a", "a", "a", "b", "b"]
    assert result["a"]["n"] == result["b"]["n"] == 6


def test_server_cpu_counts_each_targets_own_turns_only() -> None:
    """A server that works for every request shows that work per request; one that does not, nearly none."""
    turns: list[str] = []
    result = round_trip(
        {
            "busy": lambda channels: _Answered("busy", turns, work=0.005),
            "idle": lambda channels: _Answered("idle", turns),
        },
        "kernel_info_request",
        {},
        count=20,
        blocks=4,
        servers={"busy": os.getpid(), "idle": os.getpid()},
    )
    assert result["busy"]["server_cpu"] >= 0.0045
    assert result["idle"]["server_cpu"] < 0.002


def test_forwarder_frames_survive_any_split() -> None:
    """The forwarder's framing gives back exactly the frames packed, and waits for a message's last byte."""
    from bench.forwarder import pack, unpack

    frames = [b"<IDS|MSG>", b"sig", b"", b"{}" * 40_000]
    data = pack(frames) + pack([b"next"])
    first = len(pack(frames))
    for cut in (0, 3, 4, 9, first - 1):
        assert unpack(data[:cut]) is None
    assert unpack(data) == (frames, first)
    assert unpack(data[first:]) == ([b"next"], len(data) - first)


def test_a_misspelt_target_is_refused_before_anything_starts(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """An unknown name in --targets is a usage error, not a target silently left out."""
    from bench.run import parse_args

    with pytest.raises(SystemExit) as exit_info:
        parse_args(["--targets", "direct,relya"])
    assert exit_info.value.code == 2
    assert "unknown target(s) relya" in capsys.readouterr().err


def test_the_report_shows_the_rest_round_trip_beside_the_websocket_fronts() -> None:
    """round_trip_execute_rest gets its table: REST, socket.io and Jupyter v1 of the same run, with ratios."""
    from bench.report import markdown

    def timed(median: float) -> dict[str, float]:
        return {"n": 20, "median": median, "p99": median * 2}

    results = {
        "round_trip_execute_rest": {
            "relay": timed(0.0068),
            "relay_jupyter": timed(0.0038),
            "relay_rest": timed(0.0166),
        }
    }
    meta = {
        "command": "python -m bench",
        "date": "today",
        "cpus": 2,
        "load_start": 0,
        "load_end": 0,
        "python": "3.11",
        "versions": {},
    }
    table = markdown(results, meta)
    assert "over REST (the execute API) beside the WebSocket fronts" in table
    assert "| kernel-relay, REST (POST, then GET ?wait=30) | 16.60 ms | 33.20 ms | 2.44 |" in table
    assert "| kernel-relay, socket.io | 6.80 ms | 13.60 ms | 1.00 |" in table
    assert "| kernel-relay, Jupyter v1 | 3.80 ms | 7.60 ms | 0.56 |" in table


@pytest.mark.timeout(120)
def test_the_forwarders_kernel_is_encrypted_as_the_relays_and_the_forwarder_answers_through_curve(
    tmp_path: Path,
) -> None:
    """The floor's kernel has CurveZMQ keys (the relay's default) and a round trip through the forwarder works."""
    from bench.clients import ForwarderClient
    from bench.processes import DirectKernel, Forwarder
    from bench.run import FLOOR_ENCRYPTION
    from bench.scenarios import wait_reply

    kernel = DirectKernel(tmp_path, FLOOR_ENCRYPTION)
    try:
        # (A libzmq without CurveZMQ runs the relay's kernels and the floor's unencrypted alike.)
        assert bool(kernel.connection_info.get("curve_publickey")) == (FLOOR_ENCRYPTION == "auto")
        floor = Forwarder(kernel.connection_info)
        try:
            client = ForwarderClient(floor.port, kernel.connection_info)
            reply = wait_reply(client, client.send("shell", "kernel_info_request", {}))
            assert reply.content["status"] == "ok"
            client.close()
        finally:
            floor.stop()
    finally:
        kernel.stop()


@pytest.mark.timeout(180)
def test_the_ab_comparison_reports_each_front_of_each_tree_and_the_floor() -> None:
    """python -m bench.ab gives CPU per request for both fronts of each source tree, and each one's ratio to the floor."""
    completed = subprocess.run(
        [sys.executable, "-m", "bench.ab", "A=src", "--rounds", "1", "--per", "2", "--floor"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=150,
    )
    assert completed.returncode == 0, completed.stdout[-4000:] + completed.stderr[-4000:]
    lines = completed.stdout.splitlines()
    for target in ("A socket.io", "A jupyter", "forwarder"):
        [line] = [line for line in lines if line.startswith(target + " ")]
        assert " us (median " in line and line.endswith("x the forwarder")

"""The Markdown table of ratios and the PNG plots, from a results dict."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.rest import markdown_lines as rest_lines
from bench.sandbox import markdown_lines as sandbox_lines
from bench.scale import markdown_lines as scale_lines

TARGETS = ("direct", "relay", "relay_jupyter", "jupyter_server")
LABELS = {
    "direct": "direct ZMQ",
    "relay": "kernel-relay",
    "relay_jupyter": "kernel-relay (Jupyter v1)",
    "jupyter_server": "Jupyter Server",
    "forwarder": "the forwarder",
    "forwarder_iopub": "the forwarder passing iopub on",
}
COLORS = {
    "direct": "#4c72b0",
    "relay": "#dd8452",
    "relay_jupyter": "#c44e52",
    "jupyter_server": "#55a868",
}


def _ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or b == 0:
        return "n/a"
    return f"{a / b:.2f}"


def _fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "n/a"
    if unit == "ms":
        return f"{value * 1000:.2f} ms"
    if unit == "s":
        return f"{value:.2f} s"
    if unit == "/s":
        return f"{value:,.0f}/s"
    return f"{value}"


def _rows(results: dict[str, Any]) -> list[tuple[str, dict[str, float | None], str, str, str]]:
    """(metric, value per target, unit, target text, lower-is-better or higher-is-better)."""
    rows: list[tuple[str, dict[str, float | None], str, str, str]] = []
    for kind, label in (("kernel_info", "kernel_info_request"), ("execute", 'execute "pass"')):
        data = results.get(f"round_trip_{kind}")
        if data:
            for stat in ("median", "p99"):
                values = {t: data[t][stat] for t in TARGETS if t in data}
                target = "≤ 1.15 x direct" if stat == "median" else ""
                rows.append((f"round trip {label}, {stat}", values, "ms", target, "lower"))
    flood = results.get("flood") or {}
    for size, data in flood.items():
        values = {t: data[t]["msgs_per_s"] for t in TARGETS if t in data}
        rows.append(
            (
                f"iopub flood {int(size):,} msgs, throughput",
                values,
                "/s",
                "≥ 0.9 x direct",
                "higher",
            )
        )
        lost = {t: float(data[t]["lost"]) for t in TARGETS if t in data}
        rows.append((f"iopub flood {int(size):,} msgs, lost", lost, "", "0", "lower"))
    large = results.get("large") or {}
    for kind in ("display_data", "binary_buffer"):
        if kind in large:
            values = {t: large[kind][t]["median"] for t in TARGETS if t in large[kind]}
            size = large.get("bytes", 0)
            rows.append(
                (
                    f"large {kind} ({size / 1e6:g} MB), end to end",
                    values,
                    "ms",
                    "≤ 1.5 x direct",
                    "lower",
                )
            )
    spawn = results.get("spawn")
    if spawn:
        values = {t: spawn[t]["median"] for t in TARGETS if t in spawn}
        rows.append(("spawn until kernel_info answers", values, "s", "≤ 1.1 x direct", "lower"))
    return rows


def _pooled_lines(results: dict[str, Any]) -> list[str]:
    pooled = results.get("spawn_pooled", {}).get("relay_pooled")
    if not pooled:
        return []
    cold = results.get("spawn", {}).get("relay")
    cold_text = f"; a cold `/spawn` took {cold['median'] * 1000:.0f} ms" if cold else ""
    return [
        "",
        "## Spawn from a warm pool (kernel-relay only)",
        "",
        f"`--pool python3=2`: `/spawn` until kernel_info answers, median "
        f"**{pooled['median'] * 1000:.1f} ms** (p99 {pooled['p99'] * 1000:.1f} ms, "
        f"{pooled['n']} spawns; target ≤ 50 ms){cold_text}.",
    ]


def _relay_loss_lines(results: dict[str, Any]) -> list[str]:
    """Where the relay's flood losses happened, when it lost any (see ``scenarios._flood_once``)."""
    lines = []
    for size, data in (results.get("flood") or {}).items():
        relay = data.get("relay")
        if relay and relay["lost"]:
            inside = relay.get("lost_in_relay", 0)
            lines.append(
                f"- Flood of {int(size):,} through the relay: its worst run lost {relay['lost']:,} "
                f"messages, and at most {inside:,} in a run were lost inside the relay. The rest never "
                "reached the relay's code: the kernel's iopub queue, or the relay's ZeroMQ receive queue "
                "(1,000 messages), overflowed."
            )
    return ["", *lines] if lines else []


#: The relay's round-trip median over the forwarder's. The issue's target, ≤ 1.15 x direct ZMQ, is within
#: the noise of the forwarder alone on a 2-core VM (1.04-1.16 x direct over six full runs), so what the
#: relay's own code adds is held to this bound instead (see docs/benchmarks.rst).
FLOOR_TARGET = 1.15


def _floor_lines(results: dict[str, Any]) -> list[str]:
    """The round trips' structural floor: the forwarder against direct ZMQ, and the relay against it."""
    lines = []
    for kind in ("kernel_info", "execute"):
        data = results.get(f"round_trip_{kind}") or {}
        if not {"direct", "forwarder", "relay"} <= set(data):
            continue
        direct, floor, relay = (data[t]["median"] for t in ("direct", "forwarder", "relay"))
        verdict = "met" if floor > 0 and relay / floor <= FLOOR_TARGET else "MISSED"
        lines.append(
            f"- {kind}: forwarder {floor * 1000:.2f} ms ({_ratio(floor, direct)} x direct); relay "
            f"minus forwarder {(relay - floor) * 1000:+.2f} ms (relay {_ratio(relay, floor)} x the "
            f"forwarder; target ≤ {FLOOR_TARGET} x the forwarder: {verdict})."
        )
    if not lines:
        return []
    return [
        "",
        "## Round trips: the structural floor",
        "",
        "A forwarder that does no work (`bench/forwarder.py`, on a kernel of its own) pays only for being "
        "a process between the client and the kernel that receives the kernel's iopub messages: its time "
        "over direct ZMQ is what no relay can avoid on this machine, and the relay's time over the "
        "forwarder is the cost of its own code. On a 2-core VM the forwarder alone can take 1.15 x direct, "
        "so the relay's own cost is held to the target below. Medians:",
        "",
        *lines,
    ]


#: Each front's CPU per request against the floor that sends its client what it sends: one reply per
#: request on socket.io (a client on shell alone), the reply and two statuses on the Jupyter WebSocket.
CPU_FLOORS = (
    ("relay", "forwarder"),
    ("relay_jupyter", "forwarder"),
    ("relay_jupyter", "forwarder_iopub"),
)


def _server_cpu_lines(results: dict[str, Any]) -> list[str]:
    """Each server process's CPU time per request and per flood message (every thread of it)."""
    measured: list[tuple[str, dict[str, Any], str]] = [
        (kind, results.get(f"round_trip_{kind}") or {}, "request")
        for kind in ("kernel_info", "execute")
    ]
    measured += [
        (f"flood of {int(size):,}", data, "message")
        for size, data in (results.get("flood") or {}).items()
    ]
    lines = []
    for label, data, unit in measured:
        used = {
            name: d["server_cpu"] for name, d in data.items() if d.get("server_cpu") is not None
        }
        if "relay" not in used:
            continue
        cells = [
            f"{LABELS.get(name, name)} {used[name] * 1e6:,.0f} µs"
            for name in ("relay", "relay_jupyter", "forwarder", "forwarder_iopub", "jupyter_server")
            if name in used
        ]
        cells += [
            f"{LABELS[front]} {used[front] / used[floor]:.2f} x {LABELS[floor]}"
            for front, floor in CPU_FLOORS
            if front in used and floor in used
        ]
        lines.append(f"- {label}, per {unit}: " + ", ".join(cells) + ".")
    if not lines:
        return []
    return [
        "",
        "## Server CPU",
        "",
        "CPU time of every thread of each server process (the kernel runs in a process of its own): per "
        "round trip over that target's turns, and per message the kernel published in a flood (the median "
        "of its floods). It is what each one's code costs, which the machine's scheduling moves much less than it "
        "moves the times above.",
        "",
        *lines,
    ]


#: The Jupyter front's targets (issue 21): its server CPU per flood message against the socket.io front's
#: and Jupyter Server's.
JUPYTER_CPU_TARGETS = {"relay": 0.5, "jupyter_server": 0.1}


def _verdict(value: float | None, bound: float) -> str:
    return "met" if value is not None and value <= bound else "MISSED"


def _jupyter_front_lines(results: dict[str, Any]) -> list[str]:
    """The relay's Jupyter front (v1) against the forwarder, the socket.io front and Jupyter Server."""
    lines = []
    for kind in ("kernel_info", "execute"):
        data = results.get(f"round_trip_{kind}") or {}
        if not {"forwarder", "relay_jupyter"} <= set(data):
            continue
        ratio = data["relay_jupyter"]["median"] / data["forwarder"]["median"]
        lines.append(
            f"- round trip {kind}: {data['relay_jupyter']['median'] * 1000:.2f} ms, {ratio:.2f} x the "
            f"forwarder (target ≤ {FLOOR_TARGET}: {_verdict(ratio, FLOOR_TARGET)})."
        )
    for size, data in (results.get("flood") or {}).items():
        front = data.get("relay_jupyter")
        if not front:
            continue
        cells = [f"lost {front['lost']:,}"]
        if "jupyter_server" in data:
            cells.append(f"Jupyter Server lost {data['jupyter_server']['lost']:,}")
        cpu = front.get("server_cpu")
        for name, bound in JUPYTER_CPU_TARGETS.items():
            other = (data.get(name) or {}).get("server_cpu")
            if cpu and other:
                ratio = cpu / other
                cells.append(
                    f"CPU per message {cpu * 1e6:,.1f} µs = {ratio:.2f} x {LABELS[name]}'s "
                    f"(target ≤ {bound}: {_verdict(ratio, bound)})"
                )
        lines.append(f"- flood of {int(size):,}: " + "; ".join(cells) + ".")
    for count, fan in (results.get("fanout_jupyter") or {}).items():
        every = fan["clients_complete"] == fan["clients"]
        lines.append(
            f"- fan-out to {int(count):,} clients: {fan['delivered']:,} of {fan['expected']:,} delivered, "
            f"{fan['clients_complete']:,} clients got every message (target: all: {'met' if every else 'MISSED'}), "
            f"{fan['deliveries_per_s']:,.0f} deliveries/s."
        )
    if not lines:
        return []
    return ["", "## The Jupyter kernel WebSocket front (v1)", "", *lines]


FLEET_LABELS = {
    "plain": "plain relay (no --redis)",
    "one_relay": "one relay (a fleet of one)",
    "two_relays": "two relays, one Redis",
}


def _per_1000(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f} s"


def _fleet_lines(results: dict[str, Any]) -> list[str]:
    """Issue 23's fan-out over a fleet: one relay against two on one Redis, and a plain relay beside them."""
    fleet = results.get("fleet_fanout")
    if not fleet:
        return []
    lines = [
        "",
        "## Fan-out over a fleet: one kernel's iopub flood, one relay against two on one Redis",
        "",
        "| case | relays | clients | deliveries/s | relay CPU per 1,000 deliveries | Redis CPU per 1,000 "
        "deliveries | lost |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, data in fleet.items():
        lines.append(
            f"| {FLEET_LABELS.get(name, name)} | {data['relays']} | {data['clients']:,} | "
            f"{data['deliveries_per_s']:,.0f} | {_per_1000(data['relay_cpu_s_per_1000'])} | "
            f"{_per_1000(data['redis_cpu_s_per_1000'])} | {data['lost']:,} |"
        )
    messages = next(iter(fleet.values()))["messages"]
    notes = [
        f"The kernel publishes {messages:,} stream messages; deliveries/s counts every client's from the "
        "first delivery to the last. CPU is every thread of each relay process, summed over the relays."
    ]
    for name, data in fleet.items():
        calls = data.get("redis_scripts_per_message")
        if calls is not None:
            notes.append(
                f"{FLEET_LABELS.get(name, name)}: {calls:.2f} Redis script calls per flood message."
            )
        alone = sum(relay.get("numbered_alone") or 0 for relay in data.get("per_relay", ()))
        if alone:
            notes.append(
                f"{FLEET_LABELS.get(name, name)}: the relays numbered {alone:,} messages alone, Redis's "
                "answers not read in time (the fleet's stream misses them)."
            )
        if data.get("dropped_by_relay"):
            notes.append(
                f"{FLEET_LABELS.get(name, name)}: the relays closed {data['dropped_by_relay']:,} clients."
            )
    return [*lines, "", " ".join(notes)]


def markdown(results: dict[str, Any], meta: dict[str, Any]) -> str:
    lines = [
        "# kernel-relay benchmark",
        "",
        f"Command: `{meta['command']}`  ",
        f"Date: {meta['date']}; {meta['cpus']} CPUs; load average {meta['load_start']} at start, "
        f"{meta['load_end']} at end; Python {meta['python']}; ipykernel {meta['versions'].get('ipykernel')}, "
        f"jupyter_server {meta['versions'].get('jupyter_server')}.",
        "",
        "| metric | "
        + " | ".join(LABELS[t] for t in TARGETS)
        + " | relay ÷ direct | relay ÷ Jupyter Server | target |",
        "|---|" + "---:|" * (len(TARGETS) + 2) + "---|",
    ]
    for metric, values, unit, target, _ in _rows(results):
        cells = [_fmt(values.get(t), unit) if unit else _fmt(values.get(t), "") for t in TARGETS]
        if unit:
            r_direct = _ratio(values.get("relay"), values.get("direct"))
            r_js = _ratio(values.get("relay"), values.get("jupyter_server"))
        else:
            r_direct = r_js = ""
        lines.append(f"| {metric} | {' | '.join(cells)} | {r_direct} | {r_js} | {target} |")
    lines += _relay_loss_lines(results)
    lines += rest_lines(results)
    lines += _floor_lines(results)
    lines += _server_cpu_lines(results)
    lines += _jupyter_front_lines(results)
    fan = results.get("fanout")
    if fan:
        lines += [
            "",
            "## Fan-out (kernel-relay only): one kernel's iopub flood to N clients",
            "",
            "| clients | messages each | delivered / expected | clients with every message | deliveries/s | relay CPU s per 1,000 deliveries |",
            "|---:|---:|---:|---:|---:|---:|",
        ]
        for data in fan.values():
            per = data["relay_cpu_s_per_1000"]
            lines.append(
                f"| {data['clients']} | {data['messages']:,} | {data['delivered']:,} / {data['expected']:,} "
                f"| {data['clients_complete']} | {data['deliveries_per_s']:,.0f} | "
                f"{'n/a' if per is None else f'{per:.3f}'} |"
            )
    lines += _fleet_lines(results)
    lines += sandbox_lines(results)
    lines += scale_lines(results)
    lines += _pooled_lines(results)
    idle = results.get("idle")
    if idle:
        lines += [
            "",
            "## Idle connections (kernel-relay only)",
            "",
            f"{idle['clients']:,} WebSocket clients joined to one kernel's iopub, held {idle['hold_s']:g} s "
            f"with a {idle['ping_interval_s']:g} s ping interval (each answered {idle['heartbeats_min']}-"
            f"{idle['heartbeats_max']} heartbeats): **{idle['dropped']} dropped**; relay RSS "
            f"{idle['relay_rss_before'] / 2**20:.1f} MB before, {idle['relay_rss_held'] / 2**20:.1f} MB "
            f"held: **{idle['relay_rss_per_client'] / 1024:.1f} KB per client** (aim ≤ 50 KB).",
        ]
    lines += [
        "",
        "Ratios are relay ÷ baseline (lower is better for times, higher for throughput).",
        "",
    ]
    return "\n".join(lines)


def plots(results: dict[str, Any], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written: list[Path] = []

    def bars(
        ax: Any, groups: list[str], per_target: dict[str, list[float | None]], ylabel: str
    ) -> None:
        width = 0.8 / max(1, len(per_target))
        for index, (target, values) in enumerate(per_target.items()):
            xs = [g + index * width for g in range(len(groups))]
            ys = [v if v is not None else 0 for v in values]
            ax.bar(xs, ys, width, label=LABELS[target], color=COLORS[target])
        ax.set_xticks([g + width * (len(per_target) - 1) / 2 for g in range(len(groups))])
        ax.set_xticklabels(groups, fontsize=8)
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=3)

    rt = [(k, results.get(f"round_trip_{k}")) for k in ("kernel_info", "execute")]
    rt = [(k, v) for k, v in rt if v]
    if rt:
        fig, ax = plt.subplots(figsize=(7, 4))
        groups = [f"{k}\n{stat}" for k, _ in rt for stat in ("median", "p99")]
        per_target = {
            t: [v[t][stat] * 1000 for _, v in rt for stat in ("median", "p99")]
            for t in TARGETS
            if all(t in v for _, v in rt)
        }
        bars(ax, groups, per_target, "round trip (ms)")
        ax.set_title("Request/reply round trip")
        written.append(_save(fig, out / "round_trip.png"))
    flood = results.get("flood")
    if flood:
        fig, ax = plt.subplots(figsize=(7, 4))
        groups = [f"{int(s):,} msgs" for s in flood]
        per_target = {
            t: [flood[s][t]["msgs_per_s"] for s in flood]
            for t in TARGETS
            if all(t in flood[s] for s in flood)
        }
        bars(ax, groups, per_target, "messages/s delivered")
        for index, (target, _) in enumerate(per_target.items()):
            for g, size in enumerate(flood):
                lost = flood[size][target]["lost"]
                if lost:
                    x = g + index * 0.8 / len(per_target)
                    ax.annotate(
                        f"lost {lost:,}",
                        (x, flood[size][target]["msgs_per_s"]),
                        fontsize=7,
                        ha="center",
                    )
        ax.set_title("iopub flood throughput")
        written.append(_save(fig, out / "flood.png"))
    large = results.get("large")
    if large:
        fig, ax = plt.subplots(figsize=(7, 4))
        kinds = [k for k in ("display_data", "binary_buffer") if k in large]
        per_target = {
            t: [large[k][t]["median"] * 1000 for k in kinds]
            for t in TARGETS
            if all(t in large[k] for k in kinds)
        }
        bars(ax, kinds, per_target, "end-to-end time (ms)")
        ax.set_title(f"Large message ({large['bytes'] / 1e6:g} MB)")
        written.append(_save(fig, out / "large.png"))
    fan = results.get("fanout")
    if fan:
        fig, ax = plt.subplots(figsize=(7, 4))
        xs = [d["clients"] for d in fan.values()]
        ax.plot(
            xs,
            [d["deliveries_per_s"] for d in fan.values()],
            "o-",
            color=COLORS["relay"],
            label="deliveries/s",
        )
        ax.set_xscale("log")
        ax.set_xlabel("clients on one iopub")
        ax.set_ylabel("deliveries/s")
        ax2 = ax.twinx()
        ax2.plot(
            xs,
            [d["relay_cpu_s_per_1000"] or 0 for d in fan.values()],
            "s--",
            color="gray",
            label="relay CPU s / 1,000",
        )
        ax2.set_ylabel("relay CPU s per 1,000 deliveries")
        ax.set_title("Fan-out (kernel-relay)")
        fig.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, 0.88))
        written.append(_save(fig, out / "fanout.png"))
    spawn = results.get("spawn")
    if spawn:
        fig, ax = plt.subplots(figsize=(6, 4))
        targets = [t for t in TARGETS if t in spawn]
        ax.bar(
            [LABELS[t] for t in targets],
            [spawn[t]["median"] for t in targets],
            color=[COLORS[t] for t in targets],
        )
        ax.set_ylabel("seconds until kernel_info answers")
        ax.set_title("Kernel start")
        written.append(_save(fig, out / "spawn.png"))
    return written


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path

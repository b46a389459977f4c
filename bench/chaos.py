"""
``python -m bench.chaos --minutes N --seed S``: a fleet under seeded faults (issue 30), and what its clients saw.

Three relays on one Redis serve kernels that print a counter every 20-50 ms. socket.io watchers (resuming with
``since``) and Jupyter watchers (resuming by ``session_id``) move between the relays now and then, while at
random the harness SIGKILLs a relay (and starts another), SIGSTOPs one past its lease, SIGTERMs one, restarts
Redis empty, or kills a kernel (and starts another). At the end every relay is stopped, and it reports:

- ``lost_without_notice``: counter lines a watcher never got, with no ``replay_gap`` told;
- ``sio_repeats``: lines a socket.io watcher got twice;
- ``jupyter_repeat_seconds_max``: the most output (in seconds of it) a Jupyter watcher got again on a reconnect;
- ``jupyter_repeat_beyond_unread_max``: the same, counting only lines it had first got earlier than
  ``UNREAD_SECONDS`` before the close of that connection. A Jupyter client acknowledges nothing, so when it
  closes, the relay sends again what it handed it in the last ``UNREAD_SECONDS`` (its close may have dropped
  them). In steady flow that is a quarter second of output; just after the relay thawed from a stall it is the
  backlog the relay handed in that burst (seconds of output, in a run where a watcher closed 0.2 s after its
  relay's SIGCONT). Lines older than that window come again only where the relay lost the client's position
  (its relay SIGKILLed, say), and those are bounded;
- ``two_numbers``: messages that reached watchers with two ``relay_seq``; ``false_deaths``: a watcher told its
  kernel died while its process ran; ``kernels_left``: kernel processes running after the relays stopped.

It prints one JSON line and exits 1 if any of these is over its bound (0; 0.5 s for Jupyter repeats beyond the
unread window; ``jupyter_repeat_seconds_max`` is reported, not bounded).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import requests
import socketio
import websocket

from bench.processes import REDIS_SERVER, free_port
from bench.sio_order import in_arrival_order
from kernel_relay.fronts.jupyter_connection import UNREAD_SECONDS

TOKEN = "chaos-token-0123456789abcdefghijkl"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
LEASE = 2.0
LOOP = (
    "import time, random\nrandom.seed({seed})\ni = 0\nwhile True:\n"
    "    print(i, flush=True)\n    i += 1\n    time.sleep(random.uniform(0.02, 0.05))"
)
SECONDS_PER_LINE = 0.035
#: The most output (in seconds of it) a Jupyter watcher may get again on a reconnect (issue 30), besides what
#: it got in the last UNREAD_SECONDS before it closed.
REPEAT_BOUND = 0.5


class Redis:
    """redis-server on a fixed port, keeping nothing: ``restart`` comes back empty on the same port."""

    def __init__(self, directory: Path) -> None:
        self.port = free_port()
        self.directory = directory
        self.process: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                *(REDIS_SERVER, "--bind", "127.0.0.1", "--port", str(self.port)),
                *("--save", "", "--appendonly", "no", "--dir", str(self.directory)),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(0.3)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def restart(self) -> None:
        self.stop()
        self.start()


class Relay:
    """One ``twist kernel-relay`` of the fleet, its log in the run's directory."""

    def __init__(self, base: Path, redis: Redis, name: str, *extra: str) -> None:
        self.name = name
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        runtime = base / "runtime"
        runtime.mkdir(exist_ok=True)
        self.log = (base / f"{name}.log").open("wb")
        argv = [sys.executable, "-m", "twisted", "kernel-relay", "--port", str(self.port)]
        argv += ["--token", TOKEN, "--redis", f"redis://127.0.0.1:{redis.port}/0"]
        argv += ["--fleet-lease", str(LEASE), *extra]
        self.process = subprocess.Popen(
            argv,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "JUPYTER_RUNTIME_DIR": str(runtime), "KERNEL_RELAY_TOKEN": ""},
        )
        self.stopped = False
        self.frozen = False

    def ready(self, timeout: float = 60) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.process.poll() is None:
            try:
                answer = requests.get(f"{self.url}/api/health/ready", timeout=2).status_code
                if answer == 404:  # a relay from before readiness: up is all it can say
                    answer = requests.get(f"{self.url}/api/health", timeout=2).status_code
                if answer == 200:
                    return True
            except requests.RequestException:
                pass
            time.sleep(0.2)
        return False

    @property
    def alive(self) -> bool:
        return not self.stopped and not self.frozen and self.process.poll() is None

    def signal(self, number: int) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, number)

    def stop(self, grace: float = 30) -> None:
        self.stopped = True
        if self.frozen:
            self.signal(signal.SIGCONT)
        self.signal(signal.SIGTERM)
        try:
            self.process.wait(grace)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()


@dataclass
class Seen:
    """What one watcher saw of one kernel: each line's count, gaps told, and repeats per reconnect."""

    lines: dict[int, int] = field(default_factory=dict)
    gaps: int = 0
    repeat_seconds: list[float] = field(default_factory=list)
    told_dead: list[float] = field(default_factory=list)
    visits: list[Visit] = field(default_factory=list)
    first_got: dict[int, tuple[float, int]] = field(default_factory=dict)
    """Jupyter watchers: each line's first arrival (seconds into the run) and the visit it came in."""
    again: list[list[int]] = field(default_factory=list)
    """Jupyter watchers: the lines each visit got again (one list a visit, as ``repeat_seconds``)."""

    def beyond_unread(self) -> list[float]:
        """Per visit, the output (seconds) it got again that had first come before its visit's unread window."""
        seconds = []
        for lines in self.again:
            older = 0
            for line in lines:
                when, index = self.first_got[line]
                if when <= self.visits[index].end - UNREAD_SECONDS:
                    older += 1
            seconds.append(older * SECONDS_PER_LINE)
        return seconds


@dataclass
class Visit:
    """One connection of a watcher: to which relay, when, the lines it got first and last, how it ended."""

    relay: str
    start: float
    first: int | None = None
    last: int | None = None
    end: float = 0.0
    ended: str = ""
    gaps: int = 0


class Run:
    """The fleet, the kernels, the watchers and the tallies of one seeded run."""

    def __init__(self, base: Path, seed: int, extra: tuple[str, ...] = ()) -> None:
        self.base = base
        self.extra = extra
        self.random = random.Random(seed)
        self.redis = Redis(base)
        self.relays = [Relay(base, self.redis, f"relay{n}", *extra) for n in range(3)]
        self.count = 3
        for relay in self.relays:
            relay.ready()
        self.kernels: dict[str, str] = {}  # kernel id -> the loop cell's msg_id
        self.killed: set[str] = set()
        self.numbers: dict[str, set[int]] = {}
        self.sio_again: list[tuple[str, str, int, Any, Any]] = []
        """Lines a socket.io watcher got again: who, kernel, line, its first arrival and this one."""
        self.lock = threading.Lock()
        self.seen: dict[tuple[str, str], Seen] = {}
        self.stop = threading.Event()
        self.faults: dict[str, int] = {}
        # When, and which fault (for the context of each loss).
        self.events: list[tuple[float, str]] = []
        self.started = time.time()
        self.threads: list[threading.Thread] = []

    # -- the fleet ---------------------------------------------------------------------------------------

    def live(self) -> list[Relay]:
        return [relay for relay in self.relays if relay.alive]

    def spawn(self) -> None:
        """A kernel on some live relay, printing, watched (asked again for up to a minute)."""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            for relay in self.random.sample(self.live(), len(self.live())):
                try:
                    response = requests.get(f"{relay.url}/spawn/python3", headers=AUTH, timeout=90)
                except requests.RequestException:
                    continue
                if response.status_code == 200:
                    kernel_id = response.json()["id"]
                    self.kernels[kernel_id] = self.start_loop(relay, kernel_id)
                    self.watch(kernel_id)
                    return
            time.sleep(1)

    def start_loop(self, relay: Relay, kernel_id: str) -> str:
        ws = websocket.create_connection(
            f"ws://127.0.0.1:{relay.port}/api/kernels/{kernel_id}/channels?session_id={uuid.uuid4().hex}",
            header=[f"Authorization: token {TOKEN}"],
            timeout=30,
        )
        msg_id = uuid.uuid4().hex
        code = LOOP.format(seed=self.random.randrange(1 << 30))
        ws.send(
            json.dumps(
                {
                    "header": {
                        "msg_id": msg_id,
                        "msg_type": "execute_request",
                        "session": uuid.uuid4().hex,
                        "username": "chaos",
                        "date": "",
                        "version": "5.3",
                    },
                    "parent_header": {},
                    "metadata": {},
                    "content": {"code": code, "silent": False},
                    "channel": "shell",
                }
            )
        )
        ws.close()
        return msg_id

    def fault(self) -> None:
        live = self.live()
        kinds = ["sigkill", "sigstop", "sigterm", "redis", "kernel"]
        kind = self.random.choice(kinds if len(live) > 1 else ["redis", "kernel"])
        self.faults[kind] = self.faults.get(kind, 0) + 1
        began = time.time()
        target = self.fault_once(kind, live)
        self.events.append((began, f"{kind} {target} ({time.time() - began:.1f} s)"))

    def fault_once(self, kind: str, live: list[Relay]) -> str:
        """Inflict one fault; what it hit."""
        target = ""
        if kind == "redis":
            self.redis.restart()
        elif kind == "kernel" and self.kernels:
            kernel_id = self.random.choice(sorted(set(self.kernels) - self.killed))
            target = kernel_id[:8]
            self.killed.add(kernel_id)
            for process in kernel_processes(kernel_id):
                try:
                    process.kill()
                except psutil.NoSuchProcess:
                    pass  # it ended between the listing and the kill
            self.spawn()
        elif kind == "sigstop":
            relay = self.random.choice(live)
            target = relay.name
            relay.frozen = True
            relay.signal(signal.SIGSTOP)
            time.sleep(self.random.uniform(2 * LEASE, 4 * LEASE))
            relay.signal(signal.SIGCONT)
            relay.frozen = False
        elif kind in ("sigkill", "sigterm"):
            relay = self.random.choice(live)
            target = relay.name
            if kind == "sigkill":
                relay.signal(signal.SIGKILL)
                relay.process.wait()
                relay.stopped = True
                relay.log.close()
            else:
                relay.stop()
            self.relays.remove(relay)
            time.sleep(self.random.uniform(0.5, 3))
            fresh = Relay(self.base, self.redis, f"relay{self.count}", *self.extra)
            self.count += 1
            self.relays.append(fresh)
            fresh.ready()
            target += f" -> {fresh.name}"
        return target

    # -- watchers ------------------------------------------------------------------------------------------

    def record(self, who: str, kernel_id: str, message: dict[str, Any]) -> int | None:
        """Tally a message; the counter line it carries, if it is one of the loop's."""
        seq = message.get("metadata", {}).get("relay_seq")
        header = message.get("header", {})
        with self.lock:
            if seq is not None and header.get("msg_type") != "status":
                self.numbers.setdefault(header.get("msg_id", ""), set()).add(int(seq))
            if (
                header.get("msg_type") == "status"
                and message.get("content", {}).get("execution_state") == "dead"
                and kernel_id not in self.killed
                and kernel_processes(kernel_id)
            ):
                self.seen.setdefault((who, kernel_id), Seen()).told_dead.append(time.time())
        if header.get("msg_type") != "stream":
            return None
        if message.get("parent_header", {}).get("msg_id") != self.kernels.get(kernel_id):
            return None
        lines = [int(t) for t in message["content"]["text"].split() if t.isdigit()]
        return lines[-1] if len(lines) == 1 else None

    def next_relay(self) -> Relay | None:
        """A live relay chosen at random for a watcher's next connection; None (after a pause) while none lives."""
        relays = self.live()
        if not relays:
            time.sleep(0.5)
            return None
        return self.random.choice(relays)

    def sio_watcher(self, who: str, kernel_id: str) -> None:
        since: int | None = None
        seen = self.seen.setdefault((who, kernel_id), Seen())
        first: dict[int, Any] = {}
        """Each line's first arrival: the connection (relay, since, when it joined) and its relay_seq."""
        while not self.stop.is_set() and kernel_id not in self.killed:
            relay = self.next_relay()
            if relay is None:
                continue
            client = in_arrival_order(socketio.Client(reconnection=False))
            namespace = f"/iopub/{kernel_id}"
            joined = (relay.name, since, time.time() - self.started)

            def message(m: dict[str, Any], joined: tuple[str, int | None, float] = joined) -> None:
                nonlocal since
                line = self.record(who, kernel_id, m)
                seq = m.get("metadata", {}).get("relay_seq")
                if seq is not None:
                    since = max(since or 0, int(seq))
                if line is not None:
                    with self.lock:
                        seen.lines[line] = seen.lines.get(line, 0) + 1
                        if seen.lines[line] == 1:
                            first[line] = (joined, seq)
                        else:
                            self.sio_again.append(
                                (who, kernel_id, line, first.get(line), (joined, seq))
                            )

            def gap(details: dict[str, Any]) -> None:
                with self.lock:
                    seen.gaps += 1

            client.on("msg", message, namespace=namespace)
            client.on("replay_gap", gap, namespace=namespace)
            auth: dict[str, Any] = {"token": TOKEN}
            if since is not None:
                auth["since"] = since
            try:
                client.connect(relay.url, namespaces=[namespace], auth=auth, wait_timeout=10)
                self.stop.wait(self.random.uniform(3, 10))
            except Exception:
                time.sleep(0.5)
            finally:
                try:
                    client.disconnect()
                except Exception:
                    pass

    def jupyter_watcher(self, who: str, kernel_id: str) -> None:
        session = uuid.uuid4().hex
        seen = self.seen.setdefault((who, kernel_id), Seen())
        while not self.stop.is_set() and kernel_id not in self.killed:
            relay = self.next_relay()
            if relay is None:
                continue
            url = (
                f"ws://127.0.0.1:{relay.port}/api/kernels/{kernel_id}/channels?session_id={session}"
            )
            again: list[int] = []
            try:
                ws = websocket.create_connection(
                    url, header=[f"Authorization: token {TOKEN}"], timeout=2
                )
            except Exception:
                time.sleep(0.5)
                continue
            until = time.monotonic() + self.random.uniform(3, 10)
            visit = Visit(relay.name, time.time() - self.started, ended="timed")
            seen.visits.append(visit)
            try:
                while time.monotonic() < until and not self.stop.is_set():
                    try:
                        message = json.loads(ws.recv())
                    except websocket.WebSocketTimeoutException:
                        continue
                    if message.get("channel") != "iopub":
                        continue
                    told = message.get("metadata", {}).get("kernel_relay", {})
                    if told.get("event") == "replay_gap":
                        seen.gaps += 1
                        visit.gaps += 1
                    line = self.record(who, kernel_id, message)
                    if line is not None:
                        if visit.first is None:
                            visit.first = line
                        visit.last = line
                        with self.lock:
                            if line in seen.lines:
                                again.append(line)
                            else:
                                seen.first_got[line] = (
                                    time.time() - self.started,
                                    len(seen.visits) - 1,
                                )
                            seen.lines[line] = seen.lines.get(line, 0) + 1
            except Exception as error:
                visit.ended = f"{type(error).__name__}: {error}"[:80]
            finally:
                visit.end = time.time() - self.started
                seen.repeat_seconds.append(len(again) * SECONDS_PER_LINE)
                seen.again.append(again)
                try:
                    ws.close()
                except Exception:
                    pass

    # -- the run -------------------------------------------------------------------------------------------

    def watch(self, kernel_id: str) -> None:
        """A socket.io and a Jupyter watcher on the kernel, each moving between the relays."""
        for kind, target in (("sio", self.sio_watcher), ("jupyter", self.jupyter_watcher)):
            thread = threading.Thread(target=target, args=(kind, kernel_id), daemon=True)
            thread.start()
            self.threads.append(thread)

    def run(self, minutes: float) -> dict[str, Any]:
        for _ in range(3):
            self.spawn()
        threads = self.threads
        deadline = time.monotonic() + minutes * 60
        while time.monotonic() < deadline:
            time.sleep(self.random.uniform(5, 15))
            if time.monotonic() < deadline:
                self.fault()
        self.stop.set()
        for thread in threads:
            thread.join(15)
        for relay in list(self.relays):
            relay.stop()
        time.sleep(2)
        left = [p.pid for k in self.kernels for p in kernel_processes(k)]
        self.redis.stop()
        return self.report(minutes, left)

    def report(self, minutes: float, left: list[int]) -> dict[str, Any]:
        lost = repeats = false_deaths = 0
        jupyter_max = beyond_max = 0.0
        holes: list[str] = []
        contexts: list[str] = []
        repeated: list[str] = []
        lost_by: dict[str, int] = {}
        for (who, kernel_id), seen in self.seen.items():
            false_deaths += len(seen.told_dead)
            if seen.lines:
                hole = set(range(min(seen.lines), max(seen.lines) + 1)) - set(seen.lines)
                if hole and not seen.gaps:
                    lost += len(hole)
                    lost_by[who] = lost_by.get(who, 0) + len(hole)
                    holes.append(f"{who} {kernel_id[:8]}: {sorted(hole)[:5]}")
                    contexts.extend(self.context(who, kernel_id, seen, hole))
            if who.startswith("sio"):
                repeats += sum(count - 1 for count in seen.lines.values())
            else:
                jupyter_max = max([jupyter_max, *seen.repeat_seconds])
                beyond = seen.beyond_unread()
                beyond_max = max([beyond_max, *beyond])
                repeated.extend(self.repeat_context(who, kernel_id, seen, beyond))
        return {
            "minutes": minutes,
            "faults": self.faults,
            "kernels": len(self.kernels),
            "lines_seen": sum(sum(seen.lines.values()) for seen in self.seen.values()),
            "jupyter_reconnects": sum(len(seen.repeat_seconds) for seen in self.seen.values()),
            "gaps_told": sum(seen.gaps for seen in self.seen.values()),
            "lost_without_notice": lost,
            "lost_by": lost_by,
            "sio_repeats": repeats,
            "jupyter_repeat_seconds_max": round(jupyter_max, 3),
            "jupyter_repeat_beyond_unread_max": round(beyond_max, 3),
            "two_numbers": sum(1 for seqs in self.numbers.values() if len(seqs) > 1),
            "false_deaths": false_deaths,
            "kernels_left": len(left),
            "holes": holes[:10],
            "loss_contexts": contexts[:20],
            "repeat_contexts": repeated[:10],
            "sio_repeat_contexts": [self.sio_repeat(*again) for again in self.sio_again[:10]],
        }

    def faults_between(self, since: float, until: float) -> list[str]:
        """The faults made from ``since`` to ``until`` (seconds into the run), each with its time."""
        return [
            f"{when - self.started:.1f} {what}"
            for when, what in self.events
            if since <= when - self.started <= until
        ]

    def sio_repeat(self, who: str, kernel_id: str, line: int, first: Any, again: Any) -> str:
        """A line a socket.io watcher got twice: each arrival's connection and number, and the faults near."""
        since = first[0][2] if first else 0.0
        faults = self.faults_between(since - 15, again[0][2] + 15)
        return (
            f"{who} {kernel_id[:8]} line {line}: first {first} then {again} "
            f"((relay, since, joined at s), relay_seq); faults near {faults}"
        )

    def repeat_context(
        self, who: str, kernel_id: str, seen: Seen, beyond: list[float]
    ) -> list[str]:
        """
        For each Jupyter reconnect over the bound (``beyond``: each one's output again beyond its unread
        window): that visit, the one before, and the faults between.
        """
        told = []
        for index, (visit, again) in enumerate(zip(seen.visits, seen.repeat_seconds, strict=False)):
            if again <= REPEAT_BOUND:
                continue
            before = seen.visits[index - 1] if index else None
            since = before.start if before else 0.0
            faults = self.faults_between(since - 15, visit.end + 1)
            told.append(
                f"{who} {kernel_id[:8]} {again:.2f} s again ({beyond[index]:.2f} s of it beyond the "
                f"unread window): visit {describe(visit)}; "
                f"before {describe(before)}; faults near {faults}"
            )
        return told

    def context(self, who: str, kernel_id: str, seen: Seen, hole: set[int]) -> list[str]:
        """For each run of lost lines: the connections either side of it and the faults between them."""
        told: list[str] = []
        runs: list[list[int]] = []
        for line in sorted(hole):
            if runs and runs[-1][-1] == line - 1:
                runs[-1].append(line)
            else:
                runs.append([line])
        for lost in runs:
            before = [v for v in seen.visits if v.last is not None and v.last < lost[0]]
            after = [v for v in seen.visits if v.first is not None and v.first > lost[-1]]
            around = [
                v
                for v in seen.visits
                if v.first is not None and v.first <= lost[0] <= (v.last or 0)
            ]
            left = max(before, key=lambda v: v.last or 0, default=None)
            right = min(after, key=lambda v: v.first or 0, default=None)
            since = left.end if left else 0.0
            until = right.start if right else time.time() - self.started
            faults = self.faults_between(since - 15, until + 1)
            told.append(
                f"{who} {kernel_id[:8]} lines {lost[0]}-{lost[-1]} ({len(lost)}): "
                f"before {describe(left)}; after {describe(right)}; inside {[describe(v) for v in around]}; "
                f"faults near {faults}"
            )
        return told


def describe(visit: Visit | None) -> str:
    if visit is None:
        return "none"
    return (
        f"{visit.relay} {visit.start:.1f}-{visit.end:.1f} s lines {visit.first}-{visit.last} "
        f"gaps {visit.gaps} ended {visit.ended}"
    )


def kernel_processes(kernel_id: str) -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter(["cmdline", "status"]):
        if f"kernel-{kernel_id}.json" in " ".join(process.info["cmdline"] or ()):
            if process.info["status"] != psutil.STATUS_ZOMBIE:
                found.append(process)
    return found


def bad(result: dict[str, Any]) -> bool:
    return bool(
        not result["lines_seen"]
        or result["lost_without_notice"]
        or result["sio_repeats"]
        or result["jupyter_repeat_beyond_unread_max"] > REPEAT_BOUND
        or result["two_numbers"]
        or result["false_deaths"]
        or result["kernels_left"]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.chaos", description=__doc__)
    parser.add_argument("--minutes", type=float, default=2.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--log-dir", type=Path, default=None)
    parser.add_argument(
        "--kernel-sandbox",
        default="auto",
        help="the relays' --kernel-sandbox (auto, required, off)",
    )
    args = parser.parse_args(argv)
    base = args.log_dir or Path(tempfile.mkdtemp(prefix="chaos-"))
    base.mkdir(parents=True, exist_ok=True)
    extra = ("--kernel-sandbox", args.kernel_sandbox) if args.kernel_sandbox else ()
    run = Run(base, args.seed, extra)
    try:
        result = run.run(args.minutes)
    finally:
        for relay in run.relays:
            if relay.process.poll() is None:
                relay.stop(10)
        run.redis.stop()
    result["seed"] = args.seed
    result["logs"] = str(base)
    print(json.dumps(result))
    return 1 if bad(result) else 0


if __name__ == "__main__":
    raise SystemExit(main())

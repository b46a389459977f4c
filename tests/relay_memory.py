"""What end-to-end tests read of a running relay's memory and gauges: RSS now, its peak, its settling."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import psutil
import requests

from tests.conftest import Relay


def rss(relay: Relay) -> int:
    """The relay process's resident memory, in bytes."""
    return int(psutil.Process(relay.process.pid).memory_info().rss)


def counter(relay: Relay, name: str) -> float:
    """The value of one unlabelled metric of the relay's /metrics."""
    metrics = requests.get(f"{relay.url}/metrics", headers=relay.headers, timeout=10).text
    for line in metrics.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    raise AssertionError(f"{name} not in /metrics")


@contextmanager
def peak_rss(relay: Relay, gauge: list[float] | None = None) -> Iterator[Callable[[], int]]:
    """
    The relay's highest resident memory while the block runs, sampled every 50 ms; with ``gauge``, the highest
    kernel_relay_buffered_bytes too, in ``gauge[0]``.
    """
    peak = rss(relay)
    stop = threading.Event()

    def watch() -> None:
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, rss(relay))
            if gauge is not None:
                gauge[0] = max(gauge[0], counter(relay, "kernel_relay_buffered_bytes"))
            time.sleep(0.05)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        yield lambda: peak
    finally:
        stop.set()
        watcher.join()


def settled_rss(relay: Relay, target: int, seconds: float = 20) -> int:
    """The relay's resident memory once it fell to ``target`` or ``seconds`` passed."""
    deadline = time.monotonic() + seconds
    now = rss(relay)
    while now > target and time.monotonic() < deadline:
        time.sleep(0.2)
        now = rss(relay)
    return now


def read_only_token(relay: Relay, kernel_id: str) -> str:
    """A read-only token of one kernel, issued with the relay's token."""
    issued = requests.post(
        f"{relay.url}/api/kernels/{kernel_id}/tokens",
        json={"access": "read-only"},
        headers=relay.headers,
        timeout=10,
    )
    assert issued.status_code in (200, 201), issued.text
    token: str = issued.json()["token"]
    return token

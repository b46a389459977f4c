"""Observability of a live relay: /api/health, Prometheus /metrics, and structured JSON logs."""

from __future__ import annotations

import json

import requests
from prometheus_client.parser import text_string_to_metric_families

from kernel_relay.metrics import RelayMetrics
from tests.conftest import Relay
from tests.kernel_client import RelayKernelClient


def samples(relay: Relay) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = requests.get(f"{relay.url}/metrics", timeout=30)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    values: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            values[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return values


def test_health_answers_ok(relay: Relay) -> None:
    """GET /api/health answers 200 with status ok, the version and the kernel count."""
    response = requests.get(f"{relay.url}/api/health", timeout=30)
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["version"]
    assert isinstance(body["kernels"], int)
    assert body["uptime_seconds"] >= 0


def test_metrics_follow_traffic(relay: Relay, kernel_id: str) -> None:
    """After a round trip the kernel, client, message, byte and spawn metrics have all moved."""
    before = samples(relay)
    client = RelayKernelClient(relay.url, kernel_id, ("shell", "iopub"))
    try:
        _, reply = client.execute("print('hello metrics')")
        assert reply["content"]["status"] == "ok"
        during = samples(relay)
    finally:
        client.close()
    assert during[("kernel_relay_kernels_running", ())] >= 1
    assert during[("kernel_relay_clients", (("channel", "iopub"),))] >= 1
    assert during[("kernel_relay_clients", (("channel", "shell"),))] >= 1
    for direction in ("to_kernel", "to_client"):
        key = (("direction", direction),)
        assert (
            during[("kernel_relay_messages_total", key)]
            > before[("kernel_relay_messages_total", key)]
        )
        assert (
            during[("kernel_relay_message_bytes_total", key)]
            > before[("kernel_relay_message_bytes_total", key)]
        )
    assert during[("kernel_relay_spawn_seconds_count", ())] >= 1
    assert during[("kernel_relay_spawn_seconds_sum", ())] > 0


def test_failed_spawn_is_an_error_metric(relay: Relay) -> None:
    """A spawn of an unknown kernelspec increments kernel_relay_errors_total{kind="spawn"}."""
    key = ("kernel_relay_errors_total", (("kind", "spawn"),))
    before = samples(relay)[key]
    assert requests.get(f"{relay.url}/spawn/no-such-spec", timeout=30).status_code == 500
    assert samples(relay)[key] == before + 1


def test_each_metrics_object_has_its_own_registry() -> None:
    """Two RelayMetrics never share counters (no global registry)."""
    first, second = RelayMetrics(), RelayMetrics()
    first.relayed("to_client", 10)
    assert b'kernel_relay_messages_total{direction="to_client"} 1.0' in first.render()[0]
    assert b'kernel_relay_messages_total{direction="to_client"} 0.0' in second.render()[0]


def test_logs_are_structured_json_off_a_terminal(relay: Relay, kernel_id: str) -> None:
    """With output to a file, twist writes one JSON event per line, and ours carry their fields."""
    client = RelayKernelClient(relay.url, kernel_id, ("iopub",))
    client.close()
    events = []
    for line in relay.output().splitlines():
        if line.startswith("{"):
            events.append(json.loads(line))
    assert events
    connects = [
        event
        for event in events
        if event.get("log_format", "").startswith("Client {address} connected")
    ]
    assert connects
    assert connects[-1]["channel"] == "iopub"
    assert kernel_id.startswith(connects[-1]["kernel"])

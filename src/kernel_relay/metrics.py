"""
The relay's Prometheus metrics, in a registry of its own (never prometheus_client's global one, so two
relays in one process, or tests, do not share counters).

Exposed at ``GET /metrics`` (see :mod:`.http.api`):

- ``kernel_relay_kernels_running`` (gauge): kernels the relay runs now.
- ``kernel_relay_clients{channel}`` (gauge): sockets joined to each channel's namespaces.
- ``kernel_relay_messages_total{direction}`` / ``kernel_relay_message_bytes_total{direction}``
  (counters): Jupyter messages relayed, ``direction`` is ``to_kernel`` or ``to_client`` (a kernel
  message counts once however many clients receive it); bytes are the message's JSON parts plus its
  buffers.
- ``kernel_relay_errors_total{kind}`` (counter): ``auth`` (401s and refused connects without a valid
  token), ``refused_message`` (client messages answered with an ``"error"`` event),
  ``connect_refused`` (namespace connects refused for another reason), ``oversized_message`` (kernel
  messages over ``--max-message-size``), ``slow_client`` (clients dropped over
  ``--max-buffered-bytes``), ``spawn`` (failed spawns), ``kernel_died``, ``kernel_unreachable`` (kernels
  that stopped answering their heartbeat), ``replay_gap`` (resuming clients told that messages they
  missed are no longer kept, or that they get no replay while their backlog is large), and the bounds
  that hold before trust: ``malformed_packet`` (clients closed for a packet the codec refused, its
  attachments over ``--max-payload`` included), ``connect_timeout`` (sessions that joined no namespace
  in time), ``session_refused`` / ``session_evicted`` (``--max-sessions[-per-address]``),
  ``connection_refused`` / ``connection_evicted`` (``--max-connections[-per-address]``) and
  ``request_timeout`` (``--header-timeout``, ``--body-timeout``).
- ``kernel_relay_connections``, ``kernel_relay_sessions``, ``kernel_relay_buffered_bytes`` (gauges): open
  connections, open Engine.IO sessions, and the bytes waiting to go out to all clients together.
- ``kernel_relay_iopub_replayed_total`` (counter): iopub messages sent again to resuming clients.
- ``kernel_relay_spawn_seconds`` (histogram): time from a ``/spawn`` request to a ready kernel.
- ``kernel_relay_kernels_culled_total`` (counter): idle kernels shut down by the culler.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any, Final

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Histogram,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector

TO_KERNEL: Final = "to_kernel"
TO_CLIENT: Final = "to_client"
ERROR_KINDS: Final = (
    "auth",
    "refused_message",
    "connect_refused",
    "oversized_message",
    "slow_client",
    "spawn",
    "kernel_died",
    "kernel_unreachable",
    "replay_gap",
    "malformed_packet",
    "connect_timeout",
    "session_refused",
    "session_evicted",
    "connection_refused",
    "connection_evicted",
    "request_timeout",
)
SPAWN_BUCKETS: Final = (0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0)


class _LiveGauges(Collector):
    """Gauges read at scrape time from the relay's own state."""

    def __init__(
        self,
        kernels_running: Callable[[], int],
        clients_by_channel: Callable[[], Mapping[str, int]],
    ) -> None:
        self.kernels_running = kernels_running
        self.clients_by_channel = clients_by_channel

    def collect(self) -> Iterator[GaugeMetricFamily]:
        yield GaugeMetricFamily(
            "kernel_relay_kernels_running",
            "Kernels the relay runs now.",
            value=self.kernels_running(),
        )
        clients = GaugeMetricFamily(
            "kernel_relay_clients",
            "Sockets joined to a kernel channel's namespaces.",
            labels=["channel"],
        )
        for channel, count in sorted(self.clients_by_channel().items()):
            clients.add_metric([channel], count)
        yield clients


class _LoadGauges(Collector):
    """What the relay holds for its clients now, read at scrape time: connections, sessions, backlog."""

    def __init__(self) -> None:
        self.connections: Callable[[], int] = lambda: 0
        self.sessions: Callable[[], int] = lambda: 0
        self.buffered_bytes: Callable[[], int] = lambda: 0

    def collect(self) -> Iterator[GaugeMetricFamily]:
        yield GaugeMetricFamily(
            "kernel_relay_connections", "Open client connections.", value=self.connections()
        )
        yield GaugeMetricFamily(
            "kernel_relay_sessions", "Open Engine.IO sessions.", value=self.sessions()
        )
        yield GaugeMetricFamily(
            "kernel_relay_buffered_bytes",
            "Bytes waiting to go out to all clients together.",
            value=self.buffered_bytes(),
        )


class _FleetGauges(Collector):
    """The fleet as this relay sees it (with ``--redis``), read at scrape time from its view."""

    def __init__(self, view: Callable[[], Mapping[str, Any]]) -> None:
        self.view = view

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        view = self.view()
        yield GaugeMetricFamily(
            "kernel_relay_fleet_redis_up",
            "1 while the fleet's Redis answers this relay, 0 while it does not.",
            value=1 if view.get("redis_up") else 0,
        )
        yield GaugeMetricFamily(
            "kernel_relay_fleet_relays",
            "Relays of the fleet whose lease runs, this one included.",
            value=view.get("relays", 1),
        )
        kernels = GaugeMetricFamily(
            "kernel_relay_fleet_kernels",
            "Kernels this relay serves: its own (it manages their processes) and other relays' (guests).",
            labels=["role"],
        )
        kernels.add_metric(["owned"], view.get("owned_kernels", 0))
        kernels.add_metric(["guest"], view.get("guest_kernels", 0))
        yield kernels
        yield CounterMetricFamily(
            "kernel_relay_fleet_adopted",
            "Kernels this relay adopted from relays whose lease expired.",
            value=view.get("adopted", 0),
        )
        yield CounterMetricFamily(
            "kernel_relay_fleet_local_numbers",
            "iopub messages this relay numbered by itself while Redis could not be reached.",
            value=view.get("local_numbers", 0),
        )


class _RelayedCounters(Collector):
    """
    The message and byte counters by direction, kept as plain integers: they count every message,
    and a prometheus_client ``Counter`` takes a lock per increment.
    """

    def __init__(self) -> None:
        self.messages = dict.fromkeys((TO_KERNEL, TO_CLIENT), 0)
        self.bytes = dict.fromkeys((TO_KERNEL, TO_CLIENT), 0)

    def collect(self) -> Iterator[CounterMetricFamily]:
        messages = CounterMetricFamily(
            "kernel_relay_messages", "Jupyter messages relayed, by direction.", labels=["direction"]
        )
        size = CounterMetricFamily(
            "kernel_relay_message_bytes",
            "Bytes of Jupyter messages relayed (JSON parts and buffers), by direction.",
            labels=["direction"],
        )
        for direction in (TO_KERNEL, TO_CLIENT):
            messages.add_metric([direction], self.messages[direction])
            size.add_metric([direction], self.bytes[direction])
        yield messages
        yield size


#: The methods the request metric names (another is "other": the method is the client's input).
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)


class RelayMetrics:
    """The counters the relay updates and the registry ``/metrics`` renders."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._live = _LiveGauges(lambda: 0, dict)
        self.registry.register(self._live)
        self._relayed = _RelayedCounters()
        self.registry.register(self._relayed)
        self._load = _LoadGauges()
        self.registry.register(self._load)
        self._errors = Counter(
            "kernel_relay_errors",
            "Requests, connects and messages the relay refused or lost, by kind.",
            ["kind"],
            registry=self.registry,
        )
        self.spawn_seconds = Histogram(
            "kernel_relay_spawn_seconds",
            "Seconds from a spawn request to a ready kernel.",
            buckets=SPAWN_BUCKETS,
            registry=self.registry,
        )
        self.culled = Counter(
            "kernel_relay_kernels_culled",
            "Idle kernels shut down by the culler.",
            registry=self.registry,
        )
        self._replayed = Counter(
            "kernel_relay_iopub_replayed",
            "iopub messages sent again to clients that resumed or asked for the running cell's output.",
            registry=self.registry,
        )
        for kind in ERROR_KINDS:
            self._errors.labels(kind)
        self._requests = Histogram(
            "http_request_duration_seconds",
            "Seconds from a request's arrival to its end (a WebSocket's: its whole life), by method, "
            "route and status, as Jupyter Server's.",
            ["method", "handler", "status_code"],
            buckets=REQUEST_BUCKETS,
            registry=self.registry,
        )
        # The process's and Python's own (process_*, python_info, python_gc_*), as every Prometheus client has.
        for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
            self.registry.register(collector)

    def request(self, method: str, handler: str, status: int, seconds: float) -> None:
        """One HTTP request ended (``handler`` is a route template, never a raw path)."""
        method = method if method in HTTP_METHODS else "other"
        self._requests.labels(method, handler, str(status)).observe(seconds)

    def watch(
        self,
        kernels_running: Callable[[], int],
        clients_by_channel: Callable[[], Mapping[str, int]],
    ) -> None:
        """Where the live gauges read their values at scrape time (the relay calls this)."""
        self._live.kernels_running = kernels_running
        self._live.clients_by_channel = clients_by_channel

    def watch_load(
        self,
        connections: Callable[[], int],
        sessions: Callable[[], int],
        buffered_bytes: Callable[[], int],
    ) -> None:
        """Where the connection, session and backlog gauges read their values (the wiring calls this)."""
        self._load.connections = connections
        self._load.sessions = sessions
        self._load.buffered_bytes = buffered_bytes

    def watch_fleet(self, view: Callable[[], Mapping[str, Any]]) -> None:
        """Add the fleet's gauges, read from ``view`` at scrape time (the wiring calls this with --redis)."""
        self.registry.register(_FleetGauges(view))

    def relayed(self, direction: str, size: int) -> None:
        """Count one message of ``size`` bytes relayed in ``direction``."""
        self._relayed.messages[direction] += 1
        self._relayed.bytes[direction] += size

    def replayed(self, count: int) -> None:
        self._replayed.inc(count)

    def error(self, kind: str) -> None:
        self._errors.labels(kind).inc()

    def render(self) -> tuple[bytes, str]:
        """The Prometheus text exposition of every metric, and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST

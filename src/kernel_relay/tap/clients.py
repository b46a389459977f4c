"""
The clients' layers of the wiring: what bounds them before any token is checked (connections, sessions,
bytes waiting), the socket.io server, the relay core, and the two fronts that translate between them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from twisted.logger import Logger

from ..auth import TokenAuth
from ..budget import BufferBudget
from ..engineio import EngineIOOptions
from ..fronts.jupyter import JupyterFront
from ..fronts.socketio import SocketIOFront
from ..http.connections import ConnectionLimiter
from ..http.file_limit import ConnectionBounds, raise_open_file_limit
from ..http.forwarded import TrustedProxies
from ..http.origins import OriginPolicy
from ..kernels import KernelRegistry
from ..memory import MemoryGiveBack
from ..metrics import RelayMetrics
from ..relay.core import RelayCore, RelayLimits, ReplayOptions
from ..socketio import SocketIOServer
from .fleet import FleetParts
from .options import Options
from .requests import ledger_options

log = Logger(namespace="kernel_relay.tap")


@dataclass(frozen=True)
class Clients:
    """What bounds and serves clients before they reach the core, whichever front they come by."""

    origins: OriginPolicy
    limiter: ConnectionLimiter
    # One bound on what waits for every client, whichever front it came by.
    budget: BufferBudget
    give_back: MemoryGiveBack
    socketio: SocketIOServer


@dataclass(frozen=True)
class Fronts:
    socketio: SocketIOFront
    jupyter: JupyterFront

    def close(self) -> None:
        self.socketio.close()
        self.jupyter.close()


def build_clients(options: Options, reactor: Any, metrics: RelayMetrics) -> Clients:
    """The connection limiter, the buffer budget and the socket.io server, counted in ``metrics``."""
    origins = OriginPolicy.from_options(options["allow-origin"])
    bounds = connection_bounds(options)
    budget = BufferBudget(options["max-total-buffered-bytes"])
    give_back = MemoryGiveBack(reactor)
    budget.on_released = give_back.released
    socketio = socketio_server(options, reactor, origins, bounds, budget)
    socketio.on_event = metrics.error
    socketio.engine.on_event = metrics.error
    limiter = ConnectionLimiter(
        bounds,
        on_event=metrics.error,
        clock=reactor,
        proxies=TrustedProxies.from_options(options["trusted-proxy"], options["forwarded-header"]),
    )
    # A connection that carries a session which joined a kernel is never evicted for a newcomer.
    socketio.engine.on_vouched_connection = limiter.trust
    metrics.watch_load(
        lambda: limiter.open_connections,
        lambda: len(socketio.engine.sessions),
        budget.measure,
    )
    return Clients(origins, limiter, budget, give_back, socketio)


def socketio_server(
    options: Options,
    reactor: Any,
    origins: OriginPolicy,
    bounds: ConnectionBounds,
    budget: BufferBudget,
) -> SocketIOServer:
    """The socket.io server (and its Engine.IO server) within the options' bounds."""
    return SocketIOServer(
        reactor,
        engineio_options=EngineIOOptions(
            ping_interval=options["ping-interval"],
            ping_timeout=options["ping-timeout"],
            max_payload=options["max-payload"],
            transports=options["transports"],
            origins=origins,
            allow_eio3=not options["no-eio3"],
            max_buffered_bytes=options["max-buffered-bytes"],
            max_total_buffered_bytes=options["max-total-buffered-bytes"],
            max_sessions=options["max-sessions"] or bounds.max_connections,
            max_sessions_per_address=options["max-sessions-per-address"] or bounds.max_per_address,
        ),
        connect_timeout=options["connect-timeout"],
        # With a token, / would be a namespace anyone may join without one: the relay has no use for it.
        main_namespace=not options["token"],
        buffer_budget=budget,
    )


def build_core(
    options: Options,
    reactor: Any,
    kernels: KernelRegistry,
    auth: TokenAuth,
    metrics: RelayMetrics,
    fleet: FleetParts,
) -> RelayCore:
    """The relay core, numbering iopub as the fleet does (if there is one), its requests kept there too."""
    core = RelayCore(
        kernels,
        reactor,
        auth=auth,
        limits=RelayLimits(
            max_clients_per_kernel=options["max-clients-per-kernel"],
            max_message_size=options["max-message-size"],
        ),
        metrics=metrics,
        replay=ReplayOptions(
            max_bytes=options["iopub-replay-bytes"], max_age=options["iopub-replay-age"]
        ),
        numbering=fleet.numbering,
        ledger=ledger_options(options),
    )
    if fleet.requests is not None:
        fleet.requests.ttl = core.ledger.options.max_age
        fleet.requests.keep = core.ledger.options.max_requests
        core.ledger.share(fleet.requests, core.last_seq)
    return core


def build_fronts(
    options: Options,
    reactor: Any,
    relay: RelayCore,
    clients: Clients,
    kernels: KernelRegistry,
    fleet: FleetParts,
) -> Fronts:
    """The socket.io front and the Jupyter front, on ``relay``."""
    socketio = SocketIOFront(clients.socketio, relay)
    jupyter = JupyterFront(
        relay,
        reactor,
        origins=clients.origins,
        max_payload=options["max-payload"],
        max_buffered_bytes=options["max-buffered-bytes"],
        budget=clients.budget,
    )
    kernels.add_observer(jupyter)  # its sessions' marks go with their kernel
    if fleet.marks is not None:
        jupyter.share_marks(fleet.marks)
    return Fronts(socketio, jupyter)


def connection_bounds(options: Options) -> ConnectionBounds:
    """
    ``--max-connections`` and ``--max-connections-per-address``, each defaulting to what the open-file
    limit allows once its soft value is raised to the hard one.
    """
    nofile = raise_open_file_limit()
    derived = ConnectionBounds.from_file_limit(nofile)
    total = options["max-connections"] or derived.max_connections
    per_address = options["max-connections-per-address"] or min(derived.max_per_address, total)
    log.info(
        "Open-file limit {nofile}: at most {total} connections, {per_address} per address",
        nofile=nofile,
        total=total,
        per_address=per_address,
    )
    return ConnectionBounds(total, per_address, derived.max_probation)

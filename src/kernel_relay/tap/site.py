"""
The HTTP layer of the wiring: the REST routes (seed, Jupyter Server's API, sessions), the guards before
them, the resource tree with the socket.io and Jupyter channels beside them, and the site with its request
bounds.
"""

from __future__ import annotations

from typing import Any

from ..auth import TokenAuth
from ..demo import demo_resources
from ..fronts.execute import ExecuteFront
from ..fronts.execute_routes import ExecuteAPI
from ..http.api import RelayAPI
from ..http.entry import SiteEntry
from ..http.guards import AuthGuard, OriginGuard
from ..http.hosts import HostPolicy
from ..http.jupyter_api import EnvPolicy, JupyterAPI, threaded_resource_reader
from ..http.routes import KleinRoutes
from ..http.sessions import SessionsAPI
from ..http.site import DEFAULT_MAX_BODY, RelayRoot, RelaySite
from ..kernels import KernelRegistry
from ..kernels.spawning import Spawner
from ..metrics import RelayMetrics
from ..relay.core import RelayCore
from ..relay.requests import RemoteRequests
from .clients import Clients, Fronts
from .fleet import FleetParts
from .options import Options


def build_routes(
    options: Options,
    reactor: Any,
    kernels: KernelRegistry,
    relay: RelayCore,
    spawner: Spawner,
    metrics: RelayMetrics,
    auth: TokenAuth,
    fleet: FleetParts,
) -> KleinRoutes:
    """The REST routes: the execute API, Jupyter Server's kernel and session APIs, the seed's and the relay's own."""
    api = RelayAPI(
        kernels, metrics=metrics, auth=auth, spawner=spawner, fleet=fleet.view, ready=fleet.ready
    )
    jupyter_api = JupyterAPI(
        kernels,
        spawner,
        relay.client_count,
        env_policy=EnvPolicy.from_option(options["kernel-env-allow"]),
        read_resource=threaded_resource_reader(reactor),
        default_spec=options["default-kernel"],
        base_url=options["base-url"],
    )
    sessions_api = SessionsAPI(kernels, jupyter_api)
    remote = None
    if fleet.requests is not None and fleet.numbering is not None:
        remote = RemoteRequests(relay.ledger, fleet.requests, fleet.numbering, reactor)
    execute_front = ExecuteFront(relay, kernels, options["max-rest-requests-per-kernel"], remote)
    execute_api = ExecuteAPI(execute_front, kernels, reactor, options["base-url"])
    return KleinRoutes(
        [
            (execute_api.app, execute_api.resource()),
            (jupyter_api.app, jupyter_api.resource()),
            (sessions_api.app, sessions_api.resource()),
            (api.app, api.resource()),
        ]
    )


def build_site(
    options: Options,
    reactor: Any,
    routes: KleinRoutes,
    auth: TokenAuth,
    metrics: RelayMetrics,
    clients: Clients,
    fronts: Fronts,
) -> RelaySite:
    """The site: guarded routes, socket.io, the Jupyter channels and the demo, under ``--base-url``."""
    root = RelayRoot(
        OriginGuard(
            AuthGuard(routes, auth, on_refused=lambda: metrics.error("auth")),
            clients.origins,
        ),
        clients.socketio.resource(),
        demo=None if options["no-demo"] else demo_resources(),
        hosts=HostPolicy.from_options(options["allow-host"], token_required=auth.enabled),
        channels=fronts.jupyter.resource(),
    )
    site = RelaySite(
        SiteEntry(root, base=options["base-url"], clock=reactor.seconds, observe=metrics.request),
        logPath=options["access-log"],
        reactor=reactor,
        limiter=clients.limiter,
    )
    site.header_timeout = options["header-timeout"]
    site.body_timeout = options["body-timeout"]
    # The largest body any route takes is an Engine.IO polling payload.
    site.max_body = max(options["max-payload"], DEFAULT_MAX_BODY)
    return site

"""
``twist kernel-relay`` / ``twistd kernel-relay``: command-line options (:mod:`.options`, :mod:`.table`) and
the service tree. Wiring only: each layer has its builder (:mod:`.kernels`, :mod:`.fleet`, :mod:`.clients`
for the core and the fronts, :mod:`.site`, :mod:`.listening`), and :func:`makeService` puts them together.
"""

from __future__ import annotations

import gc
from collections.abc import Callable
from typing import Any

from twisted.application.service import IService, MultiService

from ..auth import TokenAuth
from ..kernels import KernelRegistry
from ..metrics import RelayMetrics
from ..relay.core import RelayCore
from .clients import Clients, Fronts, build_clients, build_core, build_fronts
from .fleet import FleetParts, build_fleet
from .kernels import build_kernels, build_spawner, kernel_services
from .listening import listeners
from .options import Options
from .site import build_routes, build_site


def makeService(options: Options, reactor: Any = None) -> IService:
    """
    The relay's service tree for ``options``, on ``reactor`` (the global one by default; a test passes a
    ``MemoryReactorClock``).
    """
    if reactor is None:
        from twisted.internet import reactor
    return relay_tree(options, reactor, build_kernels)


def relay_tree(
    options: Options, reactor: Any, kernels_of: Callable[[Options, Any], KernelRegistry]
) -> IService:
    """The service tree over the kernel registry ``kernels_of`` builds (a test's fakes, for one)."""
    auth = TokenAuth(options["token"])
    metrics = RelayMetrics()
    clients = build_clients(options, reactor, metrics)
    kernels = kernels_of(options, reactor)
    fleet = build_fleet(options, reactor, kernels, auth, metrics)
    relay = build_core(options, reactor, kernels, auth, metrics, fleet)
    fronts = build_fronts(options, reactor, relay, clients, kernels, fleet)
    spawner = build_spawner(options, kernels, metrics, fleet)
    routes = build_routes(options, reactor, kernels, relay, spawner, metrics, auth, fleet)
    site = build_site(options, reactor, routes, auth, metrics, clients, fronts)
    top = MultiService()
    services = [
        *fleet.services,
        *kernel_services(
            options,
            reactor,
            kernels,
            relay,
            metrics,
            fleet,
            _stopping(fleet, relay, fronts, clients),
        ),
        *listeners(options, reactor, site, auth.enabled),
    ]
    for service in services:
        service.setServiceParent(top)
    # Everything alive once the reactor runs (modules, the application) lives as long as the process:
    # keep it out of the garbage collector's full collections, which would scan it again and again. Only
    # that: the garbage of the start is collected first (a frozen cycle is never freed), and connections,
    # which come later, are freed by reference counting as they close (they leave no cycles).
    reactor.callWhenRunning(_freeze_what_lives)
    return top


def _stopping(
    fleet: FleetParts, relay: RelayCore, fronts: Fronts, clients: Clients
) -> Callable[[], None]:
    def stopping() -> None:
        # Each kernel's iopub clients see it dead before every client is disconnected (unless the kernels
        # live on, for the fleet's other relays to adopt).
        if not fleet.hand_off():
            relay.stopping()
        fronts.close()
        clients.give_back.stop()

    return stopping


def _freeze_what_lives() -> None:
    gc.collect()
    gc.freeze()


__all__ = ["Options", "makeService", "relay_tree"]

"""
The fleet's layer of the wiring: with ``--redis``, the :class:`~kernel_relay.fleet.Fleet`, and what the other
layers take from it (:class:`FleetParts`); without, the same parts as a relay alone has them, so that no
other builder asks whether there is a fleet.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twisted.application.service import IService
from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger

from ..auth import TokenAuth
from ..fleet import Fleet, FleetStore
from ..fleet.numbering import stream_length
from ..fleet.requests import FleetRequests
from ..fleet.secrets import FleetKeys
from ..http.jupyter_api import EnvPolicy
from ..kernels import KernelRegistry
from ..kernels.spawning import FleetCapacity
from ..metrics import RelayMetrics
from ..relay.core import IopubNumbering
from ..relay.marks import SharedMarks
from .options import Options

log = Logger(namespace="kernel_relay.tap")


def _always() -> bool:
    return True


def _never() -> bool:
    return False


def _nothing() -> Deferred[None]:
    return succeed(None)


@dataclass(frozen=True)
class FleetParts:
    """What the other layers take from the fleet; the defaults are a relay's that has none."""

    #: Its service, put before the kernels' (it stops after them, so that their ends still reach Redis).
    services: tuple[IService, ...] = ()
    numbering: IopubNumbering | None = None
    capacity: FleetCapacity | None = None
    marks: SharedMarks | None = None
    requests: FleetRequests | None = None
    view: Callable[[], dict[str, Any]] | None = None
    ready: Callable[[], bool] = _always
    #: Whether the kernels live on at stop, for the fleet's other relays to adopt.
    hand_off: Callable[[], bool] = _never
    prepare_stop: Callable[[], Deferred[None]] = _nothing
    leave: Callable[[], Deferred[None]] = _nothing


def build_fleet(
    options: Options, reactor: Any, kernels: KernelRegistry, auth: TokenAuth, metrics: RelayMetrics
) -> FleetParts:
    """The fleet of ``--redis``, watched by ``metrics``; a relay alone's parts without it."""
    if options["redis"] is None:
        return FleetParts()
    keys = FleetKeys(options["fleet-secret"])
    store = FleetStore(options["redis"], reactor, keys)
    fleet = Fleet(
        store,
        kernels,
        auth,
        reactor,
        lease=options["fleet-lease"],
        launch_timeout=options["launch-timeout"],
        shutdown_timeout=options["shutdown-timeout"],
        keep=stream_length(options["iopub-replay-bytes"]),
        keep_bytes=options["iopub-replay-bytes"],
        keep_seconds=options["iopub-replay-age"],
    )
    metrics.watch_fleet(fleet.fleet_view)
    fleet.env_allowed = EnvPolicy.from_option(options["kernel-env-allow"]).allowed
    fleet.on_refused = lambda reason: refuse_to_start(reactor, reason)
    return FleetParts(
        services=(fleet,),
        numbering=fleet.numbering,
        capacity=fleet.spawning,
        marks=fleet.marks,
        requests=FleetRequests(store, keys, reactor),
        view=fleet.fleet_view,
        ready=lambda: fleet.ready,
        hand_off=fleet.hand_off,
        prepare_stop=fleet.prepare_stop,
        leave=fleet.leave,
    )


def refuse_to_start(reactor: Any, reason: str) -> None:
    """Stop the relay, which must not run as it is (another fleet's secret), with a non-zero exit status."""
    log.critical("{reason}", reason=reason)

    def leave() -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(os.EX_CONFIG)

    reactor.addSystemEventTrigger("after", "shutdown", leave)
    reactor.stop()

"""
The kernels' layer of the wiring: the registry (with its sandbox), the start policy, and the services that
keep kernels (pools, shutdown at stop), watch them (heartbeat) and cull them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.application.service import IService
from twisted.logger import Logger

from ..kernels import KernelRegistry, Limits, SandboxPolicy, sandbox_unavailable
from ..kernels.culling import KernelCuller
from ..kernels.heartbeat import HeartbeatMonitor
from ..kernels.service import KernelsService
from ..kernels.spawning import Spawner
from ..metrics import RelayMetrics
from ..relay.core import RelayCore
from .fleet import FleetParts
from .options import Options

log = Logger(namespace="kernel_relay.tap")


def build_kernels(options: Options, reactor: Any) -> KernelRegistry:
    """The registry of the relay's kernels, started as the options say."""
    return KernelRegistry(
        reactor,
        shutdown_timeout=options["shutdown-timeout"],
        launch_timeout=options["launch-timeout"],
        encryption=options["kernel-encryption"],
        transport=options["kernel-transport"],
        sandbox=kernel_sandbox(options),
        # A fleet's kernels outlive their relay, for another relay to adopt them.
        independent=options["redis"] is not None,
    )


def build_spawner(
    options: Options, kernels: KernelRegistry, metrics: RelayMetrics, fleet: FleetParts
) -> Spawner:
    """The start policy every route that starts kernels shares."""
    return Spawner(
        kernels,
        metrics,
        options["max-kernels"],
        fleet=fleet.capacity,
        allowed=frozenset(options["allow-kernelspec"]) or None,
    )


def kernel_services(
    options: Options,
    reactor: Any,
    kernels: KernelRegistry,
    relay: RelayCore,
    metrics: RelayMetrics,
    fleet: FleetParts,
    stopping: Callable[[], None],
) -> list[IService]:
    """The kernels' services: their keeper (``stopping`` is called as the relay stops), heartbeat, culler."""
    services: list[IService] = [
        KernelsService(
            kernels,
            options["pool"],
            stopping=stopping,
            keep_running=fleet.hand_off,
            prepare=fleet.prepare_stop,
            finish=fleet.leave,
        ),
        HeartbeatMonitor(
            kernels,
            reactor,
            relay,
            interval=options["heartbeat-interval"],
            timeout=options["heartbeat-timeout"],
        ),
    ]
    if options["cull-idle-timeout"] is not None:
        services.append(
            KernelCuller(
                reactor,
                kernels,
                relay.client_count,
                idle_timeout=options["cull-idle-timeout"],
                cull_connected=options["cull-connected"],
                interval=options["cull-interval"],
                metrics=metrics,
            )
        )
    return services


def kernel_sandbox(options: Options) -> SandboxPolicy:
    """``--kernel-sandbox``, ``--kernel-network`` and ``--kernel-limits``; says at start if it cannot work here."""
    limits = options["kernel-limits"]
    policy = SandboxPolicy(
        options["kernel-sandbox"],
        options["kernel-network"],
        limits if isinstance(limits, Limits) else Limits(),
    )
    if policy.mode == "off":
        return policy
    reason = sandbox_unavailable()
    if reason is None:
        log.info(
            "Local kernels run sandboxed (bubblewrap; network {network}; limits {limits})",
            network=policy.network,
            limits=policy.limits.describe(),
        )
    elif policy.mode == "required":
        log.error(
            "No local kernel can start: {reason}, and --kernel-sandbox is required",
            reason=reason,
        )
    else:
        log.warn(
            "LOCAL KERNELS RUN UNSANDBOXED: {reason}. Each can read the relay's and other kernels' "
            "files and reach the network (docs/security.rst)",
            reason=reason,
        )
    return policy

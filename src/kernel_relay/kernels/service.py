"""
The kernels as a Twisted service: the warm pools fill when it starts; when it stops, the relay's clients
are told first, then every kernel the relay started (pooled ones too) is shut down.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger

from ._registry import KernelRegistry
from ._runtime import remove_own, remove_stale

log = Logger()


class KernelsService(Service):
    """
    Fills the warm pools at start; stops the relay cleanly: clients are told first, then every kernel the
    relay started (pooled ones too) is shut down. At start it removes the connection files relays that were
    killed left behind; at stop its own directory of them (see ``_runtime``).
    """

    def __init__(
        self,
        kernels: KernelRegistry,
        pools: Mapping[str, int] | None = None,
        *,
        stopping: Callable[[], None] = lambda: None,
        keep_running: Callable[[], bool] = lambda: False,
        prepare: Callable[[], Deferred[None]] = lambda: succeed(None),
        finish: Callable[[], Deferred[None]] = lambda: succeed(None),
    ) -> None:
        self._prepare = prepare
        self._finish = finish
        self._stopping = stopping
        self._keep_running = keep_running
        self._kernels = kernels
        self._pools = dict(pools or {})

    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]
        remove_stale()
        for spec_name, size in self._pools.items():
            log.info("Keeping {size} {spec_name} kernel(s) warm", size=size, spec_name=spec_name)
            self._kernels.keep_warm(spec_name, size)

    def stopService(self) -> Deferred[None]:
        super().stopService()  # type: ignore[no-untyped-call]
        d = self._prepare().addCallback(lambda _: self._stop())
        return d.addBoth(lambda result: self._finish().addCallback(lambda _: result))

    def _stop(self) -> Deferred[None]:
        keep = self._keep_running()
        if keep:
            log.info(
                "Stopping: leaving {count} kernel(s) running for the fleet's other relays to adopt",
                count=len(self._kernels.owned()),
            )
        else:
            log.info("Stopping: shutting down {count} kernel(s)", count=len(self._kernels))
        self._stopping()
        return self._kernels.shutdown_all(keep_running=keep).addCallback(lambda _: remove_own())

# -*- test-case-name: tests.kernels.test_launcher -*-
"""
Kernels being started: the process launched in a thread, then connected and probed until it answers, all
under one deadline. A launch given up on (timed out, cancelled, its process gone, the relay stopping) fails
with KernelLaunchError and kills whatever it had started, even when its thread returns only later.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping

from jupyter_client.manager import KernelManager
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from ._errors import KernelLaunchError, UnknownKernelSpec
from ._kernel import Kernel
from ._processes import KernelProcesses, ManagedKernel, Watched, kill_quietly

_log = Logger()


class _Launch:
    """One kernel being started, and what it has got so far."""

    def __init__(self, kernel_id: str, spec_name: str, pooled: bool) -> None:
        self.kernel_id = kernel_id
        self.spec_name = spec_name
        self.pooled = pooled
        """Started to wait in the warm pool rather than for a client (it says so in the log)."""
        self.manager: KernelManager | None = None
        self.kernel: Kernel | None = None
        self.ready: Deferred[None] | None = None
        self.deadline: IDelayedCall | None = None
        self.result: Deferred[ManagedKernel] = Deferred()
        self.done = False
        self.reaped: Deferred[None] | None = None
        """Set when aborted before the launch thread returned: fires once its kernel is killed."""


class KernelLauncher:
    """The launches under way; each fires with the ready kernel and its manager, for its caller to keep."""

    def __init__(self, clock: IReactorTime, processes: KernelProcesses, *, timeout: float) -> None:
        self._clock = clock
        self._processes = processes
        self.timeout = timeout
        self._launches: dict[str, _Launch] = {}

    def __len__(self) -> int:
        return len(self._launches)

    def launch(
        self, spec_name: str, *, pooled: bool = False, env: Mapping[str, str] | None = None
    ) -> Deferred[ManagedKernel]:
        """
        Start a kernel of this kernelspec, ready within ``timeout`` seconds; cancelling gives it up. Fails
        with UnknownKernelSpec or KernelLaunchError.
        """
        launch = _Launch(str(uuid.uuid4()), spec_name, pooled)
        self._launches[launch.kernel_id] = launch

        def cancel(_: Deferred[ManagedKernel]) -> None:
            self._abort(launch, "the start was cancelled")

        launch.result = Deferred(cancel)
        launch.deadline = self._clock.callLater(
            self.timeout,
            self._abort,
            launch,
            f"the {spec_name!r} kernel did not become ready within {self.timeout:g}s",
        )
        _log.info(
            "starting a {spec_name!r} kernel {kernel_id}",
            spec_name=spec_name,
            kernel_id=launch.kernel_id,
        )
        d = self._processes.launch(spec_name, launch.kernel_id, env)
        d.addCallbacks(
            lambda manager: self._launched(launch, manager),
            lambda failure: self._launch_failed(launch, failure),
        )
        return launch.result

    def watched(self) -> list[Watched]:
        """The launches whose process runs already: the death watch notices one that exits early."""
        return [
            (launch.kernel_id, launch.manager)
            for launch in self._launches.values()
            if launch.manager is not None
        ]

    def died(self, kernel_id: str, reason: str) -> bool:
        """A process exited; if it was one of ours, its launch fails at once. Was it?"""
        launch = self._launches.get(kernel_id)
        if launch is None:
            return False
        self._abort(
            launch,
            f"the {launch.spec_name!r} kernel exited during startup "
            f"({reason.removeprefix('died: ')})",
        )
        return True

    def abort_all(self, reason: str) -> list[Deferred[None]]:
        """Give up every launch; each Deferred fires once what that launch started is killed."""
        return [self._abort(launch, reason) for launch in list(self._launches.values())]

    def _launched(self, launch: _Launch, manager: KernelManager) -> None:
        launch.manager = manager
        if launch.done:  # timed out or aborted while the thread was busy
            killed = kill_quietly(self._processes, manager)
            if launch.reaped is not None:
                killed.chainDeferred(launch.reaped)
            return
        try:
            kernel = self._processes.connect(launch.kernel_id, launch.spec_name, manager)
        except Exception as exc:
            _log.failure("connecting to kernel {kernel_id} failed", kernel_id=launch.kernel_id)
            self._abort(launch, f"could not connect to the {launch.spec_name!r} kernel: {exc}")
            return
        launch.kernel = kernel
        launch.ready = kernel.wait_ready()
        launch.ready.addCallbacks(lambda _: self._ready(launch), lambda f: None)

    def _launch_failed(self, launch: _Launch, failure: Failure) -> None:
        if launch.done:
            if launch.reaped is not None:
                launch.reaped.callback(None)
            return
        self._finish(launch)
        error = failure.value
        if not isinstance(error, UnknownKernelSpec | KernelLaunchError):
            _log.failure("unexpected launch failure", failure=failure)
            error = KernelLaunchError(f"could not start a {launch.spec_name!r} kernel: {error}")
        launch.result.errback(error)

    def _ready(self, launch: _Launch) -> None:
        kernel, manager = launch.kernel, launch.manager
        assert kernel is not None and manager is not None
        if launch.done:
            return
        if kernel.execution_state == "starting":
            # It answered kernel_info, so it is idle even if its own status messages went out before our
            # SUB was subscribed; otherwise an unused kernel would read "starting" (and escape culling).
            kernel.execution_state = "idle"
        self._finish(launch)
        _log.info(
            "kernel {kernel_id} ({spec_name}) is ready{pooled}",
            kernel_id=kernel.id,
            spec_name=kernel.spec_name,
            pooled=" and waits in the warm pool" if launch.pooled else "",
        )
        launch.result.callback(ManagedKernel(kernel, manager))

    def _finish(self, launch: _Launch) -> None:
        launch.done = True
        self._launches.pop(launch.kernel_id, None)
        if launch.deadline is not None and launch.deadline.active():
            launch.deadline.cancel()

    def _abort(self, launch: _Launch, reason: str) -> Deferred[None]:
        """Give up on a launch: fail its Deferred, close sockets, kill whatever was started."""
        if launch.done:
            return succeed(None)
        self._finish(launch)
        _log.warn(
            "kernel {kernel_id} launch aborted: {reason}", kernel_id=launch.kernel_id, reason=reason
        )
        if launch.ready is not None and not launch.ready.called:
            launch.ready.cancel()
        if launch.kernel is not None:
            launch.kernel.execution_state = "dead"
            launch.kernel.close()
        if not launch.result.called:
            launch.result.errback(KernelLaunchError(reason))
        if launch.manager is not None:
            return kill_quietly(self._processes, launch.manager)
        # The launch thread is still busy; it sees launch.done when it returns and kills the kernel.
        launch.reaped = Deferred()
        return launch.reaped


__all__ = ["KernelLauncher"]

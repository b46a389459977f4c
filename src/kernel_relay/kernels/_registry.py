"""
The set of kernels this relay started: launching, readiness, death watch, shutdown.

Every jupyter_client call runs in the reactor's thread pool (see ``_manager``); the reactor thread
only does bookkeeping and ZMQ I/O. One ``LoopingCall`` polls all kernels (including those still
starting) in a single thread hop per tick, so a kernel that crashes or is killed is noticed within
``poll_interval``.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager
from jupyter_client.session import Session
from twisted.internet.defer import CancelledError, Deferred, DeferredList, fail, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorThreads, IReactorTime
from twisted.internet.task import LoopingCall
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure

from . import _manager
from ._errors import KernelLaunchError, UnknownKernel, UnknownKernelSpec
from ._kernel import Kernel
from ._zmq import ZmqSocketOpener

_log = Logger()
_T = TypeVar("_T")

#: What Jupyter allows a kernelspec's name (its directory's name) to be: anything else names none, and is
#: refused before it reaches a log line or a thread.
_SPEC_NAME = re.compile(r"[A-Za-z0-9._-]{1,255}")


@dataclass(frozen=True)
class KernelSpecInfo:
    """What a client needs to choose a kernelspec."""

    name: str
    display_name: str
    language: str


class KernelObserver(Protocol):
    """Told about kernels coming and going (the relay disconnects clients of stopped kernels)."""

    def kernel_started(self, kernel: Kernel) -> None: ...

    def kernel_stopped(self, kernel: Kernel, reason: str) -> None:
        """``reason`` is ``"shutdown"`` or starts with ``"died"`` (``"died: exit code 1"``)."""

    def kernel_restarting(self, kernel: Kernel) -> None:
        """A restart began: the kernel keeps its id and its clients, its process is about to go."""

    def kernel_restarted(self, kernel: Kernel) -> None:
        """The new process runs (``execution_state`` is ``"starting"``); it is not ready yet."""

    def kernel_ready(self, kernel: Kernel) -> None:
        """The restarted kernel answered ``kernel_info``."""


def _death_reason(code: int | None) -> str:
    if code is None:
        return "died: the kernel process is gone"
    if code < 0:
        return f"died: killed by signal {-code}"
    return f"died: exit code {code}"


class _Launch:
    """A kernel being started: the thread work, then the readiness probe, under one deadline."""

    def __init__(self, kernel_id: str, spec_name: str, pooled: bool = False) -> None:
        self.kernel_id = kernel_id
        self.spec_name = spec_name
        self.pooled = pooled
        """Started to wait in the warm pool rather than for a client."""
        self.manager: KernelManager | None = None
        self.kernel: Kernel | None = None
        self.ready: Deferred[None] | None = None
        self.deadline: IDelayedCall | None = None
        self.result: Deferred[Kernel] = Deferred(lambda _: None)
        self.done = False
        self.reaped: Deferred[None] | None = None
        """Set when aborted before the launch thread returned: fires once its kernel is killed."""


class KernelRegistry:
    """Starts, tracks and stops kernels; see the package docstring for the contract."""

    def __init__(
        self,
        reactor: IReactorTime,
        *,
        kernel_spec_manager: KernelSpecManager | None = None,
        shutdown_timeout: float = 5.0,
        poll_interval: float = 1.0,
        launch_timeout: float = 60.0,
    ) -> None:
        self._reactor = reactor
        self._ksm = kernel_spec_manager if kernel_spec_manager is not None else KernelSpecManager()
        self.shutdown_timeout = shutdown_timeout
        self.poll_interval = poll_interval
        self.launch_timeout = launch_timeout
        self._opener = ZmqSocketOpener(reactor)
        self._kernels: dict[str, tuple[Kernel, KernelManager]] = {}
        self._launches: dict[str, _Launch] = {}
        self._stopping: dict[str, list[Deferred[None]]] = {}
        self._restarting: dict[str, list[Deferred[Kernel]]] = {}
        # Warm pools: ready kernels nobody has asked for yet, per kernelspec (see keep_warm).
        self._pool_targets: dict[str, int] = {}
        self._pooled: dict[str, list[tuple[Kernel, KernelManager]]] = {}
        self._pool_failures: dict[str, int] = {}
        self._pool_refills: dict[str, IDelayedCall] = {}
        self._observers: list[KernelObserver] = []
        self._poller = LoopingCall(self._poll)
        self._poller.clock = reactor

    # -- queries ------------------------------------------------------------------------------

    def specs(self) -> Deferred[list[KernelSpecInfo]]:
        """The installed kernelspecs, read from disk in a thread."""
        d = self._in_thread(_manager.list_specs, self._ksm)
        return d.addCallback(lambda rows: [KernelSpecInfo(*row) for row in rows])

    def get(self, kernel_id: str) -> Kernel:
        """The running kernel with this id; UnknownKernel otherwise."""
        try:
            return self._kernels[kernel_id][0]
        except (KeyError, TypeError):
            raise UnknownKernel(f"no running kernel with id {kernel_id!r}") from None

    def kernels(self) -> list[Kernel]:
        return [kernel for kernel, _ in self._kernels.values()]

    def __iter__(self) -> Iterator[Kernel]:
        return iter(self.kernels())

    def __len__(self) -> int:
        return len(self._kernels)

    def __contains__(self, kernel_id: object) -> bool:
        return kernel_id in self._kernels

    def add_observer(self, observer: KernelObserver) -> None:
        self._observers.append(observer)

    def remove_observer(self, observer: KernelObserver) -> None:
        if observer in self._observers:
            self._observers.remove(observer)

    # -- starting -----------------------------------------------------------------------------

    def start(self, spec_name: str) -> Deferred[Kernel]:
        """
        Launch a kernel of this kernelspec and fire with it once it is ready; from the warm pool, at once,
        when it holds one.

        Fails with UnknownKernelSpec, or KernelLaunchError (including after ``launch_timeout``
        seconds, in which case whatever was started is killed).
        """
        if not isinstance(spec_name, str) or not _SPEC_NAME.fullmatch(spec_name):
            shown = repr(spec_name) if len(str(spec_name)) <= 80 else f"{str(spec_name)[:77]!r}..."
            return fail(UnknownKernelSpec(f"no kernel spec named {shown}"))
        warm = self._pooled.get(spec_name)
        if warm:
            kernel, manager = warm.pop(0)
            self._kernels[kernel.id] = (kernel, manager)
            kernel.last_activity = self._reactor.seconds()
            _log.info(
                "kernel {kernel_id} ({spec_name}) handed out from the warm pool",
                kernel_id=kernel.id,
                spec_name=spec_name,
            )
            self._notify(lambda observer: observer.kernel_started(kernel))
            self._refill(spec_name)
            return succeed(kernel)
        return self._launch(spec_name)

    def _launch(self, spec_name: str, pooled: bool = False) -> Deferred[Kernel]:
        launch = _Launch(str(uuid.uuid4()), spec_name, pooled)
        self._launches[launch.kernel_id] = launch

        def cancel(_: Deferred[Kernel]) -> None:
            self._abort(launch, "the start was cancelled")

        launch.result = Deferred(cancel)
        launch.deadline = self._reactor.callLater(
            self.launch_timeout,
            self._abort,
            launch,
            f"the {spec_name!r} kernel did not become ready within {self.launch_timeout:g}s",
        )
        self._ensure_polling()
        _log.info(
            "starting a {spec_name!r} kernel {kernel_id}",
            spec_name=spec_name,
            kernel_id=launch.kernel_id,
        )
        d = self._in_thread(
            _manager.launch, self._ksm, spec_name, launch.kernel_id, self.shutdown_timeout
        )
        d.addCallbacks(
            lambda manager: self._launched(launch, manager),
            lambda failure: self._launch_failed(launch, failure),
        )
        return launch.result

    def _launched(self, launch: _Launch, manager: KernelManager) -> None:
        launch.manager = manager
        if launch.done:  # timed out or aborted while the thread was busy
            killed = self._kill_quietly(manager)
            if launch.reaped is not None:
                killed.chainDeferred(launch.reaped)
            return
        try:
            info, pid, connection_file = _manager.connection_details(manager)
            session = Session(
                key=info.get("key", b""),
                signature_scheme=info.get("signature_scheme", "hmac-sha256"),
                username="kernel-relay",
            )
            kernel = Kernel(
                kernel_id=launch.kernel_id,
                spec_name=launch.spec_name,
                connection_info=info,
                session=session,
                clock=self._reactor,
                opener=self._opener,
                pid=pid,
                connection_file=connection_file,
            )
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
        self._finish_launch(launch)
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
        if launch.pooled:
            self._pooled.setdefault(launch.spec_name, []).append((kernel, manager))
        else:
            self._kernels[kernel.id] = (kernel, manager)
        if kernel.execution_state == "starting":
            # It answered kernel_info, so it is idle even if its own status messages went out before our
            # SUB was subscribed; otherwise an unused kernel would read "starting" (and escape culling).
            kernel.execution_state = "idle"
        self._finish_launch(launch)
        self._ensure_polling()
        _log.info(
            "kernel {kernel_id} ({spec_name}) is ready{pooled}",
            kernel_id=kernel.id,
            spec_name=kernel.spec_name,
            pooled=" and waits in the warm pool" if launch.pooled else "",
        )
        if not launch.pooled:
            self._notify(lambda observer: observer.kernel_started(kernel))
        launch.result.callback(kernel)

    def _finish_launch(self, launch: _Launch) -> None:
        launch.done = True
        self._launches.pop(launch.kernel_id, None)
        if launch.deadline is not None and launch.deadline.active():
            launch.deadline.cancel()
        self._maybe_stop_polling()

    def _abort(self, launch: _Launch, reason: str) -> Deferred[None]:
        """Give up on a launch: fail its Deferred, close sockets, kill whatever was started."""
        if launch.done:
            return succeed(None)
        self._finish_launch(launch)
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
            return self._kill_quietly(launch.manager)
        # The launch thread is still busy; it sees launch.done when it returns and kills the kernel.
        launch.reaped = Deferred()
        return launch.reaped

    def _kill_quietly(self, manager: KernelManager) -> Deferred[None]:
        d = self._in_thread(_manager.kill, manager)
        d.addErrback(lambda f: _log.failure("killing an abandoned kernel failed", failure=f))
        return d

    # -- warm pools ---------------------------------------------------------------------------

    def keep_warm(self, spec_name: str, count: int) -> None:
        """Keep ``count`` started, ready kernels of ``spec_name`` for ``start`` to hand out at once."""
        if count < 0:
            raise ValueError("a warm pool size cannot be negative")
        self._pool_targets[spec_name] = count
        self._refill(spec_name)

    def pooled(self, spec_name: str | None = None) -> int:
        """Ready kernels waiting in the warm pools (of one kernelspec, or all)."""
        if spec_name is not None:
            return len(self._pooled.get(spec_name, []))
        return sum(len(kernels) for kernels in self._pooled.values())

    def _pool_launching(self, spec_name: str) -> int:
        return sum(
            1
            for launch in self._launches.values()
            if launch.pooled and launch.spec_name == spec_name
        )

    def _pool_missing(self, spec_name: str) -> int:
        """Kernels the pool of ``spec_name`` lacks, counting those already starting for it."""
        return (
            self._pool_targets.get(spec_name, 0)
            - self.pooled(spec_name)
            - self._pool_launching(spec_name)
        )

    def _refill(self, spec_name: str) -> None:
        if self._pool_missing(spec_name) <= 0 or spec_name in self._pool_refills:
            return
        failures = self._pool_failures.get(spec_name, 0)
        if failures:
            # A kernelspec that keeps failing is retried less and less often, never in a hot loop.
            delay = min(60.0, 2.0**failures)
            self._pool_refills[spec_name] = self._reactor.callLater(
                delay, self._refill_now, spec_name
            )
            return
        self._refill_now(spec_name)

    def _refill_now(self, spec_name: str) -> None:
        self._pool_refills.pop(spec_name, None)

        def filled(_: Kernel) -> None:
            self._pool_failures.pop(spec_name, None)

        def failed(failure: Failure) -> None:
            if isinstance(failure.value, UnknownKernelSpec):
                _log.error(
                    "no warm pool for {spec_name}: {error}",
                    spec_name=spec_name,
                    error=failure.getErrorMessage(),
                )
                self._pool_targets.pop(spec_name, None)
                return
            self._pool_failures[spec_name] = self._pool_failures.get(spec_name, 0) + 1
            _log.warn(
                "could not start a {spec_name} kernel for the warm pool: {error}",
                spec_name=spec_name,
                error=failure.getErrorMessage(),
            )
            self._refill(spec_name)

        for _ in range(max(0, self._pool_missing(spec_name))):
            self._launch(spec_name, pooled=True).addCallbacks(filled, failed)

    def _drop_pooled(self, kernel_id: str, reason: str) -> Deferred[None] | None:
        """Forget a pooled kernel (it died, or the relay stops) and stop its process."""
        for spec_name, entries in self._pooled.items():
            for index, (kernel, manager) in enumerate(entries):
                if kernel.id == kernel_id:
                    del entries[index]
                    _log.info(
                        "pooled kernel {kernel_id} ({spec_name}) dropped: {reason}",
                        kernel_id=kernel_id,
                        spec_name=spec_name,
                        reason=reason,
                    )
                    kernel.execution_state = "dead"
                    kernel.close()
                    return self._kill_quietly(manager)
        return None

    # -- interrupt and restart ----------------------------------------------------------------

    def interrupt(self, kernel_id: str) -> Deferred[None]:
        """Interrupt what the kernel runs, honouring its kernelspec's ``interrupt_mode``."""
        if kernel_id not in self._kernels or kernel_id in self._stopping:
            return fail(UnknownKernel(f"no running kernel with id {kernel_id!r}"))
        if kernel_id in self._restarting:
            return fail(KernelLaunchError(f"kernel {kernel_id} is restarting"))
        _log.info("interrupting kernel {kernel_id}", kernel_id=kernel_id)
        return self._in_thread(_manager.interrupt, self._kernels[kernel_id][1])

    def restart(self, kernel_id: str) -> Deferred[Kernel]:
        """
        Restart a kernel in place: same id, ports and key, so its clients' sockets carry on. Fires with the
        kernel once it answers ``kernel_info`` again; a kernel that fails to come back within the launch
        timeout is killed and reported stopped (``"died: restart failed ..."``).
        """
        if kernel_id not in self._kernels or kernel_id in self._stopping:
            return fail(UnknownKernel(f"no running kernel with id {kernel_id!r}"))
        waiter: Deferred[Kernel] = Deferred()
        if kernel_id in self._restarting:
            self._restarting[kernel_id].append(waiter)  # one restart serves every caller
            return waiter
        self._restarting[kernel_id] = [waiter]
        kernel, manager = self._kernels[kernel_id]
        _log.info("restarting kernel {kernel_id}", kernel_id=kernel_id)
        kernel.execution_state = "restarting"
        self._notify(lambda observer: observer.kernel_restarting(kernel))
        deadline = self._reactor.callLater(
            self.launch_timeout + self.shutdown_timeout,
            lambda: ready.cancel(),
        )
        ready: Deferred[Any] = self._in_thread(_manager.restart, manager)

        def started(pid: int | None) -> Deferred[None]:
            kernel.pid = pid
            kernel.execution_state = "starting"
            self._notify(lambda observer: observer.kernel_restarted(kernel))
            return kernel.wait_ready()

        def finished(_: object) -> None:
            if deadline.active():
                deadline.cancel()
            if kernel.execution_state in ("starting", "busy"):
                # It answered the readiness probe; "busy" is the probe's own, its idle may come later.
                kernel.execution_state = "idle"
            _log.info("kernel {kernel_id} restarted", kernel_id=kernel_id)
            self._notify(lambda observer: observer.kernel_ready(kernel))
            for d in self._restarting.pop(kernel_id, []):
                d.callback(kernel)

        def failed(failure: Failure) -> None:
            if deadline.active():
                deadline.cancel()
            waiters = self._restarting.pop(kernel_id, [])
            reason = (
                f"timed out after {self.launch_timeout + self.shutdown_timeout:g}s"
                if isinstance(failure.value, CancelledError)
                else str(failure.value)
            )
            _log.warn(
                "kernel {kernel_id} restart failed: {reason}", kernel_id=kernel_id, reason=reason
            )
            error = KernelLaunchError(f"kernel {kernel_id} did not restart: {reason}")
            kernel.execution_state = "dead"
            stopping = self._stop(kernel_id, f"died: restart failed ({reason})", _manager.kill)
            stopping.addErrback(lambda f: None)
            for d in waiters:
                d.errback(error)

        ready.addCallback(started).addCallbacks(finished, failed)
        return waiter

    # -- stopping -----------------------------------------------------------------------------

    def shutdown(self, kernel_id: str) -> Deferred[None]:
        """Stop a running kernel politely (then forcibly); fires once it is gone and forgotten."""
        if kernel_id not in self._kernels:
            return fail(UnknownKernel(f"no running kernel with id {kernel_id!r}"))
        if kernel_id in self._restarting:
            # Let the restart settle first, whatever its outcome, then stop what is there.
            settled: Deferred[Any] = Deferred()
            self._restarting[kernel_id].append(settled)
            settled.addBoth(lambda _: None)
            return settled.addCallback(
                lambda _: self.shutdown(kernel_id) if kernel_id in self._kernels else None
            )
        return self._stop(kernel_id, "shutdown", _manager.stop)

    def shutdown_all(self) -> Deferred[None]:
        """Stop every kernel, including ones still starting, in parallel; never fails."""
        self._pool_targets.clear()
        for call in self._pool_refills.values():
            if call.active():
                call.cancel()
        self._pool_refills.clear()
        work: list[Deferred[Any]] = [self.shutdown(kernel_id) for kernel_id in list(self._kernels)]
        for launch in list(self._launches.values()):
            work.append(self._abort(launch, "the relay is stopping"))
        for entries in list(self._pooled.values()):
            for kernel, _ in list(entries):
                dropped = self._drop_pooled(kernel.id, "the relay is stopping")
                if dropped is not None:
                    work.append(dropped)
        done: Deferred[Any] = DeferredList(work, consumeErrors=True)

        def finished(results: list[tuple[bool, Any]]) -> None:
            for ok, value in results:
                if not ok:
                    _log.failure("a kernel did not stop cleanly", failure=value)
            if not self._kernels and not self._launches and not self.pooled():
                self._opener.close()

        done.addCallback(finished)
        done.addErrback(lambda f: _log.failure("shutdown_all failed", failure=f))
        return done.addCallback(lambda _: None)

    def _stop(
        self, kernel_id: str, reason: str, action: Callable[[KernelManager], None]
    ) -> Deferred[None]:
        waiter: Deferred[None] = Deferred()
        if kernel_id in self._stopping:
            self._stopping[kernel_id].append(waiter)
            return waiter
        self._stopping[kernel_id] = [waiter]
        kernel, manager = self._kernels[kernel_id]
        _log.info("stopping kernel {kernel_id}: {reason}", kernel_id=kernel_id, reason=reason)

        def stopped(_: object) -> None:
            kernel.execution_state = "dead"
            kernel.close()
            self._kernels.pop(kernel_id, None)
            self._maybe_stop_polling()
            self._notify(lambda observer: observer.kernel_stopped(kernel, reason))
            for d in self._stopping.pop(kernel_id, []):
                d.callback(None)

        def failed(failure: Failure) -> None:
            _log.failure("kernel {kernel_id} did not stop", failure=failure, kernel_id=kernel_id)
            for d in self._stopping.pop(kernel_id, []):
                d.errback(failure)

        self._in_thread(action, manager).addCallbacks(stopped, failed)
        return waiter

    # -- death watch --------------------------------------------------------------------------

    def _ensure_polling(self) -> None:
        if not self._poller.running:
            self._poller.start(self.poll_interval, now=False)

    def _maybe_stop_polling(self) -> None:
        if self._poller.running and not self._kernels and not self._launches and not self.pooled():
            self._poller.stop()

    def _poll(self) -> Deferred[None]:
        watched = [
            (kernel_id, manager)
            for kernel_id, (_, manager) in self._kernels.items()
            if kernel_id not in self._stopping and kernel_id not in self._restarting
        ]
        watched += [
            (launch.kernel_id, launch.manager)
            for launch in self._launches.values()
            if launch.manager is not None
        ]
        watched += [
            (kernel.id, manager) for entries in self._pooled.values() for kernel, manager in entries
        ]
        if not watched:
            return succeed(None)
        d = self._in_thread(_manager.find_dead, watched).addCallback(self._handle_dead)
        return d.addErrback(lambda f: _log.failure("polling kernels failed", failure=f))

    def _handle_dead(self, dead: list[tuple[str, int | None]]) -> None:
        for kernel_id, code in dead:
            reason = _death_reason(code)
            pooled_spec = next(
                (
                    spec
                    for spec, entries in self._pooled.items()
                    for k, _ in entries
                    if k.id == kernel_id
                ),
                None,
            )
            if pooled_spec is not None:
                self._drop_pooled(kernel_id, reason)
                self._pool_failures[pooled_spec] = self._pool_failures.get(pooled_spec, 0) + 1
                self._refill(pooled_spec)
                continue
            launch = self._launches.get(kernel_id)
            if launch is not None:
                self._abort(
                    launch,
                    f"the {launch.spec_name!r} kernel exited during startup "
                    f"({reason.removeprefix('died: ')})",
                )
            elif (
                kernel_id in self._kernels
                and kernel_id not in self._stopping
                and kernel_id not in self._restarting
            ):
                _log.warn("kernel {kernel_id} {reason}", kernel_id=kernel_id, reason=reason)
                self._kernels[kernel_id][0].execution_state = "dead"
                self._stop(kernel_id, reason, _manager.kill).addErrback(lambda f: None)

    # -- helpers ------------------------------------------------------------------------------

    def _in_thread(self, function: Callable[..., _T], *args: Any) -> Deferred[_T]:
        # Looked up per call, not in __init__, so a registry can be built on a fake reactor.
        pool = IReactorThreads(self._reactor).getThreadPool()
        return deferToThreadPool(self._reactor, pool, function, *args)  # type: ignore[arg-type]

    def _notify(self, call: Callable[[KernelObserver], None]) -> None:
        for observer in list(self._observers):
            try:
                call(observer)
            except Exception:
                _log.failure("kernel observer {observer!r} failed", observer=observer)


__all__ = ["KernelObserver", "KernelRegistry", "KernelSpecInfo"]

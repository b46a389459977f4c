# -*- test-case-name: tests.kernels.test_registry -*-
"""
The set of kernels this relay started, as one façade over the parts that do the work:

- ``KernelLauncher`` (``_launcher``): launching, readiness, the launch deadline;
- ``WarmPool`` (``_pool``): ready kernels nobody has asked for yet, refilled with back-off;
- ``RunningKernels`` (``_running``): the kernels handed out, and stopping them;
- ``Restarts`` (``_restart``): restarts in place, shared by the callers who ask together, under a deadline;
- ``DeathWatch`` (``_deathwatch``): one poller noticing processes that exit, whichever part owns them;
- ``Observers`` (``_observers``): who is told of kernels coming and going;
- ``Guests`` (``_guests``): in a fleet, the kernels other relays manage, which this relay serves too.

They reach jupyter_client only through ``KernelProcesses`` (``_processes``), whose every blocking call runs
in the reactor's thread pool; the reactor thread only does bookkeeping and ZMQ I/O.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from jupyter_client.kernelspec import KernelSpecManager
from twisted.internet.defer import Deferred, DeferredList, fail, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from ..jupyter_client_internals import close_control_socket
from ._deathwatch import DeathWatch
from ._errors import KernelLaunchError, UnknownKernelSpec
from ._guests import Guests, KernelOwners
from ._kernel import Kernel
from ._launcher import KernelLauncher
from ._observers import KernelObserver, Observers
from ._pool import WarmPool
from ._processes import JupyterProcesses, KernelProcesses, ManagedKernel, Watched
from ._restart import Restarts
from ._running import RunningKernels, unknown
from ._sandbox import SandboxPolicy

_log = Logger()

#: What Jupyter allows a kernelspec's name (its directory's name) to be: anything else names none, and is
#: refused before it reaches a log line or a thread.
_SPEC_NAME = re.compile(r"[A-Za-z0-9._-]{1,255}")

#: How long a client naming a kernel this relay does not know waits, at most, for its fleet to look it up.
LOOKUP_WAIT: Final = 2.0


@dataclass(frozen=True)
class KernelSpecInfo:
    """
    What a client needs to choose a kernelspec; ``spec`` is its kernel.json as jupyter_client reads it, and
    ``resource_dir`` holds its logos.
    """

    name: str
    display_name: str
    language: str
    spec: Mapping[str, Any] = field(default_factory=dict, compare=False)
    resource_dir: str = field(default="", compare=False)


class KernelRegistry:
    """
    Starts, tracks and stops kernels; see the package docstring for the contract. ``processes`` replaces
    jupyter_client (tests); otherwise kernels start through ``kernel_spec_manager``'s kernelspecs.
    """

    def __init__(
        self,
        reactor: IReactorTime,
        *,
        kernel_spec_manager: KernelSpecManager | None = None,
        shutdown_timeout: float = 5.0,
        poll_interval: float = 1.0,
        launch_timeout: float = 60.0,
        processes: KernelProcesses | None = None,
        encryption: str = "disabled",
        transport: str = "tcp",
        independent: bool = False,
        sandbox: SandboxPolicy | None = None,
    ) -> None:
        self._reactor = reactor
        self._processes: KernelProcesses = (
            processes
            if processes is not None
            else JupyterProcesses(
                reactor,
                kernel_spec_manager if kernel_spec_manager is not None else KernelSpecManager(),
                shutdown_timeout,
                encryption,
                transport,
                independent,
                sandbox,
            )
        )
        self._observers = Observers()
        self._guests = Guests(self._observers)
        self.owners: KernelOwners | None = None
        """Who acts on guest kernels (the fleet); None without one."""
        self.lookup: Callable[[str], Deferred[None]] | None = None
        """Looks up a kernel this relay does not know in its fleet, to serve it (:meth:`find`); None without one."""
        self._watch = DeathWatch(
            reactor,
            self._processes,
            interval=poll_interval,
            watched=self._watched,
            busy=self._busy,
            on_dead=self._died,
        )
        self._launcher = KernelLauncher(reactor, self._processes, timeout=launch_timeout)
        self._running = RunningKernels(self._observers, forgotten=self._watch.settle)
        # A restart stops the kernel first (up to shutdown_timeout), then launches it again.
        self._restarts = Restarts(
            reactor,
            self._processes,
            self._running,
            self._observers,
            timeout=launch_timeout + shutdown_timeout,
        )
        self._pool = WarmPool(
            reactor, self._processes, lambda spec_name: self._launch(spec_name, pooled=True)
        )

    # -- queries ------------------------------------------------------------------------------

    def specs(self) -> Deferred[list[KernelSpecInfo]]:
        """The installed kernelspecs, read from disk in a thread."""
        d = self._processes.specs()
        return d.addCallback(lambda rows: [KernelSpecInfo(*row) for row in rows])

    def get(self, kernel_id: str) -> Kernel:
        """The running kernel with this id (this relay's or a guest); UnknownKernel otherwise."""
        guest = self._guests.get(kernel_id)
        return guest if guest is not None else self._running.get(kernel_id)

    def kernels(self) -> list[Kernel]:
        """Every kernel this relay serves: its own, then guests."""
        return [*self._running.kernels(), *self._guests.kernels()]

    def owned(self) -> list[Kernel]:
        """The kernels whose processes this relay manages."""
        return self._running.kernels()

    def owns(self, kernel_id: str) -> bool:
        return kernel_id in self._running

    def __iter__(self) -> Iterator[Kernel]:
        return iter(self.kernels())

    def __len__(self) -> int:
        return len(self._running) + len(self._guests)

    def __contains__(self, kernel_id: object) -> bool:
        return kernel_id in self._running or kernel_id in self._guests

    def find(self, kernel_id: str) -> Deferred[None] | None:
        """
        Before a client naming ``kernel_id`` is refused: None when there is nothing to wait for (the kernel
        is known here, or there is no fleet); else a Deferred that fires once the fleet has looked it up
        (then served here if it runs anywhere), within :data:`LOOKUP_WAIT`. A kernel started on another
        relay is known here only once this relay has heard of it or read it (it may be joining its fleet).
        """
        if self.lookup is None or kernel_id in self:
            return None
        done: Deferred[None] = Deferred()

        def settle(_: object = None) -> None:
            if not done.called:
                done.callback(None)
            if timer.active():
                timer.cancel()

        timer = self._reactor.callLater(LOOKUP_WAIT, settle)
        self.lookup(kernel_id).addBoth(settle)  # a failed lookup (Redis away) is the fleet's to log
        return done

    # -- guests (a fleet's kernels that another relay manages) ----------------------------------------

    def add_guest(self, kernel_id: str, spec_name: str, connection_info: dict[str, Any]) -> Kernel:
        """Serve a kernel another relay manages: connect to its channels; observers hear of it as started."""
        kernel = self._processes.connect_info(kernel_id, spec_name, connection_info)
        kernel.execution_state = "idle"
        self._guests.add(kernel)
        return kernel

    def drop_guest(self, kernel_id: str, reason: str) -> None:
        """A guest is gone (``reason`` as for any kernel's end, or that this relay stopped serving it)."""
        self._guests.drop(kernel_id, reason)

    def is_guest(self, kernel_id: str) -> bool:
        return kernel_id in self._guests

    def describe(self, kernel_id: str) -> Deferred[dict[str, Any]]:
        """What another relay needs to take one of this relay's kernels over (keys included)."""
        return self._processes.describe(self._running.entry(kernel_id).manager)

    def demote(self, kernel_id: str) -> None:
        """
        One of this relay's kernels is managed by another relay now (this one lost its lease meanwhile): keep
        serving its clients as a guest's, and leave its process alone.
        """
        if kernel_id in self._restarts or not self._running.active(kernel_id):
            return
        kernel, manager = self._running.release(kernel_id)
        try:
            close_control_socket(manager)
        except Exception:
            _log.failure("closing kernel {kernel_id}'s control socket failed", kernel_id=kernel_id)
        self._guests.put(kernel)
        _log.warn("kernel {kernel_id} is managed by another relay now", kernel_id=kernel_id)

    def adopt(
        self, kernel_id: str, record: Mapping[str, Any], env: Mapping[str, str] | None = None
    ) -> Deferred[Kernel]:
        """
        Manage a guest whose relay is gone: its manager is rebuilt from ``record`` (see ``adoption``), and from
        then on it is this relay's own (death watch, restart, shutdown). Its clients carry on. Fails with
        KernelLaunchError when it cannot be managed from here; it stays a guest then.
        """
        kernel = self._guests.get(kernel_id)
        if kernel is None:
            return fail(unknown(kernel_id))
        d = self._processes.rebuild(kernel.spec_name, kernel_id, record, env)

        def rebuilt(manager: Any) -> Kernel:
            if self._guests.take(kernel_id) is None:
                # Dropped meanwhile (gone, or this relay is stopping and hands it over): not ours to kill.
                raise unknown(kernel_id)
            self._running.add(ManagedKernel(kernel, manager))
            self._watch.start()
            _log.info("adopted kernel {kernel_id}", kernel_id=kernel_id)
            return kernel

        return d.addCallback(rebuilt)

    def add_observer(self, observer: KernelObserver) -> None:
        self._observers.add(observer)

    def remove_observer(self, observer: KernelObserver) -> None:
        self._observers.remove(observer)

    # -- starting -----------------------------------------------------------------------------

    def start(self, spec_name: str, env: Mapping[str, str] | None = None) -> Deferred[Kernel]:
        """
        Launch a kernel of this kernelspec and fire with it once it is ready; from the warm pool, at once,
        when it holds one and no ``env`` (added to the kernel's environment) is asked for.

        Fails with UnknownKernelSpec, or KernelLaunchError (including after ``launch_timeout``
        seconds, in which case whatever was started is killed).
        """
        if not isinstance(spec_name, str) or not _SPEC_NAME.fullmatch(spec_name):
            shown = repr(spec_name) if len(str(spec_name)) <= 80 else f"{str(spec_name)[:77]!r}..."
            return fail(UnknownKernelSpec(f"no kernel spec named {shown}"))
        warm = None if env else self._pool.take(spec_name)
        if warm is not None:
            warm.kernel.last_activity = self._reactor.seconds()
            return succeed(self._handed_out(warm))
        return self._launch(spec_name, env=env).addCallback(self._handed_out)

    def _launch(
        self, spec_name: str, pooled: bool = False, env: Mapping[str, str] | None = None
    ) -> Deferred[ManagedKernel]:
        """A launch the death watch covers from its start; a failed one may leave it nothing to watch."""
        self._watch.start()

        def settle(failure: Failure) -> Failure:
            self._watch.settle()
            return failure

        return self._launcher.launch(spec_name, pooled=pooled, env=env).addErrback(settle)

    def _handed_out(self, entry: ManagedKernel) -> Kernel:
        self._running.add(entry)
        self._observers.kernel_started(entry.kernel)
        return entry.kernel

    # -- warm pools ---------------------------------------------------------------------------

    def keep_warm(self, spec_name: str, count: int) -> None:
        """Keep ``count`` started, ready kernels of ``spec_name`` for ``start`` to hand out at once."""
        self._pool.keep_warm(spec_name, count)

    def pooled(self, spec_name: str | None = None) -> int:
        """Ready kernels waiting in the warm pools (of one kernelspec, or all)."""
        return self._pool.pooled(spec_name)

    def failing_pools(self) -> dict[str, int]:
        """The warm pools that keep failing to start kernels: kernelspec -> failures in a row."""
        return self._pool.failing()

    # -- interrupt and restart ----------------------------------------------------------------

    def interrupt(self, kernel_id: str) -> Deferred[None]:
        """Interrupt what the kernel runs, honouring its kernelspec's ``interrupt_mode``."""
        if self.owners is not None and kernel_id in self._guests:
            return self.owners.interrupt(kernel_id)
        if not self._running.active(kernel_id):
            return fail(unknown(kernel_id))
        if kernel_id in self._restarts:
            return fail(KernelLaunchError(f"kernel {kernel_id} is restarting"))
        _log.info("interrupting kernel {kernel_id}", kernel_id=kernel_id)
        return self._processes.interrupt(self._running.entry(kernel_id).manager)

    def restart(self, kernel_id: str) -> Deferred[Kernel]:
        """
        Restart a kernel in place: same id, ports and key, so its clients' sockets carry on. Fires with the
        kernel once it answers ``kernel_info`` again; a kernel that fails to come back within the launch
        timeout is killed and reported stopped (``"died: restart failed ..."``).
        """
        if self.owners is not None and kernel_id in self._guests:
            kernel = self.get(kernel_id)
            return self.owners.restart(kernel_id).addCallback(lambda _: kernel)
        return self._restarts.restart(kernel_id)

    # -- stopping -----------------------------------------------------------------------------

    def shutdown(self, kernel_id: str) -> Deferred[None]:
        """Stop a running kernel politely (then forcibly); fires once it is gone and forgotten."""
        if self.owners is not None and kernel_id in self._guests:
            return self.owners.shutdown(kernel_id).addCallback(
                lambda _: self._guests.drop(kernel_id, "shutdown")
            )
        if kernel_id not in self._running:
            return fail(unknown(kernel_id))
        if kernel_id in self._restarts:
            # Let the restart settle first, whatever its outcome, then stop what is there.
            return self._restarts.settled(kernel_id).addCallback(
                lambda _: self.shutdown(kernel_id) if kernel_id in self._running else None
            )
        return self._running.stop(kernel_id, "shutdown", self._processes.stop)

    def shutdown_all(self, keep_running: bool = False) -> Deferred[None]:
        """
        Stop every kernel, including ones still starting and pooled ones, in parallel; never fails. Guests
        are let go, not stopped; so are this relay's own kernels when ``keep_running`` (a fleet's relay that
        stops while others run: they adopt its kernels).
        """
        for guest in self._guests.kernels():
            self._guests.drop(guest.id, "the relay is stopping")
        # The pools first: a pooled launch aborted below must not be replaced.
        work: list[Deferred[Any]] = list(self._pool.close())
        if keep_running:
            for kernel in self._running.kernels():
                kernel.close()
        else:
            work += [self.shutdown(kernel_id) for kernel_id in self._running.ids()]
        work += self._launcher.abort_all("the relay is stopping")
        done: Deferred[Any] = DeferredList(work, consumeErrors=True)

        def finished(results: list[tuple[bool, Any]]) -> None:
            for ok, value in results:
                if not ok:
                    _log.failure("a kernel did not stop cleanly", failure=value)
            self._watch.settle()
            if not self._busy():
                self._processes.close()

        done.addCallback(finished)
        done.addErrback(lambda f: _log.failure("shutdown_all failed", failure=f))
        return done.addCallback(lambda _: None)

    # -- death watch --------------------------------------------------------------------------

    def _watched(self) -> list[Watched]:
        # A kernel being stopped or restarted has no process to speak of for a while.
        return [
            *self._running.watched(skip=self._restarts),
            *self._launcher.watched(),
            *self._pool.watched(),
        ]

    def _busy(self) -> bool:
        return bool(len(self._running) or len(self._launcher) or self._pool.pooled())

    def _died(self, kernel_id: str, reason: str) -> None:
        if self._pool.died(kernel_id, reason) or self._launcher.died(kernel_id, reason):
            return
        if self._running.active(kernel_id) and kernel_id not in self._restarts:
            _log.warn("kernel {kernel_id} {reason}", kernel_id=kernel_id, reason=reason)
            self._running.get(kernel_id).execution_state = "dead"
            self._running.stop(kernel_id, reason, self._processes.kill).addErrback(lambda f: None)


__all__ = ["KernelObserver", "KernelRegistry", "KernelSpecInfo"]

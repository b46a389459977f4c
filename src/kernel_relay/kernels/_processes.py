# -*- test-case-name: tests.kernels.test_launcher -*-
"""
The seam between the registry's parts and kernel processes: every jupyter_client call, made off the reactor
thread, and the ZMQ connection to a kernel once its process runs.

``KernelProcesses`` is all that the launcher, the warm pool, the restarts, the death watch and the set of
running kernels know of jupyter_client, so their tests put a fake in its place. ``JupyterProcesses`` is the
real one: it runs ``_manager``'s blocking functions in the reactor's thread pool.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple, Protocol, TypeVar

from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager
from jupyter_client.session import Session
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorThreads, IReactorTime
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger

from . import _manager, adoption
from ._kernel import Kernel
from ._sandbox import SandboxPolicy
from ._zmq import ZmqSocketOpener

_log = Logger()
_T = TypeVar("_T")

Watched = tuple[str, KernelManager]
"""A kernel's id and the manager of its process: what the death watch asks about."""


class ManagedKernel(NamedTuple):
    """A kernel with the jupyter_client manager that owns its process."""

    kernel: Kernel
    manager: KernelManager


class KernelProcesses(Protocol):
    """What the registry's parts do to kernel processes; every call that may block runs off the reactor."""

    def specs(self) -> Deferred[list[tuple[Any, ...]]]:
        """
        (name, display_name, language) of every installed kernelspec, and optionally its kernel.json and
        resource directory.
        """

    def launch(
        self, spec_name: str, kernel_id: str, env: Mapping[str, str] | None = None
    ) -> Deferred[KernelManager]:
        """
        Start a kernel process, with ``env`` added to its environment; fails with UnknownKernelSpec or
        KernelLaunchError.
        """

    def connect(self, kernel_id: str, spec_name: str, manager: KernelManager) -> Kernel:
        """The relay's side of a started kernel: its sockets, its key (on the reactor thread)."""

    def connect_info(self, kernel_id: str, spec_name: str, info: dict[str, Any]) -> Kernel:
        """The relay's side of a kernel another relay manages, from its connection info."""

    def describe(self, manager: KernelManager) -> Deferred[dict[str, Any]]:
        """What another relay needs to take the kernel over (see ``adoption.describe``)."""

    def rebuild(
        self,
        spec_name: str,
        kernel_id: str,
        record: Mapping[str, Any],
        env: Mapping[str, str] | None = None,
    ) -> Deferred[KernelManager]:
        """A manager for a running kernel another relay started; fails with KernelLaunchError."""

    def stop(self, manager: KernelManager) -> Deferred[None]:
        """Politely, then by force; fails with KernelShutdownError if the process survives."""

    def kill(self, manager: KernelManager) -> Deferred[None]: ...

    def interrupt(self, manager: KernelManager) -> Deferred[None]: ...

    def restart(self, manager: KernelManager) -> Deferred[int | None]:
        """Restart in place (same ports and key); fires with the new local pid, if there is one."""

    def find_dead(self, watched: Sequence[Watched]) -> Deferred[list[tuple[str, int | None]]]:
        """Which of these kernels have exited, with their exit codes when known."""

    def close(self) -> None:
        """Release what connecting kernels needed (the ZMQ context) once no kernel is left."""


class JupyterProcesses:
    """Kernel processes through jupyter_client, each blocking call in the reactor's thread pool."""

    def __init__(
        self,
        reactor: IReactorTime,
        kernel_spec_manager: KernelSpecManager,
        shutdown_timeout: float,
        encryption: str = "disabled",
        transport: str = "tcp",
        independent: bool = False,
        sandbox: SandboxPolicy | None = None,
    ) -> None:
        self._reactor = reactor
        self._sandbox = sandbox or SandboxPolicy()
        self._ksm = kernel_spec_manager
        self._shutdown_timeout = shutdown_timeout
        self._encryption = encryption
        self._transport = transport
        self._independent = independent
        self._opener = ZmqSocketOpener(reactor)

    def specs(self) -> Deferred[list[tuple[Any, ...]]]:
        return self._in_thread(_manager.list_specs, self._ksm)

    def launch(
        self, spec_name: str, kernel_id: str, env: Mapping[str, str] | None = None
    ) -> Deferred[KernelManager]:
        return self._in_thread(
            _manager.launch,
            self._ksm,
            spec_name,
            kernel_id,
            self._shutdown_timeout,
            env,
            self._encryption,
            self._transport,
            self._independent,
            self._sandbox,
        )

    def connect(self, kernel_id: str, spec_name: str, manager: KernelManager) -> Kernel:
        info, pid, connection_file = _manager.connection_details(manager)
        return self._kernel(kernel_id, spec_name, info, pid, connection_file)

    def connect_info(self, kernel_id: str, spec_name: str, info: dict[str, Any]) -> Kernel:
        return self._kernel(kernel_id, spec_name, info, None, None)

    def describe(self, manager: KernelManager) -> Deferred[dict[str, Any]]:
        return self._in_thread(adoption.describe, manager)

    def rebuild(
        self,
        spec_name: str,
        kernel_id: str,
        record: Mapping[str, Any],
        env: Mapping[str, str] | None = None,
    ) -> Deferred[KernelManager]:
        return self._in_thread(
            adoption.rebuild,
            self._ksm,
            spec_name,
            kernel_id,
            record,
            self._shutdown_timeout,
            env,
            self._encryption,
        )

    def _kernel(
        self,
        kernel_id: str,
        spec_name: str,
        info: dict[str, Any],
        pid: int | None,
        connection_file: str | None,
    ) -> Kernel:
        key = info.get("key", b"")
        session = Session(
            key=key.encode() if isinstance(key, str) else key,
            signature_scheme=info.get("signature_scheme", "hmac-sha256"),
            username="kernel-relay",
        )
        kernel = Kernel(
            kernel_id=kernel_id,
            spec_name=spec_name,
            connection_info=info,
            session=session,
            clock=self._reactor,
            opener=self._opener,
            pid=pid,
            connection_file=connection_file,
        )
        if kernel.curve is None and self._encryption != "disabled":
            _log.warn(
                "kernel {kernel_id} ({spec_name!r}) runs unencrypted: its kernelspec does not declare "
                "CurveZMQ support, so any local process can read its channels",
                kernel_id=kernel_id,
                spec_name=spec_name,
            )
        return kernel

    def stop(self, manager: KernelManager) -> Deferred[None]:
        return self._in_thread(_manager.stop, manager)

    def kill(self, manager: KernelManager) -> Deferred[None]:
        return self._in_thread(_manager.kill, manager)

    def interrupt(self, manager: KernelManager) -> Deferred[None]:
        return self._in_thread(_manager.interrupt, manager)

    def restart(self, manager: KernelManager) -> Deferred[int | None]:
        return self._in_thread(_manager.restart, manager)

    def find_dead(self, watched: Sequence[Watched]) -> Deferred[list[tuple[str, int | None]]]:
        return self._in_thread(_manager.find_dead, watched)

    def close(self) -> None:
        self._opener.close()

    def _in_thread(self, function: Callable[..., _T], *args: Any) -> Deferred[_T]:
        # Looked up per call, not in __init__, so a registry can be built on a fake reactor.
        pool = IReactorThreads(self._reactor).getThreadPool()
        return deferToThreadPool(self._reactor, pool, function, *args)  # type: ignore[arg-type]


def kill_quietly(processes: KernelProcesses, manager: KernelManager) -> Deferred[None]:
    """Kill a kernel nobody waits for (a launch given up, a pooled kernel dropped): a failure is only logged."""
    d = processes.kill(manager)
    d.addErrback(lambda f: _log.failure("killing an abandoned kernel failed", failure=f))
    return d

"""
Heartbeat watch: notices a kernel whose ZeroMQ side stopped answering while its process still lives.

The registry sees a kernel *process* die; it cannot see a kernel that is frozen (stopped, swapped out, stuck
in a deadlock that holds the heartbeat thread too) or whose ports became unreachable. Every Jupyter kernel
echoes whatever arrives on its heartbeat channel from a thread of its own, even while it runs code, so a
kernel that has echoed nothing for ``timeout`` seconds cannot be reached. The monitor then tells its
listener once, and again once echoes resume; it never kills a kernel (that stays the user's decision, with
``/shutdown``), since a kernel frozen on purpose, e.g. under a debugger, may come back.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

import zmq
from twisted.application.service import Service
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from ._messages import Frame
from ._zmq import FrameSocket

log = Logger()


class HeartbeatKernel(Protocol):
    """What the monitor needs of a kernel: its heartbeat channel, and a place to keep the verdict."""

    @property
    def id(self) -> str: ...

    @property
    def closed(self) -> bool: ...

    reachable: bool

    def open_heartbeat(self, on_echo: Callable[[list[Frame]], None]) -> FrameSocket: ...


_K = TypeVar("_K", bound=HeartbeatKernel)
_K_contra = TypeVar("_K_contra", bound=HeartbeatKernel, contravariant=True)


class HeartbeatListener(Protocol[_K_contra]):
    """Told when a kernel stops and starts answering its heartbeat again."""

    def kernel_unreachable(self, kernel: _K_contra, silent_for: float) -> None: ...

    def kernel_reachable(self, kernel: _K_contra) -> None: ...


class HeartbeatKernels(Protocol[_K]):
    """What the monitor needs of the registry: the running kernels, and news of kernels coming and going."""

    def kernels(self) -> Sequence[_K]: ...

    def add_observer(self, observer: HeartbeatMonitor[_K]) -> None: ...

    def remove_observer(self, observer: HeartbeatMonitor[_K]) -> None: ...


@dataclass
class _Watch:
    socket: FrameSocket
    last_echo: float
    reachable: bool = True
    paused: bool = False


class HeartbeatMonitor(Service, Generic[_K]):
    """
    Pings every running kernel's heartbeat channel each ``interval`` seconds from one timer; a Twisted
    service, so it starts and stops with the relay. Kernels' ``reachable`` attributes follow its verdicts.
    """

    def __init__(
        self,
        kernels: HeartbeatKernels[_K],
        clock: IReactorTime,
        listener: HeartbeatListener[_K],
        *,
        interval: float,
        timeout: float,
    ) -> None:
        if interval <= 0 or timeout <= interval:
            raise ValueError("the heartbeat timeout must be longer than a positive interval")
        self._clock = clock
        self._listener = listener
        self._timeout = timeout
        self._watches: dict[str, tuple[_K, _Watch]] = {}
        self._loop = LoopingCall(self._beat)
        self._loop.clock = clock
        self._interval = interval
        self._kernels = kernels

    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]
        self._kernels.add_observer(self)
        for kernel in self._kernels.kernels():
            self.kernel_started(kernel)
        self._loop.start(self._interval, now=False)

    def stopService(self) -> None:
        super().stopService()  # type: ignore[no-untyped-call]
        self._kernels.remove_observer(self)
        if self._loop.running:
            self._loop.stop()
        for kernel_id in list(self._watches):
            self._forget(kernel_id)

    # KernelObserver

    def kernel_started(self, kernel: _K) -> None:
        if kernel.id in self._watches or kernel.closed:
            return
        watch_id = kernel.id

        def echoed(frames: object) -> None:
            entry = self._watches.get(watch_id)
            if entry is None:
                return
            watch = entry[1]
            watch.last_echo = self._clock.seconds()
            if not watch.reachable:
                watch.reachable = True
                kernel.reachable = True
                log.info("Kernel {kernel_id} answers its heartbeat again", kernel_id=kernel.id)
                self._listener.kernel_reachable(kernel)

        watch = _Watch(kernel.open_heartbeat(echoed), self._clock.seconds())
        self._watches[kernel.id] = (kernel, watch)

    def kernel_stopped(self, kernel: _K, reason: str) -> None:
        self._forget(kernel.id)

    def kernel_restarting(self, kernel: _K) -> None:
        entry = self._watches.get(kernel.id)
        if entry is not None:
            entry[1].paused = True  # silence while the process is replaced is expected

    def kernel_restarted(self, kernel: _K) -> None:
        pass

    def kernel_ready(self, kernel: _K) -> None:
        entry = self._watches.get(kernel.id)
        if entry is not None:
            entry[1].paused = False
            entry[1].last_echo = self._clock.seconds()

    # internals

    def _forget(self, kernel_id: str) -> None:
        entry = self._watches.pop(kernel_id, None)
        if entry is not None:
            entry[1].socket.close()

    def _beat(self) -> None:
        now = self._clock.seconds()
        for kernel, watch in list(self._watches.values()):
            silent_for = now - watch.last_echo
            if watch.reachable and not watch.paused and silent_for > self._timeout:
                watch.reachable = False
                kernel.reachable = False
                log.warn(
                    "Kernel {kernel_id} has not answered its heartbeat for {seconds:.0f}s: its ZeroMQ "
                    "ports are unreachable or the process is frozen",
                    kernel_id=kernel.id,
                    seconds=silent_for,
                )
                self._listener.kernel_unreachable(kernel, silent_for)
            try:
                watch.socket.send([b"ping"])
            except zmq.ZMQError:
                pass  # the queue towards a long-unreachable kernel is full: it stays unreachable
            except ConnectionError:
                self._forget(kernel.id)

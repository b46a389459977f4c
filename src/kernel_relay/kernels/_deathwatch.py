# -*- test-case-name: tests.kernels.test_deathwatch -*-
"""
The death watch: notices kernel processes that exit on their own (a crash, ``os._exit``, a kill from
outside). One ``LoopingCall`` asks about every watched kernel in a single thread hop per tick, so a death is
noticed within ``interval`` seconds; it runs only while the registry has kernels (or launches) at all.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from ._processes import KernelProcesses, Watched

_log = Logger()


def death_reason(code: int | None) -> str:
    """How observers are told a kernel died, from its process's exit code (None: unknown)."""
    if code is None:
        return "died: the kernel process is gone"
    if code < 0:
        return f"died: killed by signal {-code}"
    return f"died: exit code {code}"


class DeathWatch:
    """
    Polls the processes ``watched`` returns and reports each one found dead to ``on_dead`` with the reason.
    ``busy`` says whether there is anything to watch, now or soon (a kernel being restarted is not polled
    but will be again); ``settle`` stops the polling once there is not.
    """

    def __init__(
        self,
        clock: IReactorTime,
        processes: KernelProcesses,
        *,
        interval: float,
        watched: Callable[[], list[Watched]],
        busy: Callable[[], bool],
        on_dead: Callable[[str, str], None],
    ) -> None:
        self._processes = processes
        self.interval = interval
        self._watched = watched
        self._busy = busy
        self._on_dead = on_dead
        self._loop = LoopingCall(self._poll)
        self._loop.clock = clock

    @property
    def running(self) -> bool:
        return bool(self._loop.running)

    def start(self) -> None:
        """Poll from now on, every ``interval`` seconds (a kernel is being launched); idempotent."""
        if not self._loop.running:
            self._loop.start(self.interval, now=False)

    def settle(self) -> None:
        """Stop polling if nothing is left to watch (a kernel or a launch has just gone)."""
        if self._loop.running and not self._busy():
            self._loop.stop()

    def _poll(self) -> Deferred[None]:
        watched = self._watched()
        if not watched:
            return succeed(None)
        d = self._processes.find_dead(watched).addCallback(self._report)
        return d.addErrback(lambda f: _log.failure("polling kernels failed", failure=f))

    def _report(self, dead: list[tuple[str, int | None]]) -> None:
        for kernel_id, code in dead:
            self._on_dead(kernel_id, death_reason(code))


__all__ = ["DeathWatch", "death_reason"]

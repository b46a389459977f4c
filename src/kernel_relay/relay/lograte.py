# -*- test-case-name: tests.relay.test_lograte -*-
"""
:class:`LogLimit`: at most a few lines a client can make the relay log per window of time, however many
messages it sends, and one line at the window's end saying how many were held back. A client that sends
20,000 refused messages would otherwise write 20,000 warnings.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

log = Logger()

#: Lines logged per client per window, and the window's length in seconds.
BURST: Final = 10
WINDOW: Final = 10.0


@dataclass
class _Window:
    logged: int = 0
    held_back: int = 0


class LogLimit:
    """Allows ``burst`` lines per key (a client's address) every ``window`` seconds of ``clock``."""

    def __init__(
        self, clock: IReactorTime, what: str, burst: int = BURST, window: float = WINDOW
    ) -> None:
        self._clock = clock
        self._what = what
        self._burst = burst
        self._window = window
        self._windows: dict[str, _Window] = {}

    def allow(self, key: str) -> bool:
        """Whether to log this line of ``key``'s; a line not logged is counted, and told of later."""
        window = self._windows.get(key)
        if window is None:
            window = self._windows[key] = _Window()
            self._clock.callLater(self._window, self._close, key)
        if window.logged < self._burst:
            window.logged += 1
            return True
        window.held_back += 1
        return False

    def _close(self, key: str) -> None:
        window = self._windows.pop(key)
        if window.held_back:
            log.warn(
                "{count} more {what} from {key} in {window:g}s were not logged (at most {burst} "
                "lines per client per {window:g}s)",
                count=window.held_back,
                what=self._what,
                key=key,
                window=self._window,
                burst=self._burst,
            )

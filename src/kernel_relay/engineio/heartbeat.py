"""
The heartbeat of one Engine.IO session: who pings whom, and when a silent peer is given up.

In protocol 4 the server pings every ``ping_interval`` and waits ``ping_timeout`` for the pong. In
protocol 3 the client pings (the session answers each ping) and the server gives up on a session
whose client sent nothing for ``ping_interval + ping_timeout``.

Apart from :mod:`.session` because it is only timers: the session says what it heard and what it
sent, this says when to ping and when the peer is too quiet. Time comes from an injected clock.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.interfaces import IDelayedCall, IReactorTime

from ._timers import cancel
from .options import EngineIOOptions


class Heartbeat:
    """
    The ping and timeout timers of one session. ``ping`` queues a ping (protocol 4) and says whether it
    did; ``timed_out`` is told why the peer is given up (no pong, or no packet at all).
    """

    def __init__(
        self,
        clock: IReactorTime,
        options: EngineIOOptions,
        client_pings: bool,
        ping: Callable[[], bool],
        timed_out: Callable[[str], None],
    ) -> None:
        #: Protocol 3: the client pings, the server answers (else the server pings).
        self.client_pings = client_pings
        self._clock = clock
        self._options = options
        self._ping = ping
        self._timed_out = timed_out
        self._ping_call: IDelayedCall | None = None
        self._pong_deadline: IDelayedCall | None = None
        self._silence_call: IDelayedCall | None = None

    def start(self) -> None:
        """The session opened: wait for the client's first ping, or schedule the first of ours."""
        if self.client_pings:
            self.heard()
        else:
            self._schedule_ping()

    def heard(self) -> None:
        """Protocol 3: a packet came from the client, so (re)start the wait for its next one."""
        if not self.client_pings:
            return
        cancel(self._silence_call)
        self._silence_call = self._clock.callLater(
            self._options.ping_interval + self._options.ping_timeout, self._client_silent
        )

    def pong_received(self) -> None:
        """Protocol 4: the client answered our ping; the next one follows after ``ping_interval``."""
        cancel(self._pong_deadline)
        self._pong_deadline = None
        self._schedule_ping()

    def stop(self) -> None:
        """The session closed: no more pings, no more timeouts (idempotent)."""
        cancel(self._ping_call)
        self._ping_call = None
        cancel(self._pong_deadline)
        self._pong_deadline = None
        cancel(self._silence_call)
        self._silence_call = None

    def _client_silent(self) -> None:
        self._silence_call = None
        self._timed_out("no ping from the client in time")

    def _schedule_ping(self) -> None:
        cancel(self._ping_call)
        self._ping_call = self._clock.callLater(self._options.ping_interval, self._send_ping)

    def _send_ping(self) -> None:
        self._ping_call = None
        # The deadline is set before the ping goes out: a pong may come back while it is sent.
        cancel(self._pong_deadline)
        self._pong_deadline = self._clock.callLater(
            self._options.ping_timeout, self._ping_timed_out
        )
        if not self._ping():
            cancel(self._pong_deadline)
            self._pong_deadline = None

    def _ping_timed_out(self) -> None:
        self._pong_deadline = None
        self._timed_out("no pong within the ping timeout")

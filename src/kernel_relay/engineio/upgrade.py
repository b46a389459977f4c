"""
One attempt to move an Engine.IO session onto a better transport (a WebSocket probe beside long-polling):
the probe, the pause of polling once the probe answered, and the deadline.

The protocol: the client sends ``ping "probe"`` on the new transport and gets ``pong "probe"``; polling is
paused (a poll waiting then, or arriving later, is ended with a noop); the client sends ``upgrade`` on the
probe, which then carries the session. Apart from :mod:`.session` because it is its own short-lived
state with its own timers; the session decides what a probe's packets mean for it.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.interfaces import IDelayedCall, IReactorTime

from ._timers import cancel
from .packets import Packet, PacketType
from .transport import Transport

PROBE = "probe"

#: Seconds a poll that arrives during an upgrade waits before it is answered with a noop.
PAUSED_POLL_DELAY = 0.1


class Upgrade:
    """
    A probe under way: ``give_up`` is told ``"upgrade timeout"`` unless the upgrade is completed or
    abandoned (:meth:`stop`) within ``timeout`` seconds.
    """

    def __init__(
        self,
        probe: Transport,
        clock: IReactorTime,
        timeout: float,
        give_up: Callable[[str], None],
    ) -> None:
        self.probe = probe
        #: Polling is paused: the probe answered, the client is about to switch.
        self.paused = False
        self._clock = clock
        self._deadline: IDelayedCall | None = clock.callLater(timeout, give_up, "upgrade timeout")
        self._noop_call: IDelayedCall | None = None

    @staticmethod
    def is_probe(packet: Packet) -> bool:
        return packet.type is PacketType.PING and packet.data == PROBE

    def probed(self, current: Transport) -> None:
        """The client's probe ping came: answer it on the probe, pause polling, end a waiting poll."""
        self.probe.send([Packet(PacketType.PONG, PROBE)])
        self.paused = True
        if current.writable:
            current.send([Packet(PacketType.NOOP)])

    def polled(self, current: Transport) -> None:
        """
        A poll arrived while paused (a well-behaved client does not poll now). Like the reference server,
        end it with a noop only after a moment, so an upgrade packet already on its way wins (the poll is
        then refused like any poll after the upgrade).
        """
        cancel(self._noop_call)
        self._noop_call = self._clock.callLater(PAUSED_POLL_DELAY, self._end_poll, current)

    def stop(self) -> None:
        """The upgrade completed or was abandoned: its timers go (idempotent)."""
        cancel(self._deadline)
        self._deadline = None
        cancel(self._noop_call)
        self._noop_call = None
        self.paused = False

    def _end_poll(self, current: Transport) -> None:
        self._noop_call = None
        if self.paused and current.writable:
            current.send([Packet(PacketType.NOOP)])

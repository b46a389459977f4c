"""
Knowing when a kernel's ROUTER knows a DEALER socket: its ZMTP (or CurveZMQ) handshake succeeded, read
from the socket's monitor. Before that, the ROUTER drops what it sends to the socket's identity, so a
request whose reply must not be lost waits for it.

Apart from :mod:`._zmq` because it is a reactor reader of its own (the monitor socket), with its own
timer; it costs two more ZMQ sockets until the handshake, so only sockets that ask are watched.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

import zmq
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger
from twisted.python.failure import Failure

_log = Logger()

#: A socket whose handshake has not succeeded after this long is deemed connected anyway: ZeroMQ queues
#: what is sent to it, as it did before the relay waited (a kernel that stopped answering is told by the
#: heartbeat, not here).
HANDSHAKE_WAIT = 5.0
_HANDSHAKE_SUCCEEDED = int(zmq.EVENT_HANDSHAKE_SUCCEEDED)


class HandshakeWatch:
    """
    Reads a socket's monitor until its ZMTP (or CurveZMQ) handshake with the kernel succeeded, then calls
    back and stops monitoring: from then on the kernel's ROUTER knows the socket's identity and routes to it
    (before, it drops what it sends to that identity). Costs nothing once connected.
    """

    def __init__(self, reactor: Any, socket: Any) -> None:
        self._reactor = reactor
        self._socket = socket
        self._monitor: Any = socket.get_monitor_socket(_HANDSHAKE_SUCCEEDED)
        self._callbacks: list[Callable[[], None]] | None = []
        reactor.addReader(self)
        self._timeout: IDelayedCall | None = reactor.callLater(HANDSHAKE_WAIT, self._waited)
        self._first: IDelayedCall | None = reactor.callLater(0, self.doRead)

    @property
    def done(self) -> bool:
        return self._callbacks is None

    def when_connected(self, callback: Callable[[], None]) -> None:
        if self._callbacks is None:
            callback()
        else:
            self._callbacks.append(callback)

    def fileno(self) -> int:
        return int(self._monitor.getsockopt(zmq.FD)) if self._monitor is not None else -1

    def logPrefix(self) -> str:
        return "zmq-handshake"

    def connectionLost(self, reason: Failure) -> None:
        self.stop()

    def doRead(self) -> None:
        self._first = None
        while self._monitor is not None:
            try:
                frames = self._monitor.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            except zmq.ZMQError:
                break
            if struct.unpack_from("=H", frames[0])[0] == _HANDSHAKE_SUCCEEDED:
                break
        self._connected()

    def _waited(self) -> None:
        self._timeout = None
        _log.warn(
            "A ZMQ socket to a kernel did not complete its handshake in {wait}s; sending anyway",
            wait=HANDSHAKE_WAIT,
        )
        self._connected()

    def _connected(self) -> None:
        callbacks, self._callbacks = self._callbacks, None
        self.stop()
        for callback in callbacks or ():
            callback()

    def stop(self) -> None:
        """Stop monitoring (idempotent); callbacks not yet called are forgotten."""
        for call in (self._timeout, self._first):
            if call is not None and call.active():
                call.cancel()
        self._timeout = self._first = None
        monitor, self._monitor = self._monitor, None
        if monitor is None:
            return
        self._reactor.removeReader(self)
        try:
            if not self._socket.closed:
                self._socket.disable_monitor()
        except zmq.ZMQError:
            pass
        monitor.close(linger=0)

"""
Thin txzmq adapters: sockets that hand whole multipart frame lists to a callback.

This module (with :mod:`._zmq_handshake`, which watches a socket's handshake) is the only one that
touches ZMQ sockets. ``Kernel`` talks to the ``SocketOpener`` protocol so tests can replace real
sockets with in-memory fakes.

A relay has a fixed few ZeroMQ contexts whatever its number of kernels, each with one I/O and one reaper
thread: one per ``ZmqSocketOpener`` (the reactor's sockets), and :func:`manager_context`, which every
jupyter_client ``KernelManager`` of the relay shares for the control socket it keeps for a polite shutdown
(by default each manager would make a context, and two threads, of its own). Each context may hold as many
sockets as the process may open files (:func:`new_context`); past that, opening one fails with
:class:`SocketsExhausted`.
"""

from __future__ import annotations

import errno
import resource
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import zmq
import zmq.backend
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from txzmq import (
    ZmqDealerConnection,
    ZmqEndpoint,
    ZmqEndpointType,
    ZmqFactory,
    ZmqSubConnection,
)

from ._messages import Frame
from ._zmq_handshake import HandshakeWatch

FrameHandler = Callable[[list[Frame]], None]

_log = Logger()

#: Messages taken from one socket per reactor turn; the rest wait for the next turn, so a kernel
#: flooding iopub cannot hold the reactor (and every client's writes) until it pauses.
READ_BATCH = 200
#: Bytes taken from one socket per reactor turn, as well: a client is judged slow only between turns (a burst
#: queued within one turn is not its fault), so 200 messages of 1 MB queued 200 MB for every client of the
#: kernel, past their 64 MiB bound, before any could be found slow.
READ_BATCH_BYTES = 4 * 1024 * 1024

#: Messages ZeroMQ may queue on each of the relay's kernel sockets, each way (its SNDHWM and RCVHWM):
#: libzmq's default, which every jupyter_client keeps. txzmq's own default, 0, is *no limit*: libzmq's
#: I/O thread then takes a kernel's iopub off the wire as fast as it comes and queues it in the relay
#: without bound whenever the reactor falls behind (a kernel printing 1 MB messages to six clients grew
#: the relay by 1.6 GB). Past the bound a SUB drops what comes (as every Jupyter client's does), and a
#: send to a kernel that does not read fails at once (the client is told).
KERNEL_HWM = 1000

#: Frames at least this big are handed on as a read-only ``memoryview`` of ZMQ's own message rather
#: than copied into ``bytes``: a 10 MB buffer costs no copy (and no fresh pages) on its way through.
ZERO_COPY_BYTES = 64 * 1024

# pyzmq's constants are enum flags; plain ints keep the per-message calls free of enum arithmetic.
_EVENTS = int(zmq.EVENTS)
_POLLIN = int(zmq.POLLIN)
_NOBLOCK = int(zmq.NOBLOCK)
_NOBLOCK_SNDMORE = int(zmq.NOBLOCK | zmq.SNDMORE)

# pyzmq's Cython send, without the Python layer over it (which only adds routing ids and groups).
_send: Callable[[Any, Frame, int], Any] = zmq.backend.Socket.send


class SocketsExhausted(ConnectionError):
    """No ZeroMQ socket can be opened: the context's socket limit or the process's file limit is reached."""


def file_limit() -> int | None:
    """The process's soft limit of open files, or None when unlimited."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return None if soft == resource.RLIM_INFINITY else int(soft)


def new_context() -> zmq.Context[Any]:
    """
    A ZeroMQ context (one I/O thread) that may hold as many sockets as the process may open files (each
    socket needs at least one), within what libzmq's poller supports; pyzmq's default would be 1,023.
    """
    context: zmq.Context[Any] = zmq.Context()
    ceiling = int(context.get(zmq.SOCKET_LIMIT))
    files = file_limit()
    context.set(zmq.MAX_SOCKETS, ceiling if files is None else max(1, min(files, ceiling)))
    return context


_manager_context: zmq.Context[Any] | None = None
_manager_context_lock = threading.Lock()


def manager_context() -> zmq.Context[Any]:
    """
    The one context of every jupyter_client ``KernelManager`` in this process (see the module doc); made
    when first needed (from a worker thread, hence the lock) and kept for the process's life.
    """
    global _manager_context
    with _manager_context_lock:
        if _manager_context is None or _manager_context.closed:
            _manager_context = new_context()
        return _manager_context


def _exhausted(error: zmq.ZMQError) -> SocketsExhausted:
    return SocketsExhausted(
        f"the relay cannot open another ZeroMQ socket ({error}): it has reached its limit of open files "
        f"({file_limit() or 'unlimited'}) or of sockets; raise it (ulimit -n) or run fewer kernels and "
        "clients"
    )


class FrameSocket(Protocol):
    """A connected socket: send a multipart message, or close (drops pending sends at once)."""

    def send(self, frames: Sequence[Frame]) -> None: ...

    def close(self, linger: float = 0.0) -> None:
        """Close; with ``linger``, what was sent is still delivered for up to that many seconds."""


class SocketOpener(Protocol):
    """Creates the client-side sockets of a kernel connection."""

    def subscriber(
        self, url: str, on_frames: FrameHandler, curve: CurveKeys | None = None
    ) -> FrameSocket: ...

    def dealer(
        self,
        url: str,
        identity: bytes,
        on_frames: FrameHandler,
        curve: CurveKeys | None = None,
        watch: bool = False,
    ) -> FrameSocket:
        """A DEALER; with ``watch``, one that tells when the kernel knows it (``when_connected``)."""


def channel_url(connection_info: dict[str, Any], channel: str) -> str:
    """The ZMQ address of one kernel channel, from a connection file's contents."""
    transport = connection_info.get("transport", "tcp")
    ip = connection_info["ip"]
    port = connection_info[f"{channel}_port"]
    if transport == "ipc":
        return f"ipc://{ip}-{port}"
    return f"{transport}://{ip}:{port}"


class _BatchedReads:
    """
    txzmq's ``doRead`` and ``send`` with plain-int flags, and at most READ_BATCH messages per turn.

    ZMQ's descriptor is edge-triggered: it only signals again once the queue was read empty, so a
    batch that stops early schedules the next one itself. pyzmq's ``recv_multipart`` and
    ``send_multipart`` (and txzmq's flag arithmetic) spend a few microseconds per message on enum
    flags; these loops call the Cython ``recv``/``send``/``get`` directly. Frames are received
    without copying (a ``zmq.Frame`` says by itself whether more follow): small ones are then copied
    into ``bytes``, large ones passed on as views (:data:`ZERO_COPY_BYTES`).

    How a read learns that the queue is empty: after a lone message (a reply, a status) from
    ``EVENTS``, which costs less than the ``zmq.Again`` a further receive would raise; in a burst,
    from that exception, which is then one per batch instead of a ``getsockopt`` per message. Both
    process ZMQ's pending commands, which is what re-arms the descriptor.
    """

    socket: Any
    factory: Any
    read_scheduled: Any

    def messageReceived(self, message: list[Frame]) -> None:
        raise NotImplementedError

    def doRead(self) -> None:
        scheduled, self.read_scheduled = self.read_scheduled, None
        if scheduled is not None and not scheduled.called:
            scheduled.cancel()
        taken = 0
        for index in range(READ_BATCH):
            if taken > READ_BATCH_BYTES:
                break
            socket = self.socket
            if self.factory is None or socket is None or socket.closed:
                return
            try:
                if index == 1 and not socket.get(_EVENTS) & _POLLIN:
                    return
                # (Only the first receive can raise zmq.Again: a multipart message arrives whole.)
                frames: list[Frame] = []
                more = True
                while more:
                    frame = socket.recv(_NOBLOCK, False)
                    size = len(frame)
                    taken += size
                    frames.append(frame.bytes if size < ZERO_COPY_BYTES else frame.buffer)
                    more = frame.more
            except zmq.Again:
                return
            except zmq.ZMQError as error:
                _log.warn("ZMQ receive failed: {error}", error=error)
                return
            try:
                self.messageReceived(frames)
            except Exception:
                _log.failure("handling a ZMQ message failed")
        if self.factory is not None and self.read_scheduled is None:
            self.read_scheduled = self.factory.reactor.callLater(0, self.doRead)

    def send(self, message: Sequence[Frame]) -> None:
        """
        Send a multipart message without blocking (zmq.Again when the peer's queue is full).

        A send can consume the descriptor's edge, so messages already waiting are read in the
        next turn; txzmq schedules that read after every send, here only when one is waiting.
        """
        socket = self.socket
        last = len(message) - 1
        try:
            for index, frame in enumerate(message):
                _send(socket, frame, _NOBLOCK_SNDMORE if index < last else _NOBLOCK)
        finally:
            # A refused send (zmq.Again past KERNEL_HWM) has consumed the edge as well.
            if self.read_scheduled is None and not socket.closed and socket.get(_EVENTS) & _POLLIN:
                self.read_scheduled = self.factory.reactor.callLater(0, self.doRead)


@dataclass(frozen=True)
class CurveKeys:
    """
    A kernel's CurveZMQ keys (Z85 text, as jupyter_client writes them in the connection file): the relay's
    sockets are Curve clients that authenticate the kernel by its public key and use the same key pair as
    jupyter_client's own clients do.
    """

    public: bytes
    secret: bytes

    @classmethod
    def of(cls, connection_info: dict[str, Any]) -> CurveKeys | None:
        """The keys a connection file carries, or None for a kernel whose channels are not encrypted."""
        public, secret = (
            connection_info.get("curve_publickey"),
            connection_info.get("curve_secretkey"),
        )
        if not public or not secret:
            return None
        return cls(_key_bytes(public), _key_bytes(secret))

    def apply(self, socket: Any) -> None:
        socket.curve_secretkey = self.secret
        socket.curve_publickey = self.public
        socket.curve_serverkey = self.public


def _key_bytes(key: str | bytes) -> bytes:
    return key.encode("ascii") if isinstance(key, str) else bytes(key)


def _connect(connection: Any, url: str, curve: CurveKeys | None) -> None:
    """Connect a txzmq connection made without an endpoint, as a Curve client first if ``curve``."""
    if curve is not None:
        curve.apply(connection.socket)
    connection.addEndpoints([ZmqEndpoint(ZmqEndpointType.connect, url)])


class _Sub(_BatchedReads, ZmqSubConnection):  # type: ignore[misc]
    """A SUB socket that keeps multipart messages whole (txzmq's own framing splits off a tag)."""

    highWaterMark = KERNEL_HWM

    def __init__(
        self, factory: ZmqFactory, url: str, on_frames: FrameHandler, curve: CurveKeys | None
    ) -> None:
        self._on_frames = on_frames
        super().__init__(factory)
        _connect(self, url, curve)
        self.subscribe(b"")

    def messageReceived(self, message: list[Frame]) -> None:
        self._on_frames(message)


class _Dealer(_BatchedReads, ZmqDealerConnection):  # type: ignore[misc]
    """
    A DEALER socket with a fixed routing identity, so the kernel's ROUTER knows who we are; it tells when
    its handshake succeeded (:meth:`when_connected`).
    """

    highWaterMark = KERNEL_HWM

    def __init__(
        self,
        factory: ZmqFactory,
        url: str,
        identity: bytes,
        on_frames: FrameHandler,
        curve: CurveKeys | None,
        watch: bool = False,
    ) -> None:
        self._on_frames = on_frames
        super().__init__(factory, identity=identity)
        # Monitoring costs two more ZMQ sockets until the handshake: only for the sockets that need it.
        self._watch = HandshakeWatch(factory.reactor, self.socket) if watch else None
        _connect(self, url, curve)

    def when_connected(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once the kernel knows this socket (at once if it does, or is not watched)."""
        if self._watch is None:
            callback()
        else:
            self._watch.when_connected(callback)

    def messageReceived(self, message: list[Frame]) -> None:
        self._on_frames(message)

    def shutdown(self) -> None:
        if self._watch is not None:
            self._watch.stop()
        super().shutdown()


class _Connection:
    """A txzmq connection whose close is idempotent and whose send after close is a clear error."""

    def __init__(self, connection: Any) -> None:
        self._connection: Any = connection

    def send(self, frames: Sequence[Frame]) -> None:
        if self._connection is None:
            raise ConnectionError("socket is closed")
        self._connection.send(frames)

    def when_connected(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once the peer knows this socket (at once for a socket that cannot tell)."""
        watch = getattr(self._connection, "when_connected", None)
        if watch is None:
            callback()
        else:
            watch(callback)

    def close(self, linger: float = 0.0) -> None:
        connection, self._connection = self._connection, None
        if connection is not None and connection.socket is not None:
            if linger:
                connection.socket.set(zmq.LINGER, int(linger * 1000))
            connection.shutdown()


class ZmqSocketOpener:
    """
    Opens txzmq sockets on one ZMQ context (one ``ZmqFactory``), created when first needed.

    Linger is 0: closing a socket or the context drops unsent messages instead of waiting for a
    kernel that may be gone. Note that txzmq schedules its post-send read on the global reactor.
    """

    def __init__(self, reactor: IReactorTime) -> None:
        self._reactor = reactor
        self._factory: ZmqFactory | None = None

    def _get_factory(self) -> ZmqFactory:
        if self._factory is None:
            factory = ZmqFactory()
            # txzmq made a context of its own: replaced, before any socket, by one as large as the file limit.
            factory.context.term()
            factory.context = new_context()
            factory.reactor = self._reactor
            factory.lingerPeriod = 0
            self._factory = factory
        return self._factory

    def subscriber(
        self, url: str, on_frames: FrameHandler, curve: CurveKeys | None = None
    ) -> FrameSocket:
        try:
            return _Connection(_Sub(self._get_factory(), url, on_frames, curve))
        except zmq.ZMQError as error:
            raise (_exhausted(error) if error.errno == errno.EMFILE else error) from error

    def dealer(
        self,
        url: str,
        identity: bytes,
        on_frames: FrameHandler,
        curve: CurveKeys | None = None,
        watch: bool = False,
    ) -> FrameSocket:
        try:
            return _Connection(_Dealer(self._get_factory(), url, identity, on_frames, curve, watch))
        except zmq.ZMQError as error:
            raise (_exhausted(error) if error.errno == errno.EMFILE else error) from error

    def close(self) -> None:
        """Close every socket and terminate the context; a later open starts a fresh one."""
        factory, self._factory = self._factory, None
        if factory is not None:
            factory.shutdown()
            _log.debug("ZMQ context terminated")

# -*- test-case-name: tests.test_internals -*-
"""
Every use the relay makes of Twisted's and Autobahn's internals, each behind a function named for what it
does.

Some of what the relay needs is in no interface of these libraries: how many bytes a TCP connection still
holds, a send on its socket right now, a larger send size, the moment a transport (not its protocol) closes,
the producer a transport has, the protocol twisted.web builds around an HTTP channel, a listening service
that fails at start, and Autobahn's connection state and frame reader. Those are implementation details
that a release may change without notice, so they are read here and nowhere else; the engineio and http
layers (and any future front, such as the Jupyter kernel WebSocket) call these functions instead. One helper
here uses public API only, :func:`abort_connection`: it is the one rule on transports that both layers share.

Each function is tested against real connections over loopback (TCP, UNIX, TLS, and a real Autobahn
WebSocket): ``tests/test_internals.py``. A Twisted or Autobahn release that changes what one relies on fails
those tests. Functions that cannot tell on some transport say so (None, False or 0) rather than guess.

This module knows Twisted's TCP transport (``twisted.internet.abstract.FileDescriptor`` and
``twisted.internet.tcp.Connection``), its TLS wrapper, twisted.web's HTTP channel factory,
twisted.application's endpoint service and ``twist`` runner, and Autobahn's ``WebSocketProtocol``. It must not know anything of
the relay: no Engine.IO, socket.io, Jupyter or HTTP routes, and it imports nothing of kernel_relay.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from autobahn.websocket.protocol import WebSocketProtocol
from twisted.application.internet import StreamServerEndpointService

# ``twist`` has no public API: the ``kernel-relay`` console script (kernel_relay.cli) runs as the ``twist``
# script does, through these three. tests/e2e/test_console_script.py runs that script and fails if they change.
from twisted.application.runner._runner import Runner as Runner
from twisted.application.twist._options import TwistOptions as TwistOptions
from twisted.application.twist._twist import Twist as Twist
from twisted.internet import tcp
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IPushProducer, ITransport
from twisted.protocols.policies import ProtocolWrapper
from twisted.python.failure import Failure
from twisted.web.http import HTTPChannel, _GenericHTTPChannelProtocol

# -- Twisted: TCP connections --------------------------------------------------------------------------


def unsent_bytes(transport: object) -> int | None:
    """
    The bytes a Twisted TCP (or UNIX) connection holds that its socket has not taken yet, or None for a
    transport that does not show them. Under TLS it is the ciphertext that the TCP connection beneath holds
    (the TLS wrapper passes the attributes on).

    Twisted keeps them in two buffers: ``dataBuffer``, being sent from ``offset`` on, and a list of later
    writes of ``_tempDataLen`` bytes in all.
    """
    for candidate in (transport, getattr(transport, "transport", None)):
        buffer = getattr(candidate, "dataBuffer", None)
        offset = getattr(candidate, "offset", None)
        pending = getattr(candidate, "_tempDataLen", None)
        if isinstance(buffer, bytes | memoryview) and type(offset) is int and type(pending) is int:
            return len(buffer) - offset + pending
    return None


def write_through(transport: object, data: bytes | memoryview) -> int:
    """
    Send ``data`` on a TCP (or UNIX) connection's socket at once, as far as the socket takes it, when Twisted
    holds nothing unsent for it (so nothing is overtaken); returns the bytes sent, 0 for any other transport
    (TLS included) and for a connection that is closing.

    Twisted's ``write`` only buffers: the bytes leave a reactor turn later, after a poll for writability,
    which adds to the latency of every reply; and it takes only ``bytes``, so a large ``memoryview`` would
    first be copied. The caller writes whatever the socket did not take through ``write`` as usual, and with
    it keeps Twisted's back-pressure. Each send hands the socket at most the connection's send limit
    (:func:`set_send_limit`).
    """
    # Only Twisted's own TCP connection: a wrapper such as TLS passes unknown attributes on to the
    # transport beneath it, whose writeSomeData would put plain text on an encrypted connection.
    if not isinstance(transport, tcp.Connection) or not transport.connected:
        return 0
    if closing(transport) or unsent_bytes(transport) != 0:
        return 0
    view = memoryview(data)
    total = 0
    while total < len(view):
        # Annotated as taking bytes, it takes any buffer (it sends a memoryview of it).
        sent = transport.writeSomeData(view[total:])  # type: ignore[arg-type]
        if type(sent) is not int or sent <= 0:
            break  # would block, or the connection is lost: Twisted finds out by itself
        total += sent
    return total


def drop_unsent(transport: object) -> None:
    """
    Let go of what a closed TCP (or UNIX) connection still held unsent: Twisted keeps its buffers after the
    close, for as long as anything refers to the transport (a request in a reference cycle, say).
    """
    if isinstance(transport, tcp.Connection) and not transport.connected:
        transport.dataBuffer = b""
        transport.offset = 0
        transport._tempDataBuffer = []
        transport._tempDataLen = 0


def set_send_limit(transport: object, limit: int) -> bool:
    """
    Let Twisted hand a TCP (or UNIX) connection's socket up to ``limit`` bytes per send (its default is 128
    KiB, and it waits a reactor turn between two sends); False for a transport without that limit.

    A TLS wrapper shows the limit of the connection beneath it but would keep a value set through it to
    itself, where nothing reads it: it is left alone, and False returned.
    """
    if isinstance(transport, ProtocolWrapper) or not hasattr(transport, "SEND_LIMIT"):
        return False
    transport.SEND_LIMIT = limit  # type: ignore[attr-defined]
    return True


def closing(transport: object) -> bool:
    """Was the connection asked to close (``loseConnection``)? It closes once its buffer is sent."""
    return bool(getattr(transport, "disconnecting", False))


def abort_connection(transport: ITransport) -> None:
    """Drop ``transport``'s connection at once (close it, if it cannot be aborted)."""
    method = getattr(transport, "abortConnection", None) or transport.loseConnection
    method()


def hook_connection_lost(transport: object, callback: Callable[[], None]) -> bool:
    """
    Call ``callback()`` once ``transport`` has lost its connection; False if it cannot tell.

    The transport, not its protocol, is hooked: a protocol that takes a transport over (Autobahn's
    WebSocketResource replaces the HTTP channel) leaves the old protocol unaware of the close. The reactor
    calls a TCP or UNIX server transport's ``connectionLost``, and a TCP transport calls its TLS protocol's
    (``TLSMemoryBIOProtocol``, the transport of a TLS connection), through an attribute lookup, so an
    instance attribute that wraps it is called instead. The wrapper removes itself when called: it refers to
    the transport, and the reference cycle must not outlive the connection.
    """
    hooked = getattr(transport, "connectionLost", None)
    if not callable(hooked):
        return False
    original: Callable[[Failure], object] = hooked

    def lost(reason: Failure) -> None:
        # (Recognized by what it wraps: naming itself here would be a cycle of its own.)
        if getattr(vars(transport).get("connectionLost"), "__wrapped__", None) is original:
            del transport.connectionLost  # type: ignore[attr-defined]
        try:
            original(reason)
        finally:
            callback()

    lost.__wrapped__ = original  # type: ignore[attr-defined]
    try:
        transport.connectionLost = lost  # type: ignore[attr-defined]
    except (AttributeError, TypeError):
        return False
    return True


def replace_producer(transport: Any, producer: IPushProducer) -> None:
    """
    Make ``producer`` the streaming producer of ``transport``, in place of the one registered (twisted.web's
    HTTP channel registers itself, and a transport takes one producer at a time): it is paused when the
    transport's write buffer is full and resumed once it is empty.
    """
    if getattr(transport, "producer", None) is not None:
        transport.unregisterProducer()
    transport.registerProducer(producer, True)


# -- Twisted: twisted.web and twisted.application -----------------------------------------------------

#: The protocol twisted.web's ``Site`` builds for each connection: it serves an HTTP/1.1 channel, or the
#: HTTP/2 one if TLS negotiates ``h2`` (ALPN).
HTTPChannelProtocol = _GenericHTTPChannelProtocol


def negotiating_http_protocol(channel: HTTPChannel) -> HTTPChannelProtocol:
    """``channel`` inside the protocol twisted.web builds around its own (:data:`HTTPChannelProtocol`)."""
    return _GenericHTTPChannelProtocol(channel)


def hold_requests(channel: HTTPChannel) -> None:
    """
    Stop ``channel`` reading its transport and parsing the requests it has read already, until
    :func:`release_requests`.

    twisted.web pauses a channel's transport when the transport's write buffer is full, but only between
    requests: a request answered at once writes its response while it is handled, so the pause is skipped,
    and the end of the request does not pause either; pipelined requests are then read and answered without
    end. The parser is a ``LineReceiver``, whose loop stops at its ``paused`` flag.
    """
    channel.paused = True
    producer = IPushProducer(channel.transport, None)
    if producer is not None:
        producer.pauseProducing()


def release_requests(channel: HTTPChannel) -> None:
    """
    Undo :func:`hold_requests` but for the transport (twisted.web resumes it itself once its buffer has
    drained and no request is being handled): parse what was read meanwhile.
    """
    if not channel.paused:
        return
    channel.paused = False
    if channel._buffer and channel.transport is not None:
        channel.dataReceived(b"")  # type: ignore[no-untyped-call]


def forget_requests(channel: HTTPChannel) -> None:
    """
    Drop the requests a closed ``channel`` still lists (one unanswered when the connection closed): each
    refers to the channel, which twisted.web leaves referring to it, a reference cycle that keeps both, and
    their buffers, until a full collection.
    """
    for request in channel.requests:
        forget_transport(request)
    channel.requests = []


def forget_transport(request: Any) -> None:
    """
    Drop a done request's reference to its connection's transport: a request may stay in a reference cycle
    (Klein's recursive error handler closes over it) and would keep the transport, and what it buffered, too.
    """
    request.transport = None


def fail_at_start(service: StreamServerEndpointService) -> None:
    """
    Make ``service`` raise from ``privilegedStartService`` when its endpoint cannot listen, instead of
    logging the failure and running on without a port.
    """
    service._raiseSynchronously = True


# -- Autobahn ------------------------------------------------------------------------------------------

_OPEN: Final[int] = WebSocketProtocol.STATE_OPEN
_CLOSED: Final[int] = WebSocketProtocol.STATE_CLOSED

#: Close codes by which Autobahn fails a connection for a protocol fault of the peer: a protocol error, a
#: type of data it does not take, invalid UTF-8, a message too big.
PEER_FAULT_CODES: Final = frozenset({1002, 1003, 1007, 1009})


def websocket_open(protocol: WebSocketProtocol) -> bool:
    """Is Autobahn's WebSocket connection open (handshake done, no close begun)?"""
    return _OPEN == protocol.state


def websocket_closed(protocol: WebSocketProtocol) -> bool:
    """Is Autobahn's WebSocket connection closed (not merely closing)?"""
    return _CLOSED == protocol.state


def websocket_reader_idle(protocol: WebSocketProtocol) -> bool:
    """
    Does Autobahn hold nothing of a frame or message on the open connection, so that the next bytes received
    begin a new frame of a new message (which another reader may then read)? A version of Autobahn without
    the attributes read here counts as never idle.
    """
    return (
        _OPEN == protocol.state
        and getattr(protocol, "data", None) == b""
        and getattr(protocol, "current_frame", True) is None
        and getattr(protocol, "inside_message", True) is False
    )


def release_websocket(protocol: WebSocketProtocol) -> None:
    """
    Break the reference cycle Autobahn leaves in a connection once it is closed: its ``is_closed`` Deferred
    has fired with the protocol itself as its result. It is replaced by one fired with None, so that the
    closed connection is freed by reference counting rather than at a full collection.
    """
    closed = getattr(protocol, "is_closed", None)
    if _CLOSED == protocol.state and isinstance(closed, Deferred) and closed.called:
        protocol.is_closed = succeed(None)


def failed_for_peer_fault(protocol: WebSocketProtocol) -> bool:
    """Did Autobahn close the connection for a protocol fault of the peer (:data:`PEER_FAULT_CODES`)?"""
    return getattr(protocol, "localCloseCode", None) in PEER_FAULT_CODES

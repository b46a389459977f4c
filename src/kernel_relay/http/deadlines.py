"""
How long a client may take to send a request: :class:`RequestDeadlineChannel` is the site's HTTP channel. A
request's line and headers must arrive within ``header_timeout`` seconds and its body within
``body_timeout``; requests being answered (a held long-poll, a WebSocket) are never timed out. A timeout is
reported through the site's :class:`~kernel_relay.http.connections.ConnectionEvents`.

A client needs no token to open a connection: without deadlines, one that trickles a request header one byte
at a time holds its file descriptor for ever. The channel also tells the site's connection limiter who a
trusted proxy's request comes from, and closes a connection on probation after its first answer. It takes
its clock from the site (the channel's ``callLater``) and never imports the global reactor.
"""

from __future__ import annotations

import json
from enum import Enum
from typing import Any, Final

from twisted.internet.interfaces import IDelayedCall
from twisted.internet.protocol import connectionDone
from twisted.logger import LogLevel
from twisted.python.failure import Failure
from twisted.web.http import HTTPChannel

from ..twisted_internals import abort_connection, closing
from .connections import ConnectionEvents, ConnectionLimiter, client_address, peer_host

#: Seconds a client has to send a request's line and headers, and then its body.
HEADER_TIMEOUT: Final = 10.0
BODY_TIMEOUT: Final = 60.0
#: Seconds a keep-alive connection may sit idle between requests (Twisted's default is 12 hours).
IDLE_TIMEOUT: Final = 75.0
#: Seconds a timed-out connection gets to close after its 408 before it is aborted.
ABORT_GRACE: Final = 5.0


class _Phase(Enum):
    """What a channel is doing: between requests, receiving a request's head or body, answering it, or
    closing (after a timeout, or closed)."""

    IDLE = "idle"
    HEADER = "header"
    BODY = "body"
    ANSWERING = "answering"
    CLOSING = "closing"


class RequestDeadlineChannel(HTTPChannel):
    """
    An HTTP channel with deadlines on receiving each request: its line and headers must all arrive within
    ``header_timeout`` seconds of its first byte (of the connection being made, for the first request), and
    its body within ``body_timeout`` seconds of the end of the headers.

    Twisted's own idle timeout restarts at every byte, so a client trickling a header never reaches it.
    Past a deadline the client gets 408 (unless it was answered already), the connection is closed, and
    aborted if it has not closed after :data:`ABORT_GRACE` seconds. A request being answered is not timed
    out: the deadlines cover receiving only. It costs one timer per connection, reset (not replaced) at
    each request and body, and nothing per byte. Timers use the channel's ``callLater``, which the site sets
    to its reactor's.
    """

    def __init__(
        self, header_timeout: float, body_timeout: float, events: ConnectionEvents
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self._header_timeout = header_timeout
        self._body_timeout = body_timeout
        self._events = events
        self._phase = _Phase.IDLE
        self._deadline: IDelayedCall | None = None

    def connectionMade(self) -> None:
        super().connectionMade()  # type: ignore[no-untyped-call]
        self._receive()

    def dataReceived(self, data: bytes) -> None:
        if self._phase is _Phase.IDLE:
            self._receive()
        elif self._phase is _Phase.CLOSING:
            return  # timed out: nothing more is read
        super().dataReceived(data)  # type: ignore[no-untyped-call]

    def allHeadersReceived(self) -> None:
        self._identify_client()
        super().allHeadersReceived()  # type: ignore[no-untyped-call]
        if self._phase is _Phase.HEADER and self.length != 0:
            self._phase = _Phase.BODY
            self._arm(self._body_timeout)

    def allContentReceived(self) -> None:
        # Before the request is dispatched: it may be answered at once, and the next one begin. The timer
        # stays: if it fires while the request is answered, it does nothing.
        if self._phase is not _Phase.CLOSING:
            self._phase = _Phase.ANSWERING
        super().allContentReceived()  # type: ignore[no-untyped-call]

    def requestDone(self, request: Any) -> None:
        if self._phase is _Phase.ANSWERING:
            self._phase = _Phase.IDLE
        limiter = self._limiter()
        if limiter is not None and limiter.is_on_probation(self.transport):
            # Over its address's share, and this request presented no valid token: it gets its answer and
            # no more.
            self.persistent = False
        super().requestDone(request)  # type: ignore[no-untyped-call]

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._phase = _Phase.CLOSING
        self._cancel()
        super().connectionLost(reason)  # type: ignore[no-untyped-call]

    def _limiter(self) -> ConnectionLimiter | None:
        limiter = getattr(getattr(self, "site", None), "limiter", None)
        return limiter if isinstance(limiter, ConnectionLimiter) else None

    def _identify_client(self) -> None:
        """Behind a trusted proxy: the request's client is the one its forwarding header names."""
        limiter = self._limiter()
        transport = self.transport
        if limiter is None or not limiter.proxies or transport is None or not self.requests:
            return
        peer = peer_host(transport.getPeer())
        if not limiter.proxies.trusts(peer):
            return
        request = self.requests[-1]
        name = limiter.proxies.header.encode("ascii")
        lines = [
            value.decode("latin-1") for value in request.requestHeaders.getRawHeaders(name, [])
        ]
        client = limiter.proxies.client(peer, lines)
        request.client = client_address(client)
        limiter.identify(transport, client)

    def _receive(self) -> None:
        self._phase = _Phase.HEADER
        self._arm(self._header_timeout)

    def _arm(self, seconds: float) -> None:
        # A pending timer is moved rather than replaced: resetting it later is cheap, so requests in quick
        # succession on one connection share one timer.
        deadline = self._deadline
        if deadline is not None and deadline.active():
            deadline.reset(seconds)
        else:
            self._deadline = self.callLater(seconds, self._timed_out)  # type: ignore[no-untyped-call]

    def _cancel(self) -> None:
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        self._deadline = None

    def _timed_out(self) -> None:
        self._deadline = None
        phase = self._phase
        if phase is not _Phase.HEADER and phase is not _Phase.BODY:
            return  # it is being answered, or between requests
        self._phase = _Phase.CLOSING
        transport = self.transport
        if transport is None or getattr(transport, "negotiatedProtocol", None) == b"h2":
            return  # taken over: by a WebSocket, or by Twisted's HTTP/2 channel (ALPN "h2")
        limit = self._header_timeout if phase is _Phase.HEADER else self._body_timeout
        self._events.report(
            "request_timeout",
            peer_host(transport.getPeer()),
            LogLevel.info,
            "Timed out a request from {address}: its {phase} took over {limit:g} s to arrive",
            phase=phase.value,
            limit=limit,
        )
        if not closing(transport):  # nothing answered it yet
            transport.write(_request_timeout_answer(phase.value, limit))
            self.loseConnection()  # type: ignore[no-untyped-call]
        self._deadline = self.callLater(ABORT_GRACE, self._abort)  # type: ignore[no-untyped-call]

    def _abort(self) -> None:
        self._deadline = None
        if self.transport is not None:
            abort_connection(self.transport)


def _request_timeout_answer(phase: str, limit: float) -> bytes:
    body = json.dumps(
        {"error": f"Request timeout: the request {phase} must arrive within {limit:g} seconds"}
    ).encode()
    return (
        b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
        b"connection: close\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)
    )

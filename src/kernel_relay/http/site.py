"""
The HTTP site: the resource tree (:class:`RelayRoot`: the REST API, socket.io, the demo page, behind the Host
guard), requests whose bodies are bounded as they arrive (:class:`BoundedRequest`), connections that stop
reading requests while their responses are not read (:class:`RelayChannel`), and the site and listeners that
serve it (:class:`RelaySite`, :class:`Listener`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from functools import partial
from typing import Any, Final, cast
from urllib.parse import unquote_to_bytes

from twisted.application.internet import StreamServerEndpointService
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IAddress, IReactorTime, ITCPTransport, ITransport
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.web import http
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource, Resource
from twisted.web.server import Request, Site

from ..auth import TOKEN_QUERY
from ..twisted_internals import (
    HTTPChannelProtocol,
    drop_unsent,
    fail_at_start,
    forget_requests,
    forget_transport,
    hold_requests,
    hook_connection_lost,
    negotiating_http_protocol,
    release_requests,
    set_send_limit,
)
from .connections import ConnectionEvents, ConnectionLimiter, Refusal, peer_host
from .deadlines import BODY_TIMEOUT, HEADER_TIMEOUT, IDLE_TIMEOUT, RequestDeadlineChannel
from .guards import JSONRefusal
from .hosts import HostPolicy

log = Logger()

TOKEN_QUERY_BYTES: Final = TOKEN_QUERY.encode("ascii")

#: The Jupyter kernel WebSocket's path, served by ``channels`` (the Jupyter front), not by Klein.
CHANNELS_PATH = re.compile(rb"^/api/kernels/(?P<kernel_id>[^/]+)/channels/?$")


class RelayRoot(Resource):
    """
    The root of the site: ``/socket.io/`` goes straight to the socket.io server, ``/api/kernels/<id>/channels``
    to the Jupyter front's WebSocket (``channels``), everything else to the API.

    WebSocket and socket.io traffic bypass Klein's routing on purpose: they are the hot path. ``demo``, when given, adds
    children of its own (the demo page at ``/`` and its files, see :func:`kernel_relay.demo.demo_resources`).
    """

    def __init__(
        self,
        api: IResource,
        socketio: IResource,
        demo: Mapping[bytes, IResource] | None = None,
        hosts: HostPolicy | None = None,
        channels: IResource | None = None,
    ) -> None:
        super().__init__()
        self.putChild(b"socket.io", socketio)
        for segment, child in (demo or {}).items():
            self.putChild(segment, child)
        self._api = api
        self._channels = channels
        self._hosts = hosts if hosts is not None else HostPolicy()

    def getChildWithDefault(self, path: bytes, request: IRequest) -> IResource:
        refusal = self._refusal(request)
        if refusal is not None:
            return refusal
        child: IResource = super().getChildWithDefault(path, request)
        return child

    def getChild(self, path: bytes, request: IRequest) -> IResource:
        # Give the segment back so the API sees the whole path.
        request.postpath.insert(0, request.prepath.pop())  # type: ignore[attr-defined]
        if self._channels is not None and CHANNELS_PATH.match(request.path):
            return self._channels
        return self._api

    def render(self, request: IRequest) -> bytes | int:
        refusal = self._refusal(request)
        if refusal is not None:
            return refusal.render(request)
        result: bytes | int = self._api.render(request)
        return result

    def _refusal(self, request: IRequest) -> JSONRefusal | None:
        """
        The answer to a request whose path is not UTF-8 (Klein logs those as critical errors, with a
        traceback) or whose ``Host`` header is not ASCII or not served (see :mod:`.hosts`).
        """
        try:
            unquote_to_bytes(request.path).decode("utf-8")  # type: ignore[attr-defined]
        except UnicodeDecodeError:
            return JSONRefusal(400, "Invalid URL: its path is not UTF-8")
        raw = request.getHeader(b"host")
        if raw is None:
            return None
        if not raw.isascii():
            # (Klein fails on these with an unhandled error.)
            return JSONRefusal(400, "Invalid Host header")
        host = raw.decode("ascii")
        if self._hosts.allows(host):
            return None
        log.warn(
            "Refused a request for host {host!r}: the relay has no token, so it answers only "
            "localhost, IP addresses and names given with --allow-host (DNS rebinding guard)",
            host=host,
        )
        return JSONRefusal(
            403,
            f"Host {host!r} is not served: this relay has no token, so it answers only localhost, IP "
            "addresses and the names given with --allow-host",
        )


#: Request bodies a site takes when it says nothing else: enough for any REST call.
DEFAULT_MAX_BODY = 1024 * 1024


class BoundedRequest(Request):
    """
    A request that refuses a body over its site's ``max_body`` bytes while it arrives.

    twisted.web reads a whole body (into memory, or a temporary file past 100 kB) before any resource sees
    it, so a limit checked in a resource comes too late: a client could fill the disk with one chunked
    POST. A declared ``Content-Length`` over the limit is refused before the body is read; a chunked body
    as soon as it grows past it. Either way the client gets 413 with a JSON error and the connection is
    closed (the rest of the body is never read).
    """

    _refused = False
    _received = 0

    def _max_body(self) -> int:
        limit = getattr(getattr(self.channel, "site", None), "max_body", None)
        return limit if isinstance(limit, int) else DEFAULT_MAX_BODY

    def gotLength(self, length: int | None) -> None:
        if length is not None and length > self._max_body():
            self._refuse(length)
        super().gotLength(length)

    def handleContentChunk(self, data: bytes) -> None:
        if self._refused:
            return
        self._received += len(data)
        if self._received > self._max_body():
            self._refuse(self._received)
            return
        super().handleContentChunk(data)

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        if self._refused:
            return  # answered already; whatever of the body arrived with the headers is dropped
        super().requestReceived(command, path, version)

    def _refuse(self, size: int) -> None:
        self._refused = True
        limit = self._max_body()
        log.warn(
            "Refused a request body of {size}+ bytes (limit {limit}) from {address}",
            size=size,
            limit=limit,
            address=str(getattr(self.getClientAddress(), "host", "")),
        )
        body = json.dumps({"error": f"Request body too large: the limit is {limit} bytes"}).encode()
        transport = self.channel.transport
        if transport is None:
            return
        # The request never reaches a resource, so the answer is written as Twisted writes its own
        # refusals of malformed requests: straight to the connection, which is then closed.
        transport.write(
            b"HTTP/1.1 413 Payload Too Large\r\ncontent-type: application/json\r\n"
            b"connection: close\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)
        )
        transport.loseConnection()


class RelayChannel(RequestDeadlineChannel):
    """
    The site's HTTP/1.1 channel: it reads no further request while the responses it wrote wait unsent
    beyond the transport's buffer size (64 KiB), and leaves no reference cycle when its connection closes
    (nor keeps what the connection held unsent).

    A client may pipeline requests (``GET /api/health`` needs no token) and never read the answers.
    twisted.web stops reading such a client only between two requests, and a request answered at once is
    never between two (see :func:`~kernel_relay.twisted_internals.hold_requests`): the relay would read
    and answer without end, its memory growing with every response. Here the transport telling the channel
    that its buffer is full stops the reading and the parsing of requests at once, and its being drained
    resumes them.
    """

    def pauseProducing(self) -> None:
        super().pauseProducing()  # type: ignore[no-untyped-call]
        hold_requests(self)

    def resumeProducing(self) -> None:
        super().resumeProducing()  # type: ignore[no-untyped-call]
        release_requests(self)

    def connectionMade(self) -> None:
        super().connectionMade()
        # The transport, not the channel: a WebSocket that takes the connection over leaves the channel
        # unaware of the close, and its upgrade request unanswered.
        if self.transport is not None:
            hook_connection_lost(self.transport, partial(self._transport_closed, self.transport))

    def requestDone(self, request: Any) -> None:
        super().requestDone(request)
        forget_transport(request)

    def _transport_closed(self, transport: ITransport) -> None:
        if self.transport is None:
            # Taken over by a WebSocket: the channel was not told, and its timers would keep it (and the
            # transport) until they fire.
            self.connectionLost(connectionDone)
        forget_requests(self)
        drop_unsent(transport)


#: Bytes the relay's connections hand the kernel's socket per write (Twisted's default is 128 KiB).
SEND_LIMIT = 1024 * 1024


def redact_tokens(uri: bytes) -> bytes:
    """``uri`` with the value of each ``token`` query parameter replaced by ``***``: no log shows a token."""
    path, question, query = uri.partition(b"?")
    if not question:
        return uri
    fields = []
    for field in query.split(b"&"):
        name, equals, _ = field.partition(b"=")
        if (
            equals
            and unquote_to_bytes(name.replace(b"+", b" ")).strip().lower() == TOKEN_QUERY_BYTES
        ):
            field = name + b"=***"
        fields.append(field)
    return path + b"?" + b"&".join(fields)


class _RedactedRequest:
    """A request as the access log sees it: its URI and referrer without tokens."""

    def __init__(self, request: http.Request) -> None:
        self._request = request
        self.uri = redact_tokens(request.uri)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._request, name)

    def getHeader(self, name: bytes) -> bytes | None:
        value: bytes | None = self._request.getHeader(name)
        return redact_tokens(value) if value is not None and name.lower() == b"referer" else value


def access_log_line(timestamp: str, request: http.Request) -> str:
    """Twisted's combined log format, tokens redacted (see :func:`redact_tokens`)."""
    line: str = http.combinedLogFormatter(timestamp, cast(http.Request, _RedactedRequest(request)))
    return line


class RelaySite(Site):
    """
    A Site that keeps quiet about every request unless an access log was asked for, refuses request
    bodies over ``max_body`` bytes as they arrive (see :class:`~kernel_relay.http.api.BoundedRequest`), and
    bounds what a client without a token can hold (see :mod:`~kernel_relay.http.connections`): connections,
    through ``limiter`` (none: unbounded), and the time to send a request, ``header_timeout`` seconds for
    its line and headers and ``body_timeout`` for its body. Idle keep-alive connections close after
    ``timeout`` seconds. ``reactor`` runs every timer.
    """

    noisy = False
    displayTracebacks = False
    requestFactory = BoundedRequest
    max_body = DEFAULT_MAX_BODY
    header_timeout = HEADER_TIMEOUT
    body_timeout = BODY_TIMEOUT

    def __init__(
        self,
        resource: IResource,
        *,
        logPath: str | None = None,
        timeout: float = IDLE_TIMEOUT,
        reactor: IReactorTime | None = None,
        limiter: ConnectionLimiter | None = None,
    ) -> None:
        super().__init__(
            resource,
            logPath=logPath,
            timeout=timeout,
            logFormatter=access_log_line,
            reactor=reactor,
        )
        self.limiter = limiter
        # Timeouts are reported through the limiter's events; without one, only logged.
        self._events = ConnectionEvents(self.reactor)

    def protocol(self) -> HTTPChannelProtocol:
        events = self.limiter.events if self.limiter is not None else self._events
        return negotiating_http_protocol(
            RelayChannel(self.header_timeout, self.body_timeout, events)
        )

    def buildProtocol(self, addr: IAddress | None) -> HTTPChannelProtocol | None:
        limiter = self.limiter
        host = peer_host(addr)
        if limiter is not None and not limiter.admit(host):
            return cast(HTTPChannelProtocol, Refusal())
        protocol = super().buildProtocol(addr)
        if protocol is None:
            return None
        make_connection = protocol.makeConnection

        def with_larger_writes(transport: ITransport) -> None:
            # Called once. Drop this wrapper from the protocol: it refers to the protocol, and the
            # reference cycle would keep every closed connection in memory until a cyclic collection.
            del protocol.makeConnection
            # Twisted hands a TCP socket at most 128 KiB per write and waits a reactor turn for the
            # next: a 10 MB kernel output took 80 turns. 1 MiB sends it about 6 times faster on
            # loopback, and each send still only copies what the socket buffer takes.
            set_send_limit(transport, SEND_LIMIT)
            # Replies and kernel output are small writes that must not wait on Nagle's algorithm.
            if ITCPTransport.providedBy(transport):
                transport.setTcpNoDelay(True)
            # Counted until the transport closes, even once a WebSocket has taken it over.
            if limiter is not None:
                limiter.connected(transport, host)
            make_connection(transport)

        protocol.makeConnection = with_larger_writes  # type: ignore[method-assign]
        return cast(HTTPChannelProtocol, protocol)

    def log(self, request: http.Request) -> None:
        if self.logPath is not None:
            super().log(request)


class Listener(StreamServerEndpointService):
    """
    Listens on one endpoint. A port that cannot be bound stops the relay at start, rather than leave it
    running deaf, and says so in one line rather than a traceback.
    """

    def __init__(self, description: str, endpoint: Any, factory: Site) -> None:
        super().__init__(endpoint, factory)
        self._description = description
        fail_at_start(self)

    def privilegedStartService(self) -> None:
        try:
            super().privilegedStartService()
        except (CannotListenError, OSError) as error:
            reason = getattr(error, "socketError", None) or error
            raise SystemExit(
                f"kernel-relay: cannot listen on {self._description}: {reason}"
            ) from None

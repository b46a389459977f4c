"""
The Engine.IO server: session registry, request checks, and the twisted.web resource serving both
transports on one path.

Every request is checked (origin, transport, protocol version, session id, method) before any
transport sees it, so a transport only deals with requests that belong to one of its sessions.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from autobahn.twisted.resource import WebSocketResource
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource, Resource

from kernel_relay.engineio._web import WebRequest, web_request
from kernel_relay.engineio.errors import ErrorCode, write_error
from kernel_relay.engineio.options import EngineIOOptions, HandshakeInfo, SessionHandler
from kernel_relay.engineio.packets import SUPPORTED_PROTOCOLS, codec_for
from kernel_relay.engineio.polling import PollingTransport
from kernel_relay.engineio.session import EngineIOSession, Transport
from kernel_relay.engineio.websocket import EngineIOWebSocketFactory, WebSocketTransport

HandlerFactory = Callable[[EngineIOSession], SessionHandler]


@dataclass(frozen=True)
class RequestFacts:
    """The parts of an HTTP request that decide whether Engine.IO serves it."""

    method: str
    query: Mapping[str, str]
    is_upgrade: bool


@dataclass(frozen=True)
class Accepted:
    """A request that passed the checks: its protocol and, unless it is a handshake, its session."""

    protocol: int
    transport: str
    session: EngineIOSession | None


def check_request(
    facts: RequestFacts,
    options: EngineIOOptions,
    lookup: Callable[[str], EngineIOSession | None],
) -> Accepted | ErrorCode:
    """Accept or refuse a request (origin excepted), in the reference server's order of checks."""
    transport = facts.query.get("transport")
    if transport is None or transport not in options.transports:
        return ErrorCode.UNKNOWN_TRANSPORT
    eio = facts.query.get("EIO", "")
    protocol = int(eio) if eio.isdigit() and len(eio) < 3 else -1
    if protocol not in SUPPORTED_PROTOCOLS or (protocol == 3 and not options.allow_eio3):
        return ErrorCode.UNSUPPORTED_PROTOCOL_VERSION
    if "j" in facts.query and transport == "polling":
        # JSONP polling is not served (see kernel_relay.engineio.polling).
        return ErrorCode.BAD_REQUEST
    if facts.is_upgrade != (transport == "websocket"):
        return ErrorCode.BAD_REQUEST
    sid = facts.query.get("sid")
    if sid is None:
        if facts.method != "GET":
            return ErrorCode.BAD_HANDSHAKE_METHOD
        return Accepted(protocol, transport, None)
    session = lookup(sid)
    if session is None:
        return ErrorCode.UNKNOWN_SID
    if session.protocol != protocol:
        return ErrorCode.BAD_REQUEST
    # Like the reference server, a WebSocket for a known session that cannot take it over (already
    # upgraded, upgrading, closing) is accepted and then closed at once, not refused here.
    if not facts.is_upgrade and (
        session.transport_name != transport or facts.method not in ("GET", "POST")
    ):
        return ErrorCode.BAD_REQUEST
    return Accepted(protocol, transport, session)


def _header(request: WebRequest, name: bytes) -> str | None:
    value = request.getHeader(name)
    return None if value is None else value.decode("latin-1")


def _is_websocket_upgrade(request: WebRequest) -> bool:
    upgrade = (_header(request, b"upgrade") or "").lower()
    return "websocket" in [token.strip() for token in upgrade.split(",")]


def _query(request: WebRequest) -> dict[str, str]:
    args: dict[bytes, list[bytes]] = request.args or {}
    return {
        key.decode("utf-8", "replace"): values[0].decode("utf-8", "replace")
        for key, values in args.items()
        if values
    }


def _handshake_info(
    request: WebRequest, query: Mapping[str, str], accepted: Accepted
) -> HandshakeInfo:
    headers = {
        name.decode("latin-1").lower(): ", ".join(v.decode("latin-1") for v in values)
        for name, values in request.requestHeaders.getAllRawHeaders()
    }
    address = request.getClientAddress()
    return HandshakeInfo(
        remote_address=str(getattr(address, "host", "")),
        query=MappingProxyType(dict(query)),
        headers=MappingProxyType(headers),
        secure=bool(request.isSecure()),
        transport=accepted.transport,
        protocol=accepted.protocol,
    )


class EngineIOServer:
    """
    Engine.IO sessions over HTTP long-polling and WebSocket, for one ``handler_factory``.

    Mount :meth:`resource` anywhere in a twisted.web tree (``root.putChild(b"engine.io", ...)``).
    """

    log = Logger()

    def __init__(
        self, reactor: IReactorTime, options: EngineIOOptions, handler_factory: HandlerFactory
    ) -> None:
        self._reactor = reactor
        self._options = options
        self._handler_factory = handler_factory
        # Also holds sessions closed by the server whose last packets a poll may still collect.
        self._known: dict[str, EngineIOSession] = {}
        self._resource: EngineIOResource | None = None

    @property
    def options(self) -> EngineIOOptions:
        return self._options

    @property
    def sessions(self) -> Mapping[str, EngineIOSession]:
        """The open sessions by sid (a snapshot)."""
        return MappingProxyType({sid: s for sid, s in self._known.items() if not s.closed})

    def resource(self) -> IResource:
        """The twisted.web resource serving this server (the same object on every call)."""
        if self._resource is None:
            self._resource = EngineIOResource(self)
        return self._resource

    def close_all(self, reason: str = "server shutting down") -> None:
        """Close every open session, e.g. on shutdown; waiting polls get their close packet."""
        for session in list(self._known.values()):
            session.close(reason)

    def lookup(self, sid: str) -> EngineIOSession | None:
        return self._known.get(sid)

    def new_session(self, handshake: HandshakeInfo, transport: Transport) -> EngineIOSession:
        """Register a session on ``transport``; its open packet is queued (sent if writable)."""
        sid = secrets.token_urlsafe(15)
        while sid in self._known:
            sid = secrets.token_urlsafe(15)
        session = EngineIOSession(
            sid, handshake, self._options, self._reactor, transport, self._forget
        )
        self._known[sid] = session
        self.log.debug(
            "session {sid} opened over {transport} from {peer}",
            sid=sid,
            transport=transport.name,
            peer=handshake.remote_address,
        )
        return session

    def start_handler(self, session: EngineIOSession) -> None:
        """Give ``session`` its application handler, once its open packet is sent or queued."""
        if session.closed:
            return
        try:
            handler = self._handler_factory(session)
        except Exception:
            self.log.failure("handler factory failed for session {sid}", sid=session.sid)
            session.close("server close")
            return
        if not session.closed:
            session.attach_handler(handler)

    def _forget(self, session: EngineIOSession) -> None:
        if self._known.get(session.sid) is session:
            del self._known[session.sid]


class EngineIOResource(Resource):
    """Serves long-polling requests and WebSocket upgrades of one :class:`EngineIOServer`."""

    isLeaf = True
    log = Logger()

    def __init__(self, server: EngineIOServer) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self._server = server
        options = server.options
        self._ws_factory: EngineIOWebSocketFactory | None = None
        self._ws_resource: WebSocketResource | None = None
        if "websocket" in options.transports:
            self._ws_factory = EngineIOWebSocketFactory(server._reactor, options.max_payload)
            self._ws_resource = WebSocketResource(self._ws_factory)  # type: ignore[no-untyped-call]

    def render(self, request: IRequest) -> bytes | int:
        web = web_request(request)
        try:
            return self._render(web)
        except Exception:
            self.log.failure("Engine.IO request failed")
            if getattr(web, "startedWriting", False):
                return b""
            web.setResponseCode(500)
            return b""

    def _render(self, request: WebRequest) -> bytes | int:
        options = self._server.options
        origin = _header(request, b"origin")
        host = _header(request, b"host")
        secure = bool(request.isSecure())
        if not options.origins.is_allowed(origin, host, secure):
            self.log.info("request from refused origin {origin}", origin=origin)
            return write_error(request, ErrorCode.FORBIDDEN)
        is_upgrade = _is_websocket_upgrade(request)
        method = (request.method or b"").decode("latin-1").upper()
        if not is_upgrade:
            for name, value in options.origins.cors_headers(
                origin, host, secure, echo_any=True
            ).items():
                request.setHeader(name.encode("latin-1"), value.encode("latin-1"))
        if method == "OPTIONS" and not is_upgrade:
            request.setResponseCode(204)
            request.setHeader(b"access-control-allow-methods", b"GET, POST, OPTIONS")
            request.setHeader(b"access-control-allow-headers", b"authorization, content-type")
            return b""
        query = _query(request)
        facts = RequestFacts(method=method, query=query, is_upgrade=is_upgrade)
        verdict = check_request(facts, options, self._server.lookup)
        if isinstance(verdict, ErrorCode):
            self.log.debug("request refused: {code}", code=verdict.name)
            return write_error(request, verdict)
        if is_upgrade:
            return self._render_websocket(request, query, verdict)
        session = verdict.session
        if session is None:
            return self._handshake_polling(request, query, verdict)
        transport = session.transport
        if not isinstance(transport, PollingTransport):
            return write_error(request, ErrorCode.BAD_REQUEST)
        if method == "GET":
            return transport.handle_get(request)
        return transport.handle_post(request)

    def _handshake_polling(
        self, request: WebRequest, query: Mapping[str, str], accepted: Accepted
    ) -> bytes | int:
        options = self._server.options
        transport = PollingTransport(
            codec_for(accepted.protocol),
            options.max_payload,
            # Protocol 3 clients without XHR2 ask for base64 with b64 (any value, as the reference).
            binary="b64" not in query,
        )
        session = self._server.new_session(_handshake_info(request, query, accepted), transport)
        transport.session = session
        result = transport.handle_get(request)
        self._server.start_handler(session)
        return result

    def _render_websocket(
        self, request: WebRequest, query: Mapping[str, str], accepted: Accepted
    ) -> bytes | int:
        assert self._ws_factory is not None and self._ws_resource is not None
        server = self._server
        wanted = accepted.session
        if wanted is None:
            handshake = _handshake_info(request, query, accepted)

            def open_session(adapter: WebSocketTransport) -> EngineIOSession | None:
                session = server.new_session(handshake, adapter)
                server.start_handler(session)
                return session

            self._ws_factory.prepare(open_session, codec_for(accepted.protocol), new_session=True)
        else:
            sid = wanted.sid

            def join_session(adapter: WebSocketTransport) -> EngineIOSession | None:
                session = server.lookup(sid)
                if session is None or not session.begin_upgrade(adapter):
                    return None
                return session

            self._ws_factory.prepare(join_session, codec_for(accepted.protocol))
        result: bytes | int = self._ws_resource.render(request)  # type: ignore[no-untyped-call]
        return result

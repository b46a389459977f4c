"""
The twisted.web resource of an :class:`~.server.EngineIOServer`: long-polling requests and WebSocket
upgrades on one path, each checked (:mod:`.request_checks`) before a transport sees it.

Apart from :mod:`.server` because it is the HTTP side: the server keeps sessions and their bounds and
knows nothing of requests beyond what this hands it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from autobahn.twisted.resource import WebSocketResource
from twisted.logger import Logger
from twisted.web.iweb import IRequest
from twisted.web.resource import Resource

from ._web import WebRequest, web_request
from .errors import ErrorCode, write_busy, write_error
from .packets import codec_for
from .polling import PollingTransport
from .request_checks import (
    Accepted,
    RequestFacts,
    check_request,
    handshake_info,
    header,
    is_websocket_upgrade,
    query_of,
    remote_address,
)
from .session import EngineIOSession
from .websocket import EngineIOWebSocketFactory, WebSocketTransport

if TYPE_CHECKING:
    from .server import EngineIOServer


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
            self._ws_factory = EngineIOWebSocketFactory(server.reactor, options.max_payload)
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
        origin = header(request, b"origin")
        host = header(request, b"host")
        secure = bool(request.isSecure())
        if not options.origins.is_allowed(origin, host, secure):
            self.log.info("request from refused origin {origin}", origin=origin)
            return write_error(request, ErrorCode.FORBIDDEN)
        is_upgrade = is_websocket_upgrade(request)
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
        query = query_of(request)
        facts = RequestFacts(method=method, query=query, is_upgrade=is_upgrade)
        verdict = check_request(facts, options, self._server.lookup)
        if isinstance(verdict, ErrorCode):
            self.log.debug("request refused: {code}", code=verdict.name)
            return write_error(request, verdict)
        if is_upgrade:
            return self._render_websocket(request, query, verdict)
        session = verdict.session
        if session is None:
            refusal = self._server.admit(remote_address(request))
            if refusal is not None:
                return write_busy(request, refusal)
            return self._handshake_polling(request, query, verdict)
        if session.vouched:
            self._server.vouch_connection(getattr(request, "transport", None))
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
        session = self._server.new_session(handshake_info(request, query, accepted), transport)
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
            refusal = server.admit(remote_address(request))
            if refusal is not None:
                return write_busy(request, refusal)
            handshake = handshake_info(request, query, accepted)

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

"""
Which HTTP requests Engine.IO serves, decided before any transport sees them: the checks in the
reference server's order (transport, protocol version, session id, method), and the facts a new
session keeps of its handshake request.

Apart from :mod:`.server` because these are pure decisions on a request's parts (tested without a
server), where the server keeps sessions and the resource serves requests.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from ..websocket import asks_for_websocket
from ._web import WebRequest
from .errors import ErrorCode
from .options import HANDSHAKE_HEADERS, EngineIOOptions, HandshakeInfo
from .packets import SUPPORTED_PROTOCOLS
from .session import EngineIOSession


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


def header(request: WebRequest, name: bytes) -> str | None:
    value = request.getHeader(name)
    return None if value is None else value.decode("latin-1")


def is_websocket_upgrade(request: WebRequest) -> bool:
    return asks_for_websocket(request.getHeader(b"upgrade"))


def query_of(request: WebRequest) -> dict[str, str]:
    args: dict[bytes, list[bytes]] = request.args or {}
    return {
        key.decode("utf-8", "replace"): values[0].decode("utf-8", "replace")
        for key, values in args.items()
        if values
    }


def remote_address(request: WebRequest) -> str:
    return str(getattr(request.getClientAddress(), "host", ""))


def handshake_info(
    request: WebRequest, query: Mapping[str, str], accepted: Accepted
) -> HandshakeInfo:
    headers = {
        name: ", ".join(v.decode("latin-1") for v in values)
        for raw, values in request.requestHeaders.getAllRawHeaders()
        if (name := raw.decode("latin-1").lower()) in HANDSHAKE_HEADERS
    }
    return HandshakeInfo(
        remote_address=remote_address(request),
        query=MappingProxyType(dict(query)),
        headers=MappingProxyType(headers),
        secure=bool(request.isSecure()),
        transport=accepted.transport,
        protocol=accepted.protocol,
    )

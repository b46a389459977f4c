"""
The Jupyter front's check of a channels request before the upgrade, answering Jupyter Server's JSON errors:
the path, a WebSocket upgrade, the origin, the token (``Authorization: token|Bearer`` or ``?token=``; a
read-only kernel token gets iopub only), the kernel (404), and the ``session_id``.

A browser cannot forge such a request from another site: it cannot set ``Authorization``, and the origin is
checked; the relay never reads a cookie, so it needs no XSRF token. A ``session_id`` that is not 1 to
:data:`MAX_SESSION_ID` printable ASCII characters is refused (400).
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from typing import Final

from twisted.logger import Logger
from twisted.web.iweb import IRequest

from ..auth import TOKEN_QUERY, token_from_authorization
from ..http.connections import peer_host
from ..http.jupyter_api import jupyter_error
from ..http.origins import OriginPolicy
from ..http.site import CHANNELS_PATH
from ..kernels import Frame, Kernel
from ..relay.core import Refused, RelayCore
from ..relay.journal import Resume
from ..websocket import asks_for_websocket

log = Logger()

#: The longest ``session_id`` taken (printable ASCII, no space): with the kernel id, the principal and the
#: channels it makes a ZMQ identity, which ZeroMQ bounds at 255 bytes.
MAX_SESSION_ID: Final = 128
_SESSION_ID: Final = re.compile(rf"[\x21-\x7e]{{1,{MAX_SESSION_ID}}}")
#: What a 401 adds for a Jupyter client: where its token goes.
TOKEN_HINT: Final = ": send a token (Authorization: token <token>, or ?token=<token>)"
NO_RESUME: Final = Resume(None, False)


@dataclass
class Admitted:
    """What the check before the upgrade found: the kernel, the channels allowed, the resume asked for."""

    kernel: Kernel
    channels: list[str]
    session_id: str
    address: str
    principal: str = ""
    resume: Resume = NO_RESUME
    resume_parent: Frame | None = None

    @property
    def session_key(self) -> str:
        """The session as its marks know it: its principal's, so no other principal finds them."""
        return f"{self.principal}/{self.session_id}"

    @property
    def client_id(self) -> str:
        """
        The core's client id, which is also the connection's ZMQ identity towards the kernel: the same for a
        session that comes back with the same rights, so replies to what it asked before reach it again.
        """
        if not self.session_id:
            return f"jupyter:{uuid.uuid4().hex}"
        channels = ",".join(sorted(self.channels))
        return f"jupyter:{self.kernel.id}:{self.principal}:{self.session_id}:{channels}"


def _query(request: IRequest) -> dict[str, list[str]]:
    args: dict[bytes, list[bytes]] = request.args or {}  # type: ignore[attr-defined]
    return {
        key.decode("utf-8", "replace"): [v.decode("utf-8", "replace") for v in values]
        for key, values in args.items()
    }


def _refused_upgrade(request: IRequest, origins: OriginPolicy) -> bytes | None:
    """The error for a request that is no channels WebSocket upgrade from an allowed origin, or None."""
    if CHANNELS_PATH.match(request.path) is None:
        return jupyter_error(request, 404, "Not found")
    if request.method != b"GET" or not asks_for_websocket(request.getHeader(b"upgrade")):
        request.setHeader(b"Allow", b"GET")
        return jupyter_error(
            request,
            400 if request.method == b"GET" else 405,
            "this is the kernel channels WebSocket: connect with a WebSocket upgrade (GET)",
        )
    origin = request.getHeader(b"origin")
    host = request.getHeader(b"host")
    if not origins.is_allowed(
        origin.decode("latin-1") if origin else None,
        host.decode("latin-1") if host else None,
        request.isSecure(),
    ):
        log.warn("Refused a kernel WebSocket from origin {origin!r}", origin=origin)
        return jupyter_error(request, 403, f"Origin {origin!r} is not allowed")
    return None


def kernel_named(request: IRequest) -> str | None:
    """The kernel id a channels request names (None for another path)."""
    match = CHANNELS_PATH.match(request.path)
    return match.group("kernel_id").decode("utf-8", "replace") if match is not None else None


def check_request(request: IRequest, core: RelayCore, origins: OriginPolicy) -> Admitted | bytes:
    """What the request may open (see the module doc), or the error to answer it with."""
    refused = _refused_upgrade(request, origins)
    if refused is not None:
        return refused
    kernel_id = kernel_named(request)
    assert kernel_id is not None
    query = _query(request)
    header = request.getHeader(b"authorization")
    credentials = [
        token_from_authorization(header.decode("latin-1") if header else None),
        *query.get(TOKEN_QUERY, []),
    ]
    address = peer_host(request.getClientAddress())
    try:
        kernel, channels = core.allowed_channels(address, kernel_id, credentials)
    except Refused as refusal:
        hint = TOKEN_HINT if refusal.code == 401 else ""
        return jupyter_error(request, refusal.code or 403, refusal.message + hint)
    session_id = (query.get("session_id") or [""])[0]
    if session_id and not _SESSION_ID.fullmatch(session_id):
        if core.refusal_log.allow(address):
            log.info(
                "Refused a kernel WebSocket from {address}: malformed session_id", address=address
            )
        return jupyter_error(
            request,
            400,
            f"session_id must be 1 to {MAX_SESSION_ID} printable ASCII characters without spaces",
        )
    return Admitted(kernel, list(channels), session_id, address, core.principal(credentials))

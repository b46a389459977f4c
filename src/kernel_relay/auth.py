"""
Who may use the relay: the shared token, where clients may present it, and "protected mode".

A relay runs arbitrary code for whoever reaches it. With a token configured (``--token`` or the
``KERNEL_RELAY_TOKEN`` environment variable) every REST route but ``/api/health`` and every namespace
connect must present it, as any of:

- an ``Authorization: token <t>`` or ``Authorization: Bearer <t>`` header,
- a ``token`` query parameter,
- the socket.io CONNECT auth payload ``{"token": "<t>"}`` (socket.io-client 3/4 ``auth`` option,
  python-socketio ``auth=``); for socket.io-client 1.x/2.x the namespace query (``?token=<t>``),
  which the protocol layer hands over as the same dict,
- for socket.io, the Engine.IO handshake's query or ``Authorization`` header, as a fallback for
  clients that can only set those.

Tokens are compared in constant time (:func:`hmac.compare_digest`) on their UTF-8 bytes.

Kernel tokens (:class:`KernelTokens`), issued with ``POST /api/kernels/<id>/tokens`` by a holder of the relay's
token, open one kernel only: ``full`` ones its namespaces and the REST routes that name it (shutdown,
interrupt, restart), ``read-only`` ones its ``/iopub`` namespace alone, for viewers of a shared session.

Protected mode (as Redis has it): a relay without a token may only listen on loopback (or a UNIX
socket); :func:`exposed_endpoints` finds the endpoints that would break that rule, and the command line
refuses to start unless ``--no-auth`` is given.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

TOKEN_ENV: Final = "KERNEL_RELAY_TOKEN"
TOKEN_QUERY: Final = "token"
#: Bytes of randomness in a generated token (43 URL-safe characters).
TOKEN_BYTES: Final = 32
#: Endpoint types whose ``interface`` decides whether they are reachable from other hosts.
_INET_ENDPOINTS: Final = frozenset({"tcp", "tcp6", "ssl"})
#: Endpoint types reachable only through the local filesystem.
_LOCAL_ENDPOINTS: Final = frozenset({"unix"})


def generate_token() -> str:
    """A fresh random token, safe to put in a URL or a header."""
    return secrets.token_urlsafe(TOKEN_BYTES)


def token_from_authorization(value: str | None) -> str | None:
    """The token of an ``Authorization: token <t>`` or ``Bearer <t>`` header value, if it is one."""
    if not value:
        return None
    scheme, _, credentials = value.strip().partition(" ")
    if scheme.lower() not in ("token", "bearer"):
        return None
    credentials = credentials.strip()
    return credentials or None


def token_from_auth_payload(auth: Any) -> str | None:
    """The token of a socket.io CONNECT auth payload ``{"token": ...}``, if it holds a string one."""
    if isinstance(auth, Mapping):
        token = auth.get(TOKEN_QUERY)
        if isinstance(token, str) and token:
            return token
    return None


FULL: Final = "full"
READ_ONLY: Final = "read-only"
ACCESS_LEVELS: Final = (FULL, READ_ONLY)


@dataclass(frozen=True)
class Scope:
    """What a kernel token grants: one kernel, fully or read-only (its ``/iopub`` namespace only)."""

    kernel_id: str
    access: str

    def allows_channel(self, kernel_id: str, channel: str) -> bool:
        return kernel_id == self.kernel_id and (self.access == FULL or channel == "iopub")

    def allows_kernel_route(self, kernel_id: str) -> bool:
        return kernel_id == self.kernel_id and self.access == FULL

    @property
    def refusal(self) -> str:
        """Why a request outside this scope is refused (403)."""
        return f"This token allows {self.access} access to kernel {self.kernel_id} only"


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


class KernelTokens:
    """
    Tokens scoped to one kernel, issued at run time by a holder of the relay's token and forgotten when the
    kernel stops. Only their SHA-256 digests are kept, and lookups go by digest, so a lookup's timing tells
    nothing about a token's characters.
    """

    def __init__(self) -> None:
        self._scopes: dict[bytes, Scope] = {}
        self.on_issue: Callable[[bytes, Scope], None] | None = None
        """Told of each token issued here, by digest (a fleet shares it with the other relays)."""

    def __len__(self) -> int:
        return len(self._scopes)

    def issue(self, kernel_id: str, access: str) -> str:
        if access not in ACCESS_LEVELS:
            raise ValueError(f"access must be one of {', '.join(ACCESS_LEVELS)}, not {access!r}")
        token = generate_token()
        digest = _digest(token)
        self._scopes[digest] = Scope(kernel_id, access)
        if self.on_issue is not None:
            self.on_issue(digest, self._scopes[digest])
        return token

    def admit(self, digest: bytes, scope: Scope) -> None:
        """Honour a token another relay of the fleet issued, known by its digest only."""
        if scope.access in ACCESS_LEVELS:
            self._scopes[digest] = scope

    def digests(self, kernel_id: str) -> dict[bytes, Scope]:
        """The digests of a kernel's tokens, and their scopes."""
        return {key: scope for key, scope in self._scopes.items() if scope.kernel_id == kernel_id}

    def scope_of(self, candidates: Iterable[str | None]) -> Scope | None:
        """The scope of the first presented token that is a kernel token, if any."""
        for candidate in candidates:
            if candidate:
                scope = self._scopes.get(_digest(candidate))
                if scope is not None:
                    return scope
        return None

    def revoke_kernel(self, kernel_id: str) -> int:
        """Forget every token of a kernel (it stopped); returns how many there were."""
        doomed = [key for key, scope in self._scopes.items() if scope.kernel_id == kernel_id]
        for key in doomed:
            del self._scopes[key]
        return len(doomed)


@dataclass(frozen=True)
class TokenAuth:
    """
    The relay's token, or ``None`` when authentication is off (every check passes), and the kernel tokens
    issued under it (``scoped``).
    """

    token: str | None = None
    scoped: KernelTokens = field(default_factory=KernelTokens, compare=False)

    def __post_init__(self) -> None:
        if self.token is not None and not self.token.strip():
            raise ValueError("the token must not be empty")

    @property
    def enabled(self) -> bool:
        return self.token is not None

    def check(self, presented: str | None) -> bool:
        """Does ``presented`` match the token? Always true when authentication is off."""
        if self.token is None:
            return True
        if presented is None:
            return False
        return hmac.compare_digest(presented.encode("utf-8"), self.token.encode("utf-8"))

    def check_any(self, candidates: Iterable[str | None]) -> bool:
        """Does any of the presented tokens match? (Each is compared; none short-circuits on content.)"""
        if self.token is None:
            return True
        results = [self.check(candidate) for candidate in candidates if candidate is not None]
        return any(results)

    def grant(self, candidates: Sequence[str | None]) -> Scope | bool:
        """
        What the presented tokens open: everything (True) for the relay's token or with authentication
        off, one kernel's :class:`Scope` for one of its tokens, nothing (False) otherwise.
        """
        if self.check_any(candidates):
            return True
        return self.scoped.scope_of(candidates) or False

    def principal(self, candidates: Sequence[str | None]) -> str:
        """
        Whom the presented tokens make their holder, as a name that is no secret, for what belongs to
        the holder of a token (a Jupyter session): ``""`` with authentication off (anyone is anyone) or
        no valid token, ``"relay"`` for the relay's token, else a digest of the first kernel token
        presented (salted apart from the digests tokens are looked up by).
        """
        if self.token is None:
            return ""
        if self.check_any(candidates):
            return "relay"
        for candidate in candidates:
            if candidate and self.scoped.scope_of([candidate]) is not None:
                digest = hashlib.sha256(b"kernel-relay principal\0" + candidate.encode("utf-8"))
                return "k" + digest.hexdigest()[:24]
        return ""


def _endpoint_fields(description: str) -> tuple[str, list[str], dict[str, str]]:
    """Split a Twisted endpoint description into its type, positional and keyword arguments."""
    parts: list[str] = []
    current: list[str] = []
    escaped = False
    for char in description:
        if escaped:
            current.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == ":":
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    kind = parts[0].strip().lower()
    if kind.isdigit():  # a bare port means tcp on every interface
        return "tcp", parts, {}
    positional: list[str] = []
    keywords: dict[str, str] = {}
    for part in parts[1:]:
        name, equals, value = part.partition("=")
        if equals:
            keywords[name.strip()] = value
        else:
            positional.append(part)
    return kind, positional, keywords


def is_loopback_endpoint(description: str) -> bool:
    """
    Is this server endpoint reachable only from this machine?

    ``tcp``/``tcp6``/``ssl`` endpoints are when their ``interface`` is a loopback address (no interface
    means every interface); ``unix`` sockets are (access goes through file permissions); any other type
    (``systemd:``, plugins) is assumed to be exposed.
    """
    kind, _, keywords = _endpoint_fields(description)
    if kind in _LOCAL_ENDPOINTS:
        return True
    if kind not in _INET_ENDPOINTS:
        return False
    interface = keywords.get("interface", "").strip().strip("[]")
    if not interface:
        return False
    if interface.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(interface).is_loopback
    except ValueError:
        return False


def exposed_endpoints(descriptions: Iterable[str]) -> list[str]:
    """The endpoints of ``descriptions`` that other machines could reach."""
    return [description for description in descriptions if not is_loopback_endpoint(description)]

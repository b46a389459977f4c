"""
Which ``Host`` names a relay without a token answers: the guard against DNS rebinding.

The origin policy (:mod:`.origins`) serves a browser request whose ``Origin`` matches its ``Host``. A page
served from a name its author controls can point that name at 127.0.0.1 once the page has loaded (DNS
rebinding): its requests then reach a relay on this machine, same-origin in the browser's eyes, with that
name in both headers. A token stops them, since the page does not have it. Without a token, the relay
answers only requests whose ``Host`` cannot have been rebound:

- none at all (browsers always send one);
- an IP address (a page loaded from an IP address has no name to rebind);
- ``localhost`` or a name under ``.localhost`` (browsers resolve these to loopback themselves);
- a name the operator allowed with ``--allow-host``.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass

ANY_HOST = "*"

#: ``name[:port]`` or ``[IPv6 address][:port]``, nothing else (no user info, no path).
_HOST = re.compile(r"(?:\[(?P<ipv6>[0-9A-Za-z:.%]+)\]|(?P<name>[^\[\]:@/\\\s]+))(?::\d{1,5})?")


def host_name(header: str) -> str | None:
    """The name or address of a ``Host`` header, lower case and without its port; None if malformed."""
    match = _HOST.fullmatch(header.strip())
    if match is None:
        return None
    return (match["ipv6"] or match["name"]).lower().rstrip(".")


def _is_ip_address(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class HostPolicy:
    """``allowed`` is None when every ``Host`` is answered (the relay has a token, or ``--allow-host '*'``)."""

    allowed: frozenset[str] | None = frozenset()

    @classmethod
    def from_options(cls, names: Iterable[str], *, token_required: bool) -> HostPolicy:
        cleaned = {name.strip().lower().rstrip(".") for name in names if name.strip()}
        if token_required or ANY_HOST in cleaned:
            return cls(None)
        return cls(frozenset(cleaned))

    def allows(self, header: str | None) -> bool:
        """May a request with this ``Host`` header (None: without one) be answered?"""
        if self.allowed is None or header is None:
            return True
        name = host_name(header)
        if name is None:
            return False
        return (
            name == "localhost"
            or name.endswith(".localhost")
            or name in self.allowed
            or _is_ip_address(name)
        )

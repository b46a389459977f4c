"""
The listening layer of the wiring: a listener per endpoint of ``--port`` and ``--listen``, and the line that
tells the operator where to open the relay.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Sequence
from typing import Any

from twisted.application.service import IService
from twisted.internet.endpoints import serverFromString
from twisted.logger import Logger

from .. import __version__
from ..http.site import Listener, RelaySite
from .options import Options

log = Logger(namespace="kernel_relay.tap")


def listeners(
    options: Options, reactor: Any, site: RelaySite, token_required: bool
) -> list[IService]:
    """A listener of ``site`` on every endpoint; logs where to open the relay."""
    endpoints = options.endpoints(ipv6_loopback_available())
    services: list[IService] = [
        Listener(description, serverFromString(reactor, description), site)
        for description in endpoints
    ]
    log.info(
        "kernel-relay {version} listening on {endpoints} ({auth}): open {urls}",
        version=__version__,
        endpoints=", ".join(endpoints),
        auth="token required" if token_required else "no token: loopback only",
        urls=", ".join(endpoint_urls(endpoints, options["base-url"])),
    )
    return services


def ipv6_loopback_available() -> bool:
    """Can this machine listen on ``::1``?"""
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


def endpoint_urls(descriptions: Sequence[str], base: str = "/") -> list[str]:
    """The URLs a user opens for these endpoints (one per address; a UNIX socket as ``unix:PATH``)."""
    urls: list[str] = []
    for description in descriptions:
        kind, _, rest = description.partition(":")
        fields = dict(part.split("=", 1) for part in re.split(r"(?<!\\):", rest)[1:] if "=" in part)
        if kind == "unix":
            url = f"unix:{rest.split(':', 1)[0]}"
        elif kind in ("tcp", "tcp6", "ssl"):
            host = fields.get("interface", "").replace("\\", "") or socket.gethostname()
            if host in ("0.0.0.0", "::"):
                host = socket.gethostname()
            if ":" in host:
                host = f"[{host}]"
            scheme = "https" if kind == "ssl" else "http"
            url = f"{scheme}://{host}:{rest.split(':', 1)[0]}{base}"
        else:
            url = description
        if url not in urls:
            urls.append(url)
    return urls

"""
The slice of a twisted.web request that Engine.IO uses, typed.

twisted.web's ``IRequest`` methods carry no annotations, so strict mypy would reject every call;
this Protocol states the few we rely on and :func:`web_request` narrows a request to it at the edge.
"""

from __future__ import annotations

from typing import IO, Protocol, cast

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IAddress
from twisted.web.http_headers import Headers


class WebRequest(Protocol):
    method: bytes
    args: dict[bytes, list[bytes]] | None
    content: IO[bytes] | None
    requestHeaders: Headers

    def getHeader(self, key: bytes) -> bytes | None: ...

    def setHeader(self, name: bytes, value: bytes) -> None: ...

    def setResponseCode(self, code: int, message: bytes | None = None) -> None: ...

    def write(self, data: bytes) -> None: ...

    def finish(self) -> None: ...

    def notifyFinish(self) -> Deferred[None]: ...

    def isSecure(self) -> bool: ...

    def getClientAddress(self) -> IAddress: ...


def web_request(request: object) -> WebRequest:
    """``request`` (a twisted.web ``Request`` or a test double) as a :class:`WebRequest`."""
    return cast(WebRequest, request)

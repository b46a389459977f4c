"""The Engine.IO HTTP error codes and how a refused request is answered."""

from __future__ import annotations

import json
from enum import IntEnum

from ._web import WebRequest


class ErrorCode(IntEnum):
    """The ``code`` of an Engine.IO error body; clients switch on these numbers."""

    UNKNOWN_TRANSPORT = 0
    UNKNOWN_SID = 1
    BAD_HANDSHAKE_METHOD = 2
    BAD_REQUEST = 3
    FORBIDDEN = 4
    UNSUPPORTED_PROTOCOL_VERSION = 5


ERROR_MESSAGES: dict[ErrorCode, str] = {
    ErrorCode.UNKNOWN_TRANSPORT: "Transport unknown",
    ErrorCode.UNKNOWN_SID: "Session ID unknown",
    ErrorCode.BAD_HANDSHAKE_METHOD: "Bad handshake method",
    ErrorCode.BAD_REQUEST: "Bad request",
    ErrorCode.FORBIDDEN: "Forbidden",
    ErrorCode.UNSUPPORTED_PROTOCOL_VERSION: "Unsupported protocol version",
}


def error_status(code: ErrorCode) -> int:
    """The HTTP status for ``code``: 403 for a refused origin, 400 for everything else."""
    return 403 if code is ErrorCode.FORBIDDEN else 400


def error_body(code: ErrorCode) -> bytes:
    return json.dumps(
        {"code": int(code), "message": ERROR_MESSAGES[code]}, separators=(",", ":")
    ).encode("utf-8")


def write_busy(request: WebRequest, message: str, retry_after: int = 10) -> bytes:
    """Refuse a handshake for want of room (HTTP 503, ``Retry-After``), saying which bound it hit."""
    request.setResponseCode(503)
    request.setHeader(b"content-type", b"application/json")
    request.setHeader(b"retry-after", str(retry_after).encode("ascii"))
    return json.dumps(
        {"code": int(ErrorCode.BAD_REQUEST), "message": message}, separators=(",", ":")
    ).encode("utf-8")


def write_error(request: WebRequest, code: ErrorCode) -> bytes:
    """Set the status and content type of a refusal on ``request`` and return its body."""
    body = error_body(code)
    request.setResponseCode(error_status(code))
    request.setHeader(b"content-type", b"application/json")
    return body

"""
HTTP long-polling, the thin adapter between twisted.web requests and an :class:`EngineIOSession`.

A GET is held open (``NOT_DONE_YET``) until the session has packets for it; a POST carries a payload
of client packets and is answered ``ok`` at once. One transport object serves all requests of one
session.

Protocol 3 clients that did not ask for ``b64=1`` may POST binary payloads
(``application/octet-stream``) and get one back when a response carries a binary message. JSONP
polling (``j=``) is not served: socket.io-client 1.x/2.x fall back to it only where a browser has no
XMLHttpRequest, which no supported browser lacks; such requests are refused as bad requests.
"""

from __future__ import annotations

from collections.abc import Sequence

from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.server import NOT_DONE_YET

from ._web import WebRequest
from .errors import ErrorCode, write_error
from .packets import Packet, PacketCodec, PacketDecodeError, PacketType
from .session import EngineIOSession

TEXT_PLAIN = b"text/plain; charset=UTF-8"
BINARY_CONTENT = b"application/octet-stream"


def _mark_uncacheable(request: WebRequest) -> None:
    request.setHeader(b"cache-control", b"no-store")


class PollingTransport:
    """The long-polling transport of one session: at most one GET waiting, POSTs handled at once."""

    log = Logger()
    name = "polling"

    def __init__(self, codec: PacketCodec, max_payload: int, binary: bool = False) -> None:
        self.session: EngineIOSession | None = None
        self._codec = codec
        self._max_payload = max_payload
        self._binary = binary and codec.binary_payloads
        self._poll: WebRequest | None = None
        self._closed = False

    @property
    def writable(self) -> bool:
        return self._poll is not None and not self._closed

    @property
    def resumable(self) -> bool:
        return not self._closed

    @property
    def connection(self) -> object | None:
        """The connection of the poll waiting now (each request may come on another one)."""
        poll = self._poll
        return None if poll is None else getattr(poll, "transport", None)

    @property
    def buffered_bytes(self) -> int:
        # A poll response is written at once; what waits is counted by the session's queue.
        return 0

    # -- requests --------------------------------------------------------------------------------

    def handle_get(self, request: WebRequest) -> bytes | int:
        """A poll: answered when the session has something to say (maybe right away)."""
        session = self.session
        if session is None or self._closed:
            return write_error(request, ErrorCode.BAD_REQUEST)
        if self._poll is not None:
            body = write_error(request, ErrorCode.BAD_REQUEST)
            session.transport_error(self, "overlapping poll requests")
            return body
        self._poll = request
        request.notifyFinish().addErrback(self._poll_lost, request)
        session.transport_ready(self)
        return NOT_DONE_YET

    def handle_post(self, request: WebRequest) -> bytes:
        """A payload of client packets; refused whole if any part of it is malformed."""
        session = self.session
        if session is None or self._closed:
            return write_error(request, ErrorCode.BAD_REQUEST)
        content_type = request.getHeader(b"content-type") or b""
        binary = content_type.split(b";")[0].strip().lower() == BINARY_CONTENT
        if binary and not self._codec.binary_payloads:
            # Protocol 4 payloads are always text (binary goes base64); like the reference, treat
            # a binary body as a broken client.
            body = write_error(request, ErrorCode.BAD_REQUEST)
            session.transport_error(self, "binary body in a v4 poll")
            return body
        data = _read_body(request, self._max_payload)
        if data is None:
            # As in the reference server, an oversized body is refused but the session lives on:
            # the limit protects the server, and a well-behaved client never exceeds maxPayload.
            self.log.info("poll body over {limit} bytes refused", limit=self._max_payload)
            request.setResponseCode(413)
            request.setHeader(b"content-type", TEXT_PLAIN)
            return b"Payload Too Large"
        try:
            packets = self._codec.decode_payload(data, binary, byte_strings=not self._binary)
        except PacketDecodeError as exc:
            self.log.info("invalid poll payload on {sid}: {error}", sid=session.sid, error=str(exc))
            body = write_error(request, ErrorCode.BAD_REQUEST)
            session.decode_failed(self)
            return body
        for packet in packets:
            if session.closed:
                break
            session.packet_received(self, packet)
        request.setHeader(b"content-type", TEXT_PLAIN)
        _mark_uncacheable(request)
        return b"ok"

    def _poll_lost(self, failure: Failure, request: WebRequest) -> None:
        if self._poll is request:
            self._poll = None
            if self.session is not None:
                self.session.transport_error(self, "poll connection closed prematurely")

    # -- Transport interface ---------------------------------------------------------------------

    def send(self, packets: Sequence[Packet]) -> None:
        request, self._poll = self._poll, None
        if request is None:
            return
        payload = self._codec.encode_payload(packets, self._binary)
        if isinstance(payload, bytes):
            body = payload
            request.setHeader(b"content-type", BINARY_CONTENT)
        else:
            body = payload.encode("utf-8")
            request.setHeader(b"content-type", TEXT_PLAIN)
        request.setHeader(b"content-length", str(len(body)).encode("ascii"))
        _mark_uncacheable(request)
        request.write(body)
        request.finish()

    def finish(self, packets: Sequence[Packet]) -> None:
        self.send([*packets, Packet(PacketType.CLOSE)])

    def abort(self) -> None:
        # Nothing is held here between polls: a waiting poll gets the close packet, as in finish.
        if self.writable:
            self.finish([])
        self.close()

    def discard(self) -> None:
        # Only a poll sent after the probe (out of protocol) can still be waiting here; refuse it
        # as every poll after the upgrade is refused.
        request, self._poll = self._poll, None
        if request is not None and not self._closed:
            request.write(write_error(request, ErrorCode.BAD_REQUEST))
            request.finish()
        self.close()

    def close(self) -> None:
        if self._closed:
            return
        if self._poll is not None:
            self.send([Packet(PacketType.NOOP)])
        self._closed = True


def _read_body(request: WebRequest, limit: int) -> bytes | None:
    """The request body, or None when it is larger than ``limit`` bytes."""
    declared = request.getHeader(b"content-length")
    if declared is not None:
        try:
            if int(declared) > limit:
                return None
        except ValueError:
            pass
    content = request.content
    if content is None:
        return b""
    content.seek(0)
    data: bytes = content.read(limit + 1)
    if len(data) > limit:
        return None
    return data

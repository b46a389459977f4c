"""
The Engine.IO WebSocket transport: a :class:`~kernel_relay.websocket.FramedWebSocketProtocol` per
connection and a thin :class:`Transport` over it.

The HTTP resource validates the handshake request before Autobahn ever sees it, then hands Autobahn
a one-shot *opener* (see :meth:`EngineIOWebSocketFactory.prepare`) saying what to do once the
connection is open: start a new session, or offer itself as the upgrade of a polling session,
together with the codec of the request's protocol version. Framing, batched writes and back-pressure
are :mod:`kernel_relay.websocket`'s; a session compares the connection's unsent bytes with
``max_buffered_bytes`` to drop slow clients.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from autobahn.twisted.websocket import WebSocketServerFactory
from twisted.internet.interfaces import IAddress, IReactorTime

from .. import twisted_internals as internals
from ..websocket import LARGE_PAYLOAD, FramedWebSocketProtocol, WriteBatcher
from ..websocket_frames import FINAL_BINARY, FINAL_TEXT, frame_header
from .packets import (
    Binary,
    Packet,
    PacketCodec,
    PacketDecodeError,
    PacketType,
    codec_for,
    text_frame_parts,
)
from .session import TRANSPORT_CLOSE, TRANSPORT_ERROR, EngineIOSession

#: A message packet's type digit, before its text in a frame (both protocols).
_MESSAGE_DIGIT = str(int(PacketType.MESSAGE)).encode()
#: Seconds an EIO 3 session's open packet waits after the 101 (see ``onOpen``).
EIO3_OPEN_DELAY = 0.01


class WebSocketTransport:
    """The :class:`Transport` face of one WebSocket connection: one packet per frame."""

    name = "websocket"

    def __init__(self, connection: EngineIOWebSocketProtocol, codec: PacketCodec) -> None:
        # None once the connection is lost: the session may outlive it, and must not keep it in memory.
        self._connection: EngineIOWebSocketProtocol | None = connection
        self._codec = codec
        self._closed = False

    @property
    def writable(self) -> bool:
        return not self._closed and self._connection is not None and self._connection.accepts_frames

    @property
    def resumable(self) -> bool:
        return False

    @property
    def buffered_bytes(self) -> int:
        return 0 if self._connection is None else self._connection.unsent_bytes

    def send(self, packets: Sequence[Packet]) -> None:
        connection = self._connection
        if connection is None:
            return
        parts: list[Binary] = []
        size = largest = 0
        data: Binary
        for packet in packets:
            if type(packet.data) is str and len(packet.data) >= LARGE_PAYLOAD:
                # The type digit goes with the header, so the large text stays a part of its own.
                prefix, data = text_frame_parts(packet)
                first = FINAL_TEXT
            else:
                frame = self._codec.encode_frame(packet)
                prefix, data = b"", frame.encode("utf-8") if isinstance(frame, str) else frame
                first = FINAL_BINARY if data is frame else FINAL_TEXT
            length = len(data)
            header = frame_header(first, len(prefix) + length) + prefix
            parts += (header, data)
            size += len(header) + length
            if length > largest:
                largest = length
        connection.write_frames(parts, size, largest >= LARGE_PAYLOAD)

    def send_texts(self, messages: Sequence[str | Binary]) -> bool:
        """
        Frame text messages as :meth:`send` frames their packets (the digit 4, then the text), with no packet
        made: a reply or an output costs a few calls less. False, having sent nothing, if one is binary or the
        connection takes no frames: the session then queues them as packets.
        """
        connection = self._connection
        if self._closed or connection is None or not connection.accepts_frames:
            return False
        parts: list[Binary] = []
        size = largest = 0
        for text in messages:
            if type(text) is not str:
                return False
            data = text.encode("utf-8")
            length = len(data)
            header = frame_header(FINAL_TEXT, length + 1) + _MESSAGE_DIGIT
            parts += (header, data)
            size += len(header) + length
            if length > largest:
                largest = length
        connection.write_frames(parts, size, largest >= LARGE_PAYLOAD)
        return True

    def finish(self, packets: Sequence[Packet]) -> None:
        self.send(packets)
        self.close()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._connection is not None:
            self._connection.lose()

    def discard(self) -> None:
        self.close()

    def abort(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._connection is not None:
            self._connection.drop_queued()
            self._connection.lose()

    @property
    def connection(self) -> object | None:
        return None if self._closed or self._connection is None else self._connection.transport

    def connection_lost(self) -> None:
        self._closed = True
        self._connection = None


Opener = Callable[[WebSocketTransport], EngineIOSession | None]


class EngineIOWebSocketProtocol(FramedWebSocketProtocol):
    """One WebSocket connection; decodes frames into packets for its session."""

    def __init__(
        self,
        opener: Opener | None,
        codec: PacketCodec,
        batcher: WriteBatcher,
        open_later: bool = False,
    ) -> None:
        super().__init__(batcher)
        self._opener = opener
        self._open_later = open_later
        self._codec = codec
        self._adapter = WebSocketTransport(self, codec)
        self.session: EngineIOSession | None = None

    def onOpen(self) -> None:
        if self._opener is None:
            self.lose()
            return
        if not self._open_later:
            self._run_opener()
            return
        self._open_later = False
        clock = self._batcher.clock
        # A new session's open packet waits two reactor turns: Twisted writes the 101 response in
        # the turn after this one, so the open packet leaves in its own TCP segment (as from Node's
        # servers) and a client that starts listening for messages after its "open" event, as the
        # official test suites do, does not miss it. No client may send before the open packet.
        if self._codec.protocol == 3:
            # Separate segments are not enough when the client reads late: ws then reads the 101 and the
            # open packet at once, emits "open" and "message" in one go, and a listener added once "open"
            # has been awaited misses the open packet (the engine.io v3 suite's WebSocket tests time out
            # so, about one run in five). A moment's wait makes them two reads. EIO 3 only: its clients are
            # old and rare, and the v4 suite never showed it.
            clock.callLater(EIO3_OPEN_DELAY, self._run_opener)
        else:
            clock.callLater(0, clock.callLater, 0, self._run_opener)

    def _run_opener(self) -> None:
        opener, self._opener = self._opener, None
        if opener is None or not self.accepts_frames:
            return
        try:
            self.session = opener(self._adapter)
        except Exception:
            self._log.failure("opening an Engine.IO WebSocket failed")
            self.session = None
        if self.session is None:
            self._adapter.close()

    def drained(self) -> None:
        if self.session is not None:
            self.session.transport_drained(self._adapter)

    def invalid_message(self, error: Exception) -> None:
        if self.session is not None:
            self._log.info("invalid WebSocket frame: {error}", error=error)
            self.session.decode_failed(self._adapter)

    def message_received(self, frame: str | bytes) -> None:
        session = self.session
        if session is None:
            return
        try:
            packet = self._codec.decode_frame(frame)
        except PacketDecodeError as exc:
            self._log.info("invalid WebSocket frame on {sid}: {error}", sid=session.sid, error=exc)
            session.decode_failed(self._adapter)
            return
        try:
            session.packet_received(self._adapter, packet)
        except Exception:
            self._log.failure("handling a WebSocket packet on {sid} failed", sid=session.sid)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        super().onClose(wasClean, code, reason)
        self._adapter.connection_lost()
        session, self.session = self.session, None
        if session is None:
            return
        fault = internals.failed_for_peer_fault(self)
        session.transport_lost(self._adapter, TRANSPORT_ERROR if fault else TRANSPORT_CLOSE)


class EngineIOWebSocketFactory(WebSocketServerFactory):  # type: ignore[misc]
    """Builds :class:`EngineIOWebSocketProtocol`\\ s; Autobahn's own pings stay off."""

    def __init__(self, reactor: IReactorTime, max_payload: int) -> None:
        super().__init__(reactor=reactor)  # type: ignore[no-untyped-call]
        self.setProtocolOptions(  # type: ignore[no-untyped-call]
            autoPingInterval=0,
            # Send a close frame with the reason (e.g. 1009 for an oversized message) rather than
            # just dropping the TCP connection.
            failByDrop=False,
            maxMessagePayloadSize=max_payload,
            maxFramePayloadSize=max_payload,
        )
        self.max_payload = max_payload
        self._batcher = WriteBatcher(reactor)
        self._opener: Opener | None = None
        self._codec: PacketCodec | None = None
        self._new_session = False

    def prepare(self, opener: Opener, codec: PacketCodec, new_session: bool = False) -> None:
        """
        Set what the next built connection does once open and the codec it speaks (render and
        build are synchronous); ``new_session`` when it opens a session (not an upgrade).
        """
        self._opener = opener
        self._codec = codec
        self._new_session = new_session

    def buildProtocol(self, addr: IAddress | None) -> Any:
        opener, self._opener = self._opener, None
        codec, self._codec = self._codec, None
        if codec is None:
            # Built without a checked request (cannot happen through EngineIOResource): refuse.
            opener = None
            codec = codec_for(4)
        open_later, self._new_session = self._new_session, False
        protocol = EngineIOWebSocketProtocol(opener, codec, self._batcher, open_later)
        protocol.factory = self
        return protocol

"""
The WebSocket transport: an Autobahn protocol per connection and a thin :class:`Transport` over it.

The HTTP resource validates the handshake request before Autobahn ever sees it, then hands Autobahn
a one-shot *opener* (see :meth:`EngineIOWebSocketFactory.prepare`) saying what to do once the
connection is open: start a new session, or offer itself as the upgrade of a polling session.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.protocol import WebSocketProtocol
from twisted.internet.interfaces import IAddress, IReactorTime
from twisted.logger import Logger

from kernel_relay.engineio.packets import Packet, PacketCodec, PacketDecodeError
from kernel_relay.engineio.session import TRANSPORT_CLOSE, TRANSPORT_ERROR, EngineIOSession

# Close codes by which Autobahn fails a connection for a protocol fault of the peer.
_PEER_FAULT_CODES = frozenset({1002, 1003, 1007, 1009})


class WebSocketTransport:
    """The :class:`Transport` face of one WebSocket connection: one packet per frame."""

    name = "websocket"

    def __init__(self, connection: EngineIOWebSocketProtocol, codec: PacketCodec) -> None:
        self._connection = connection
        self._codec = codec
        self._closed = False

    @property
    def writable(self) -> bool:
        return not self._closed and self._connection.accepts_frames

    @property
    def resumable(self) -> bool:
        return False

    def send(self, packets: Sequence[Packet]) -> None:
        for packet in packets:
            frame = self._codec.encode_frame(packet)
            if isinstance(frame, bytes):
                self._connection.sendMessage(frame, isBinary=True)  # type: ignore[no-untyped-call]
            else:
                payload = frame.encode("utf-8")
                self._connection.sendMessage(payload, isBinary=False)  # type: ignore[no-untyped-call]

    def finish(self, packets: Sequence[Packet]) -> None:
        self.send(packets)
        self.close()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._connection.lose()

    def discard(self) -> None:
        self.close()

    def connection_lost(self) -> None:
        self._closed = True


Opener = Callable[[WebSocketTransport], EngineIOSession | None]


class EngineIOWebSocketProtocol(WebSocketServerProtocol):  # type: ignore[misc]
    """One WebSocket connection; decodes frames into packets for its session."""

    log = Logger()

    def __init__(self, opener: Opener | None, codec: PacketCodec) -> None:
        super().__init__()
        self._opener = opener
        self._codec = codec
        self._adapter = WebSocketTransport(self, codec)
        self.session: EngineIOSession | None = None

    @property
    def accepts_frames(self) -> bool:
        return bool(self.state == WebSocketProtocol.STATE_OPEN)

    def lose(self) -> None:
        """Close politely if the connection is open, else drop it."""
        if self.state == WebSocketProtocol.STATE_OPEN:
            self.sendClose(1000)
        elif self.state != WebSocketProtocol.STATE_CLOSED and self.transport is not None:
            self.transport.loseConnection()

    def onOpen(self) -> None:
        opener, self._opener = self._opener, None
        if opener is None:
            self.lose()
            return
        try:
            self.session = opener(self._adapter)
        except Exception:
            self.log.failure("opening an Engine.IO WebSocket failed")
            self.session = None
        if self.session is None:
            self._adapter.close()

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        session = self.session
        if session is None:
            return
        try:
            frame: str | bytes = payload if isBinary else payload.decode("utf-8")
            packet = self._codec.decode_frame(frame)
        except (PacketDecodeError, UnicodeDecodeError) as exc:
            self.log.info("invalid WebSocket frame on {sid}: {error}", sid=session.sid, error=exc)
            session.decode_failed(self._adapter)
            return
        try:
            session.packet_received(self._adapter, packet)
        except Exception:
            self.log.failure("handling a WebSocket packet on {sid} failed", sid=session.sid)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        self._adapter.connection_lost()
        session, self.session = self.session, None
        if session is None:
            return
        local_code = getattr(self, "localCloseCode", None)
        fault = local_code in _PEER_FAULT_CODES
        session.transport_lost(self._adapter, TRANSPORT_ERROR if fault else TRANSPORT_CLOSE)


class EngineIOWebSocketFactory(WebSocketServerFactory):  # type: ignore[misc]
    """Builds :class:`EngineIOWebSocketProtocol`\\ s; Autobahn's own pings stay off."""

    def __init__(self, reactor: IReactorTime, codec: PacketCodec, max_payload: int) -> None:
        super().__init__(reactor=reactor)  # type: ignore[no-untyped-call]
        self.setProtocolOptions(  # type: ignore[no-untyped-call]
            autoPingInterval=0,
            # Send a close frame with the reason (e.g. 1009 for an oversized message) rather than
            # just dropping the TCP connection.
            failByDrop=False,
            maxMessagePayloadSize=max_payload,
            maxFramePayloadSize=max_payload,
        )
        self._codec = codec
        self._opener: Opener | None = None

    def prepare(self, opener: Opener) -> None:
        """Set what the next built connection does once open (render and build are synchronous)."""
        self._opener = opener

    def buildProtocol(self, addr: IAddress | None) -> Any:
        opener, self._opener = self._opener, None
        protocol = EngineIOWebSocketProtocol(opener, self._codec)
        protocol.factory = self
        return protocol

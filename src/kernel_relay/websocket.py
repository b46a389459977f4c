"""
Fast WebSocket server connections on Autobahn, for any protocol over WebSocket (Engine.IO's transport, the
Jupyter kernel WebSocket): framing, batched writes, back-pressure. A protocol subclasses
:class:`FramedWebSocketProtocol` and implements :meth:`~FramedWebSocketProtocol.message_received`.

Data frames are framed here (:mod:`kernel_relay.websocket_frames`) rather than by Autobahn's
``sendMessage``. All the frames of one flush leave in a single transport write, and a large payload is
copied once (Autobahn copied it into its frame, then Twisted again behind the small frames before it).
Autobahn still does the handshake, pings and closes, and reads every frame that
:func:`~kernel_relay.websocket_frames.parse_data_frame` leaves to it.

Writes are batched per reactor turn: frames queued while handling a turn's events (a burst of kernel
messages, a broadcast to every client) leave at the start of the next turn, in one write per
connection, through one delayed call shared by all connections (:class:`WriteBatcher`). When Twisted
holds nothing unsent for the connection, a write goes to the socket at once
(:func:`~kernel_relay.twisted_internals.write_through`): no turn of waiting for writability, and no copy
of a ``memoryview``. What the socket does not take goes through Twisted's ``write``. A payload of
:data:`LARGE_PAYLOAD` bytes or more is written on its own, right after what precedes it if that all went
out, else a turn later: Twisted hands a lone ``bytes`` to the socket as it is, but joins (copies)
several. A large payload that is a ``memoryview`` (a kernel's ZMQ frame, never copied into ``bytes``) is
streamed in pieces of :data:`STREAM_CHUNK` bytes, each sent from the kernel's own memory while the socket
takes it; once the socket is full, the rest of a piece is copied for Twisted and the next waits until
Twisted's buffer has drained.

Back-pressure: each connection registers itself as the streaming producer of its TCP transport.
Twisted pauses it when the transport's write buffer is full and resumes it once the buffer is
drained. While paused, what the transport still holds plus what is queued here is the connection's
:attr:`~FramedWebSocketProtocol.unsent_bytes`, which the protocol on top compares with its bound to drop
slow clients. A client that reads, only a little slower than the server writes, keeps the buffer from
ever draining completely but its backlog small, so it is not dropped.

A peer that sends and never reads makes the relay owe it answers (Autobahn's pongs to its pings, the
protocol's replies) that no bound of the protocol on top counts: a connection holding more than
:data:`READ_PAUSE_BYTES` for its peer stops reading it (pauses its transport) until it holds less, so
what a peer's own messages cost is bounded by that and one read. Reading resumes once the transport has
drained, or as soon as a write finds the backlog back under the bound.

A closed connection leaves no reference cycle (its queue, its session and Autobahn's own state are let
go in :meth:`~FramedWebSocketProtocol.connectionLost`): reference counting frees it, and what it
buffered, at once, rather than at the next full collection of the garbage collector.

What this takes from Twisted's TCP connection and from Autobahn beyond their interfaces (the bytes Twisted
holds, a send right now, the producer, Autobahn's state and frame reader) it takes through
:mod:`kernel_relay.twisted_internals`, and nowhere else.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from autobahn.twisted.websocket import WebSocketServerProtocol
from twisted.internet.interfaces import IDelayedCall, IPushProducer, IReactorTime
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from . import twisted_internals as internals
from .websocket_frames import FINAL_BINARY, FINAL_TEXT, frame_header, parse_data_frame

Binary = bytes | memoryview


#: Payloads at least this big are written alone rather than joined with other frames.
LARGE_PAYLOAD = 1 << 20

#: The pieces in which a large ``memoryview`` payload is streamed (copied only when the socket is full).
STREAM_CHUNK = 1 << 20

#: Bytes a connection may hold unsent for its peer and still read it (see the module doc).
READ_PAUSE_BYTES = 1 << 18

#: Frames handed over after this many seconds without any go out at once instead of at the end of the
#: reactor turn (see :meth:`WriteBatcher.frames_handed`).
QUIET_PERIOD = 0.001


class WriteBatcher:
    """
    Connections with frames queued this turn; one delayed call writes them all out.

    Gathering a turn's frames makes one write per connection out of a burst (a flood, a broadcast to
    many connections). A lone frame after a quiet moment, typically a reply, has nothing to be gathered
    with: it is written at once, so it waits neither for the rest of the turn nor for a delayed call.
    """

    _log = Logger()

    def __init__(self, clock: IReactorTime) -> None:
        self.clock = clock
        self._queued: list[FramedWebSocketProtocol] = []
        self._call: IDelayedCall | None = None
        self._last_frames = clock.seconds()

    def frames_handed(self) -> bool:
        """
        Told whenever a connection is handed frames; True when they end a quiet moment: no connection
        was handed any in the last :data:`QUIET_PERIOD` seconds, and none waits for this turn's write.
        Such frames may be written at once. So the first frames of a burst go out alone, and the rest
        of the burst, however long it lasts, is gathered.
        """
        now = self.clock.seconds()
        quiet = self._call is None and now - self._last_frames >= QUIET_PERIOD
        self._last_frames = now
        return quiet

    def add(self, connection: FramedWebSocketProtocol) -> None:
        self._queued.append(connection)
        if self._call is None:
            self._call = self.clock.callLater(0, self._write_all)

    def _write_all(self) -> None:
        self._call = None
        queued, self._queued = self._queued, []
        for connection in queued:
            try:
                connection.write_queued()
            except Exception:
                self._log.failure("writing WebSocket frames failed")


@implementer(IPushProducer)
class _WritePressure:
    """
    The push producer a connection registers with its TCP transport to learn of a full buffer, and
    of the moment it is empty again (``drained``).
    """

    def __init__(self, drained: Callable[[], None]) -> None:
        self.paused = False
        self.unsent = 0
        self._drained = drained

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False
        self.unsent = 0
        self._drained()

    def stopProducing(self) -> None:
        self.paused = False
        self.unsent = 0

    def release(self) -> None:
        """Forget the connection (its ``drained``), which refers to this producer: no cycle outlives it."""
        self._drained = _nothing


def asks_for_websocket(upgrade: bytes | str | None) -> bool:
    """Whether a request's ``Upgrade`` header (``upgrade``, None when absent) asks for WebSocket."""
    text = upgrade.decode("latin-1") if isinstance(upgrade, bytes) else upgrade or ""
    return "websocket" in [token.strip() for token in text.lower().split(",")]


def _nothing() -> None:
    pass


class FramedWebSocketProtocol(WebSocketServerProtocol):  # type: ignore[misc]
    """
    One WebSocket connection that writes its own frames (see the module doc); its factory has a
    ``max_payload`` (0: no limit). Subclasses handle each message in :meth:`message_received`.
    """

    # Not ``log``: Autobahn logs every frame at debug level through ``self.log``; a
    # twisted.logger.Logger there costs a filtered log event per frame, Autobahn's own logger none.
    _log = Logger()

    def __init__(self, batcher: WriteBatcher) -> None:
        super().__init__()
        self._batcher = batcher
        self._pressure = _WritePressure(self._drained)
        # Whether the transport was paused (stops reading) because the peer does not read.
        self._reading_paused = False
        self._queued: list[Binary] = []
        self._queued_bytes = 0
        self._queued_large = False
        # A large memoryview payload being streamed, and how much of it has been written.
        self._stream: memoryview | None = None
        self._streamed = 0

    def message_received(self, message: str | bytes) -> None:
        """One whole text (``str``) or binary (``bytes``) message from the peer."""
        raise NotImplementedError

    def drained(self) -> None:
        """
        Everything handed to the connection went to its transport, and the transport's buffer is not full
        (or just emptied): a protocol that holds more back until its peer reads (a replay) may send it now.
        """

    def invalid_message(self, error: Exception) -> None:
        """A text message that is not UTF-8 reached :meth:`onMessage` (Autobahn validates it first)."""
        self._log.info("invalid WebSocket frame: {error}", error=error)

    def send_message(self, parts: Sequence[Binary], binary: bool) -> None:
        """Queue one message, the concatenation of ``parts``, as one frame (nothing is joined here)."""
        size = largest = 0
        for part in parts:
            length = len(part)
            size += length
            if length > largest:
                largest = length
        header = frame_header(FINAL_BINARY if binary else FINAL_TEXT, size)
        self.write_frames([header, *parts], size + len(header), largest >= LARGE_PAYLOAD)

    @property
    def accepts_frames(self) -> bool:
        return internals.websocket_open(self)

    @property
    def unsent_bytes(self) -> int:
        """
        The bytes queued here for the next write and, while the transport says its write buffer is
        full, those it still holds. For a transport that does not show its buffer, the bytes written
        since it became full stand in for what it holds.
        """
        if not self._pressure.paused:
            return self._queued_bytes
        held = internals.unsent_bytes(self.transport)
        if held is None:
            held = self._pressure.unsent
        return held + self._queued_bytes

    @property
    def falling_behind(self) -> bool:
        """Whether the peer does not keep up: the transport holds what the socket would not take."""
        return self._pressure.paused

    def drop_queued(self) -> None:
        """Forget the frames not yet handed to the transport (the connection is being cut off)."""
        self._queued, self._queued_bytes, self._queued_large = [], 0, False
        self._stream = None

    def write_frames(self, parts: list[Binary], size: int, large: bool = False) -> None:
        """
        Queue whole frames (headers and payloads, in order, ``size`` bytes in all) for this turn's
        write, if open, or write them at once after a quiet moment (:meth:`WriteBatcher.frames_handed`);
        ``large`` when a part has at least :data:`LARGE_PAYLOAD` bytes (those always wait for the turn).
        """
        if not parts or self.transport is None or not internals.websocket_open(self):
            return
        idle = not self._queued and self._stream is None
        quiet = self._batcher.frames_handed()
        self._queued += parts
        self._queued_bytes += size
        self._queued_large = self._queued_large or large
        if idle and quiet and not large:
            self.write_queued()
        elif idle:
            self._batcher.add(self)

    def write_queued(self, everything: bool = False) -> None:
        """
        Write the queued frames as one chunk, except that a large payload goes alone in a later turn
        (unless ``everything``); dropped if the connection closed. Nothing is written while a large
        payload is being streamed, unless ``everything``: then its rest is written at once.
        """
        if self.transport is None or not internals.websocket_open(self):
            self._queued, self._queued_bytes, self._queued_large = [], 0, False
            self._stream = None
            return
        if self._stream is not None:
            if not everything:
                return
            rest = self._stream[self._streamed :]
            self._stream = None
            self._queued_bytes -= len(rest)
            self._write(rest)
        parts = self._queued
        if not parts:
            return
        cut = len(parts)
        if self._queued_large and not everything:
            cut = next((i for i, part in enumerate(parts) if len(part) >= LARGE_PAYLOAD), cut)
            cut = cut or 1
        data = parts[0] if cut == 1 else b"".join(parts[:cut])
        self._queued = parts[cut:]
        self._queued_large = bool(self._queued) and self._queued_large
        if isinstance(data, memoryview) and not everything:
            self._stream, self._streamed = data, 0
            self._stream_more()
            return
        self._queued_bytes -= len(data)
        if self._write(data) and self._queued:
            # All of it went out at once, so the large payload next has nothing to be joined with.
            self.write_queued()
        elif self._queued:
            self._batcher.add(self)
        elif not self._pressure.paused and not everything:
            self.drained()

    def _write(self, data: Binary) -> bool:
        """Write ``data``; True if the socket took all of it at once (nothing left with Twisted)."""
        transport = self.transport
        if transport is None:
            return False
        if self._reading_paused and self.unsent_bytes <= READ_PAUSE_BYTES:
            self._resume_reading()
        sent = internals.write_through(transport, data)
        if sent == len(data):
            return True
        rest = bytes(data[sent:]) if sent or type(data) is not bytes else data
        if self._pressure.paused:
            self._pressure.unsent += len(rest)
        transport.write(rest)
        return False

    def _drained(self) -> None:
        """
        The transport wrote out all it held: read the peer again, stream the rest of a payload, or tell
        :meth:`drained`.
        """
        if self._reading_paused:
            self._resume_reading()
        self._transport_drained()

    def _pause_reading_if_behind(self) -> None:
        """Stop reading a peer that does not read what it is owed (see the module doc)."""
        producer = IPushProducer(self.transport, None)
        if producer is not None and self.unsent_bytes > READ_PAUSE_BYTES:
            self._reading_paused = True
            producer.pauseProducing()

    def _resume_reading(self) -> None:
        self._reading_paused = False
        producer = IPushProducer(self.transport, None)
        if producer is not None:
            producer.resumeProducing()

    def _stream_more(self) -> None:
        """Write the next chunks of the payload being streamed until the transport's buffer is full."""
        view = self._stream
        if view is None:
            return
        while not self._pressure.paused:
            if self.transport is None or not internals.websocket_open(self):
                self._stream = None
                return
            start = self._streamed
            chunk = view[start : start + STREAM_CHUNK]
            self._streamed = start + len(chunk)
            self._queued_bytes -= len(chunk)
            self._write(chunk)
            if self._streamed >= len(view):
                self._stream = None
                if self._queued:
                    self._batcher.add(self)
                elif not self._pressure.paused:
                    self.drained()
                return

    def _transport_drained(self) -> None:
        """The transport's buffer emptied: stream on, or tell :meth:`drained` if nothing waits here."""
        if self._stream is not None:
            self._stream_more()
        elif not self._queued and internals.websocket_open(self):
            self.drained()

    def lose(self, code: int = 1000, reason: str | None = None) -> None:
        """Close politely (``code``, ``reason``) if the connection is open and keeps up, else drop it."""
        self.write_queued(everything=True)
        if internals.websocket_open(self) and not self._pressure.paused:
            # Not sendClose: Autobahn takes only 1000 and 3000-4999 there, and a server also closes with
            # RFC 6455's 1001 (going away), 1008 (policy), 1011 (internal error) and 1013 (try again later).
            reason_bytes = None
            if reason is not None:  # at most 123 bytes, never cut inside a character
                reason_bytes = (
                    reason.encode("utf-8")[:123].decode("utf-8", "ignore").encode("utf-8")
                )
            self.sendCloseFrame(code, reason_bytes)
        elif not internals.websocket_closed(self) and self.transport is not None:
            # A close frame would wait behind everything the peer does not read: cut it off.
            internals.abort_connection(self.transport)

    def connectionMade(self) -> None:
        super().connectionMade()
        transport = self.transport
        if transport is None:
            return
        # twisted.web's HTTP channel registered itself as the producer before the connection was
        # handed over to us; take its place to hear about a full write buffer.
        try:
            internals.replace_producer(transport, self._pressure)
        except Exception:
            self._log.failure("registering the WebSocket write-pressure producer failed")

    def dataReceived(self, data: bytes) -> None:
        """Read whole data frames here while Autobahn has nothing buffered; it reads the rest."""
        offset = 0
        read_all = False
        if internals.websocket_reader_idle(self):
            max_payload = self.factory.max_payload
            is_open = internals.websocket_open  # looked up once: it is asked after every frame
            while offset < len(data) and is_open(self):
                parsed = parse_data_frame(data, offset, max_payload)
                if parsed is None:
                    break
                message, offset = parsed
                self.message_received(message)
            read_all = offset == len(data)
        if not read_all:
            super().dataReceived(data[offset:] if offset else data)
        # What was read may have cost answers (Autobahn's pongs, the protocol's replies).
        if self._pressure.paused and not self._reading_paused:
            self._pause_reading_if_behind()

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        """A message Autobahn read (see :meth:`dataReceived`)."""
        if isBinary:
            self.message_received(payload)
            return
        try:
            text = payload.decode("utf-8")
        except UnicodeDecodeError as error:  # Autobahn validates UTF-8 itself: a safety net
            self.invalid_message(error)
            return
        self.message_received(text)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        self.drop_queued()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """Closed: let go of what refers back to this connection, so that refcounting frees it now."""
        try:
            super().connectionLost(reason)
        finally:
            self.drop_queued()
            self._pressure.release()
            internals.release_websocket(self)

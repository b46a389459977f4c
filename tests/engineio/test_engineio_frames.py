"""
The WebSocket frames the relay writes itself: headers (RFC 6455 section 5.2) and per-turn batching.

The connections here write into memory. What websocket.py asks of Twisted's TCP connection through
kernel_relay.twisted_internals (what it holds unsent, a send right now) is answered by the fakes below
(see :func:`simulated_sockets`); tests/test_internals.py checks those answers on real connections.
"""

from __future__ import annotations

from typing import TypeVar

import pytest
from autobahn.twisted.websocket import WebSocketServerProtocol
from autobahn.websocket.protocol import WebSocketProtocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from kernel_relay import twisted_internals
from kernel_relay.engineio.packets import Binary, Packet, PacketType, codec_for
from kernel_relay.engineio.websocket import (
    EngineIOWebSocketFactory,
    EngineIOWebSocketProtocol,
    WebSocketTransport,
)
from kernel_relay.websocket import LARGE_PAYLOAD, QUIET_PERIOD, STREAM_CHUNK
from kernel_relay.websocket_frames import frame_header, parse_data_frame


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        (0, b"\x82\x00"),
        (125, b"\x82\x7d"),
        (126, b"\x82\x7e\x00\x7e"),
        (65535, b"\x82\x7e\xff\xff"),
        (65536, b"\x82\x7f\x00\x00\x00\x00\x00\x01\x00\x00"),
        (10_000_000, b"\x82\x7f" + (10_000_000).to_bytes(8, "big")),
    ],
)
def test_binary_frame_headers(size: int, expected: bytes) -> None:
    """7-bit lengths up to 125, then 126 and a 16-bit length, then 127 and a 64-bit one; no mask bit."""
    assert frame_header(0x82, size) == expected


def test_text_frame_header_has_the_text_opcode_and_fin() -> None:
    """Text frames differ only in the opcode."""
    assert frame_header(0x81, 5) == b"\x81\x05"


def open_connection(
    factory: EngineIOWebSocketFactory,
) -> tuple[EngineIOWebSocketProtocol, StringTransport]:
    """A connection as after a completed handshake, writing into memory."""
    factory.prepare(lambda transport: None, codec_for(4))
    connection = factory.buildProtocol(None)
    transport = StringTransport()
    connection.transport = transport
    connection.state = WebSocketProtocol.STATE_OPEN
    return connection, transport


def test_frames_of_one_turn_leave_in_one_write_at_the_next() -> None:
    """Frames queued while handling one turn's events are written together when the turn is over."""
    clock = Clock()
    factory = EngineIOWebSocketFactory(clock, max_payload=1000)
    first, first_transport = open_connection(factory)
    second, second_transport = open_connection(factory)
    first.write_frames([frame_header(0x81, 2), b"4a"], 4)
    second.write_frames([frame_header(0x81, 2), b"4b"], 4)
    first.write_frames([frame_header(0x82, 3), b"xyz"], 5)
    assert first_transport.value() == second_transport.value() == b""
    assert len(clock.getDelayedCalls()) == 1, "one delayed call serves every connection"
    clock.advance(0)
    assert first_transport.value() == b"\x81\x024a\x82\x03xyz"
    assert second_transport.value() == b"\x81\x024b"
    assert first.unsent_bytes == 0 and clock.getDelayedCalls() == []


def test_a_lone_frame_after_a_quiet_moment_goes_at_once_and_a_burst_is_gathered() -> None:
    """
    After QUIET_PERIOD without frames, the first frames handed over (to any connection) go out at once,
    with no delayed call; what follows in the same moment waits for the end of the turn, as before.
    """
    clock = Clock()
    factory = EngineIOWebSocketFactory(clock, max_payload=1000)
    first, first_transport = open_connection(factory)
    second, second_transport = open_connection(factory)
    clock.advance(QUIET_PERIOD)
    first.write_frames([frame_header(0x81, 2), b"4a"], 4)
    assert first_transport.value() == b"\x81\x024a" and clock.getDelayedCalls() == []
    # A broadcast: the reply above began a burst, so the next frames are gathered.
    first.write_frames([frame_header(0x81, 2), b"4b"], 4)
    second.write_frames([frame_header(0x81, 2), b"4b"], 4)
    assert first_transport.value() == b"\x81\x024a" and second_transport.value() == b""
    assert len(clock.getDelayedCalls()) == 1
    clock.advance(0)
    assert first_transport.value() == b"\x81\x024a\x81\x024b"
    assert second_transport.value() == b"\x81\x024b"
    # Frames closer together than QUIET_PERIOD keep being gathered; after a quiet moment, at once again.
    clock.advance(QUIET_PERIOD / 2)
    second.write_frames([frame_header(0x81, 2), b"4c"], 4)
    assert second_transport.value() == b"\x81\x024b"
    clock.advance(QUIET_PERIOD)
    assert second_transport.value() == b"\x81\x024b\x81\x024c"
    clock.advance(QUIET_PERIOD)
    second.write_frames([frame_header(0x81, 2), b"4d"], 4)
    assert second_transport.value().endswith(b"\x81\x024d") and clock.getDelayedCalls() == []


def test_a_burst_longer_than_the_quiet_period_stays_gathered() -> None:
    """Frames handed over while others wait count too: a turn that takes long does not end a burst."""
    clock = Clock()
    connection, transport = open_connection(EngineIOWebSocketFactory(clock, max_payload=1000))
    clock.advance(QUIET_PERIOD)
    connection.write_frames([frame_header(0x81, 2), b"4a"], 4)
    connection.write_frames([frame_header(0x81, 2), b"4b"], 4)
    # The turn's handling takes longer than the period (time passes, the turn's write has not run).
    clock.rightNow += 2 * QUIET_PERIOD
    connection.write_frames([frame_header(0x81, 2), b"4c"], 4)
    clock.advance(0)
    assert transport.value() == b"\x81\x024a\x81\x024b\x81\x024c"
    clock.advance(QUIET_PERIOD / 2)
    connection.write_frames([frame_header(0x81, 2), b"4d"], 4)
    assert transport.value().endswith(b"4c") and len(clock.getDelayedCalls()) == 1


def test_a_large_payload_waits_for_the_turn_even_after_a_quiet_moment() -> None:
    """A large payload is never written on the spot: it goes alone, in the turn's write."""
    clock = Clock()
    connection, transport = open_connection(EngineIOWebSocketFactory(clock, max_payload=1000))
    clock.advance(QUIET_PERIOD)
    payload = b"\x07" * LARGE_PAYLOAD
    connection.write_frames([frame_header(0x82, len(payload)), payload], 10 + len(payload), True)
    assert transport.value() == b"" and len(clock.getDelayedCalls()) == 1
    clock.advance(0)
    assert transport.value() == frame_header(0x82, len(payload)) + payload


def test_frames_queued_on_a_closed_connection_are_dropped() -> None:
    """A connection that closes before the turn ends writes nothing afterwards."""
    clock = Clock()
    connection, transport = open_connection(EngineIOWebSocketFactory(clock, max_payload=1000))
    connection.write_frames([frame_header(0x81, 2), b"4a"], 4)
    connection.state = WebSocketProtocol.STATE_CLOSED
    clock.advance(0)
    assert transport.value() == b""


def test_a_large_payload_is_written_alone_in_a_turn_of_its_own() -> None:
    """What precedes a large payload goes first; the payload itself is handed over uncopied next turn."""
    clock = Clock()
    connection, transport = open_connection(EngineIOWebSocketFactory(clock, max_payload=1000))
    writes: list[bytes] = []
    write = transport.write
    transport.write = lambda data: (writes.append(data), write(data))  # type: ignore[method-assign]
    payload = b"\x07" * LARGE_PAYLOAD
    text = frame_header(0x81, 4) + b"451-"
    connection.write_frames([text[:2], text[2:]], 6)
    connection.write_frames([frame_header(0x82, len(payload)), payload], 10 + len(payload), True)
    connection.write_frames([frame_header(0x81, 2), b"4z"], 4)
    # Clock runs the follow-up calls at once; the reactor runs them a turn later, after its I/O.
    clock.advance(0)
    assert len(writes) == 3
    assert writes[0] == text + frame_header(0x82, len(payload))
    assert writes[1] is payload, "the payload is written as it is, not copied"
    assert writes[2] == b"\x81\x024z" and clock.getDelayedCalls() == []
    assert transport.value() == text + frame_header(0x82, len(payload)) + payload + b"\x81\x024z"


class DrainingTransport(StringTransport):
    """
    A StringTransport that, like Twisted's TCP transport, pauses its producer when full; it shows what it
    holds only once told (``shown``, what ``unsent_bytes`` gives: None for a transport that hides it).
    """

    buffer_size = 65536
    shown: int | None = None

    def __init__(self) -> None:
        super().__init__()
        self.pending = 0
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        assert isinstance(data, bytes), "Twisted's transports take only bytes"
        super().write(data)
        self.writes.append(data)
        self.pending += len(data)
        if self.producer is not None and self.pending > self.buffer_size:
            self.producer.pauseProducing()

    def drain(self) -> None:
        """The socket took everything: resume the producer, as Twisted's doWrite does."""
        self.pending = 0
        if self.producer is not None:
            self.producer.resumeProducing()


@pytest.fixture(autouse=True)
def simulated_sockets(monkeypatch: pytest.MonkeyPatch) -> None:
    """
    ``unsent_bytes`` and ``write_through`` answered by the fakes: what a DrainingTransport shows, and a
    SocketLikeTransport's own sends; any other transport (a StringTransport) shows nothing and takes no
    direct send, as the real functions say of it.
    """

    def write_through(transport: object, data: Binary) -> int:
        return transport.send_at_once(data) if isinstance(transport, SocketLikeTransport) else 0

    monkeypatch.setattr(
        twisted_internals, "unsent_bytes", lambda transport: getattr(transport, "shown", None)
    )
    monkeypatch.setattr(twisted_internals, "write_through", write_through)


_Transport = TypeVar("_Transport", bound=StringTransport)


def open_producing_connection(
    clock: Clock, transport: _Transport
) -> tuple[EngineIOWebSocketProtocol, _Transport]:
    """An open connection on ``transport`` whose write-pressure producer is registered, as connectionMade does."""
    factory = EngineIOWebSocketFactory(clock, max_payload=1000)
    factory.prepare(lambda transport: None, codec_for(4))
    connection = factory.buildProtocol(None)
    connection.transport = transport
    connection.state = WebSocketProtocol.STATE_OPEN
    transport.registerProducer(connection._pressure, True)
    return connection, transport


def open_draining_connection(clock: Clock) -> tuple[EngineIOWebSocketProtocol, DrainingTransport]:
    return open_producing_connection(clock, DrainingTransport())


def test_a_large_view_is_streamed_in_chunks_as_the_socket_drains() -> None:
    """
    A large memoryview payload (a kernel's ZMQ frame) goes out in STREAM_CHUNK copies, one per drain;
    frames queued meanwhile follow it, and the bytes on the wire are exactly the frames in order.
    """
    clock = Clock()
    connection, transport = open_draining_connection(clock)
    payload = bytes(range(256)) * ((2 * STREAM_CHUNK + 12345) // 256)
    view = memoryview(payload)
    header = frame_header(0x82, len(payload))
    connection.write_frames([header, view], len(header) + len(payload), True)
    clock.advance(0)
    assert transport.writes == [header, payload[:STREAM_CHUNK]], (
        "one chunk, then wait for the socket"
    )
    connection.write_frames([frame_header(0x81, 2), b"4z"], 4)
    clock.advance(0)
    assert len(transport.writes) == 2, "nothing overtakes the payload being streamed"
    assert connection.unsent_bytes == len(payload) - STREAM_CHUNK + 4
    transport.drain()
    transport.drain()
    clock.advance(0)
    assert [len(chunk) for chunk in transport.writes[1:4]] == [
        STREAM_CHUNK,
        STREAM_CHUNK,
        len(payload) - 2 * STREAM_CHUNK,
    ]
    assert transport.value() == header + payload + b"\x81\x024z"
    assert clock.getDelayedCalls() == []


def test_closing_writes_the_rest_of_a_streamed_payload_before_the_close_frame() -> None:
    """lose() while a view is being streamed: its remaining bytes, then what was queued, then close."""
    clock = Clock()
    connection, transport = open_draining_connection(clock)
    payload = b"\x01\x02\x03" * STREAM_CHUNK
    header = frame_header(0x82, len(payload))
    connection.write_frames([header, memoryview(payload)], len(header) + len(payload), True)
    clock.advance(0)
    connection.write_frames([frame_header(0x81, 2), b"4z"], 4)
    connection.write_queued(everything=True)
    assert transport.value() == header + payload + b"\x81\x024z"


def client_frame(first_byte: int, payload: bytes, mask: bytes = b"\x37\xfa\x21\x3d") -> bytes:
    """A client's frame: the length (7, 16 or 64 bits), the mask, and the masked payload."""
    size = len(payload)
    if size < 126:
        length = bytes((0x80 | size,))
    elif size < 0x10000:
        length = bytes((0x80 | 126,)) + size.to_bytes(2, "big")
    else:
        length = bytes((0x80 | 127,)) + size.to_bytes(8, "big")
    masked = bytes(byte ^ mask[index % 4] for index, byte in enumerate(payload))
    return bytes((first_byte,)) + length + mask + masked


@pytest.mark.parametrize("size", [0, 5, 125, 126, 65535, 65536, 200_001])
def test_whole_masked_data_frames_are_read_here(size: int) -> None:
    """Text and binary frames of every length encoding are unmasked; the next frame's offset is right."""
    text = ("é" * size)[: max(0, size // 2)]
    binary = bytes(range(256)) * (size // 256) + bytes(size % 256)
    data = b"xx" + client_frame(0x81, text.encode()) + client_frame(0x82, binary)
    parsed = parse_data_frame(data, 2, 0)
    assert parsed is not None and parsed[0] == text
    parsed_binary = parse_data_frame(data, parsed[1], 0)
    assert parsed_binary == (binary, len(data))


@pytest.mark.parametrize(
    ("frame", "max_payload"),
    [
        (client_frame(0x81, b"hello")[:-1], 0),  # incomplete
        (client_frame(0x01, b"hello"), 0),  # not final (fragmented)
        (client_frame(0xC1, b"hello"), 0),  # RSV1: compressed
        (client_frame(0x89, b"hello"), 0),  # ping: a control frame
        (client_frame(0x88, b"\x03\xe8"), 0),  # close
        (bytes((0x81, 5)) + b"hello", 0),  # not masked
        (client_frame(0x81, b"\xff\xfe"), 0),  # invalid UTF-8
        (client_frame(0x82, b"x" * 101), 100),  # over the payload limit
        (bytes((0x82, 0x80 | 126, 0, 5)) + b"\0\0\0\0" + b"hello", 0),  # not minimally encoded
    ],
)
def test_other_frames_are_left_to_autobahn(frame: bytes, max_payload: int) -> None:
    """Anything but a whole, final, masked, valid data frame within the limit is not read here."""
    assert parse_data_frame(frame, 0, max_payload) is None


def test_frames_read_here_reach_the_session_in_order(monkeypatch: pytest.MonkeyPatch) -> None:
    """Several frames in one chunk reach the session in order; a partial one goes to Autobahn."""
    clock = Clock()
    factory = EngineIOWebSocketFactory(clock, max_payload=1000)
    received: list[object] = []

    class Session:
        sid = "s"

        def packet_received(self, transport: object, packet: object) -> None:
            received.append(packet)

    connection, _ = open_connection(factory)
    connection.session = Session()  # type: ignore[assignment]
    # Autobahn holds nothing of a frame (tested on a real one in tests/test_internals.py), and what is
    # handed to it is kept here.
    monkeypatch.setattr(twisted_internals, "websocket_reader_idle", lambda protocol: True)
    handed: list[bytes] = []
    monkeypatch.setattr(
        WebSocketServerProtocol, "dataReceived", lambda protocol, data: handed.append(data)
    )
    chunk = (
        client_frame(0x81, b"4one") + client_frame(0x82, b"\x01\x02") + client_frame(0x81, b"4x")
    )
    connection.dataReceived(chunk[:-1])
    assert [packet.data for packet in received] == ["one", b"\x01\x02"]  # type: ignore[attr-defined]
    assert handed == [client_frame(0x81, b"4x")[:-1]], "the partial frame is Autobahn's"


def test_a_full_transport_counts_what_it_still_holds_not_all_it_was_given() -> None:
    """
    While paused, a connection's backlog is what the TCP transport still holds plus what is queued:
    a client that keeps reading is not taken for a slow one just because the buffer never empties.
    Frames queued for the turn's write count either way.
    """
    clock = Clock()
    connection, transport = open_draining_connection(clock)
    connection.write_frames([frame_header(0x81, 2), b"4z"], 4)
    assert connection.unsent_bytes == 4, "frames queued for this turn's write count"
    clock.advance(0)
    assert connection.unsent_bytes == 0, "nothing counts while the transport takes everything"
    connection.write_frames([frame_header(0x81, 2), b"4a"], 4)
    transport.producer.pauseProducing()
    assert connection.unsent_bytes == 4, "a transport that hides its buffer: bytes since full"
    clock.advance(0)
    transport.shown = 75_000  # what Twisted's TCP connection says it holds
    connection.write_frames([frame_header(0x81, 2), b"4b"], 4)
    assert connection.unsent_bytes == 75_000 + 4


class SocketLikeTransport(DrainingTransport):
    """
    A TCP connection as twisted_internals shows it: ``send_at_once`` (``write_through``) sends what the
    socket has room for, unless ``write`` left bytes unsent (nothing overtakes them); ``write`` buffers, as
    a DrainingTransport does, and shows what it holds.
    """

    def __init__(self, room: int) -> None:
        super().__init__()
        self.room = room
        self.wire = bytearray()
        self.sent_directly: list[int] = []

    @property  # type: ignore[override]
    def shown(self) -> int:
        return self.pending

    @property
    def held(self) -> bytes:
        """What ``write`` buffered and the socket has not sent yet."""
        return self.value()

    def send_at_once(self, data: Binary) -> int:
        if self.pending:
            return 0
        taken = bytes(data[: self.room])
        self.room -= len(taken)
        self.wire += taken
        self.sent_directly.append(len(taken))
        return len(taken)

    def drain(self, room: int = 0) -> None:
        """The socket sent what was held and has ``room`` again; the producer is resumed."""
        self.wire += self.held
        self.clear()
        self.room = room
        super().drain()


def test_frames_go_straight_to_an_idle_socket_and_the_rest_through_twisted_in_order() -> None:
    """
    With nothing held by Twisted, a turn's frames are sent at once; what the socket does not take is
    buffered by Twisted, and later frames queue behind it instead of overtaking it.
    """
    clock = Clock()
    connection, transport = open_producing_connection(clock, SocketLikeTransport(room=5))
    connection.write_frames([frame_header(0x81, 2), b"4a"], 4)
    clock.advance(0)
    assert bytes(transport.wire) == b"\x81\x024a" and not transport.held
    connection.write_frames([frame_header(0x81, 3), b"4bc"], 5)
    clock.advance(0)
    assert bytes(transport.wire) == b"\x81\x024a\x81" and bytes(transport.held) == b"\x034bc"
    connection.write_frames([frame_header(0x81, 2), b"4d"], 4)
    clock.advance(0)
    assert [n for n in transport.sent_directly if n] == [4, 1], (
        "nothing is sent directly while Twisted holds bytes"
    )
    transport.drain(room=100)
    assert bytes(transport.wire) == b"\x81\x024a\x81\x034bc\x81\x024d"


def test_a_large_view_goes_to_the_socket_uncopied_right_after_what_precedes_it() -> None:
    """
    A kernel's large buffer is sent from its own memory while the socket takes it, in the same turn
    as the text frame before it; once the socket is full the rest is streamed as before.
    """
    clock = Clock()
    room = 3 * STREAM_CHUNK // 2
    connection, transport = open_producing_connection(clock, SocketLikeTransport(room))
    payload = bytes(range(256)) * (3 * STREAM_CHUNK // 256)
    text = frame_header(0x81, 4) + b"451-"
    header = frame_header(0x82, len(payload))
    connection.write_frames(
        [text, header, memoryview(payload)], len(text) + 10 + len(payload), True
    )
    clock.advance(0)
    assert clock.getDelayedCalls() == [], "the payload did not wait for another turn"
    partial = room - len(text + header) - STREAM_CHUNK
    assert [n for n in transport.sent_directly if n] == [len(text + header), STREAM_CHUNK, partial]
    assert len(transport.held) == STREAM_CHUNK - partial, "the rest of the second chunk, copied"
    transport.drain(room=10 * STREAM_CHUNK)
    assert bytes(transport.wire) == text + header + payload and not transport.held


@pytest.mark.parametrize("protocol", [3, 4])
def test_a_large_text_message_is_framed_without_joining_its_digit_and_text(protocol: int) -> None:
    """The frame of a large text message is what the codec would make; its text is written alone."""
    clock = Clock()
    connection, transport = open_producing_connection(clock, SocketLikeTransport(room=0))
    text = "é" * LARGE_PAYLOAD
    packet = Packet(PacketType.MESSAGE, text)
    WebSocketTransport(connection, codec_for(protocol)).send([packet])
    clock.advance(0)
    clock.advance(0)
    expected = codec_for(protocol).encode_frame(packet)
    assert isinstance(expected, str)
    body = expected.encode("utf-8")
    assert bytes(transport.held) == frame_header(0x81, len(body)) + body
    assert transport.writes[-1] == text.encode("utf-8"), "the text, not digit and text joined"


def _written(transport: StringTransport, clock: Clock) -> bytes:
    """Everything the connection wrote so far, after the turn's batched write."""
    clock.advance(0)
    written = transport.value()
    transport.clear()
    return written


@pytest.mark.parametrize("protocol", [3, 4])
def test_texts_framed_directly_are_the_bytes_of_their_packets(protocol: int) -> None:
    """send_texts writes, byte for byte, what send writes for the same text messages as packets."""
    clock = Clock()
    factory = EngineIOWebSocketFactory(clock, max_payload=1000)
    connection, transport = open_connection(factory)
    adapter = WebSocketTransport(connection, codec_for(protocol))
    texts = ('42/shell/k,["msg",{"a":1}]', "é☃ unicode", "x" * 70_000, "")
    assert adapter.send_texts(texts)
    direct = _written(transport, clock)
    adapter.send([Packet(PacketType.MESSAGE, text) for text in texts])
    assert direct == _written(transport, clock)
    assert direct.startswith(frame_header(0x81, 27) + b'442/shell/k,["msg"')


def test_texts_are_not_framed_directly_if_binary_or_the_connection_takes_no_frames() -> None:
    """send_texts sends nothing and says so for a binary message, or once the connection is closed."""
    clock = Clock()
    factory = EngineIOWebSocketFactory(clock, max_payload=1000)
    connection, transport = open_connection(factory)
    adapter = WebSocketTransport(connection, codec_for(4))
    assert not adapter.send_texts(("text", b"binary"))
    connection.state = WebSocketProtocol.STATE_CLOSING
    assert not adapter.send_texts(("text",))
    adapter.connection_lost()
    assert not adapter.send_texts(("text",))
    assert _written(transport, clock) == b""

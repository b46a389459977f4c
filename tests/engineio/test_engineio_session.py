"""Unit tests for the Engine.IO session state machine, driven by a Clock and fake transports."""

from __future__ import annotations

import json
from collections.abc import Sequence
from types import MappingProxyType

from twisted.internet.task import Clock

from kernel_relay.engineio import EngineIOOptions, HandshakeInfo
from kernel_relay.engineio.packets import Packet, PacketType
from kernel_relay.engineio.session import EngineIOSession

OPTIONS = EngineIOOptions(ping_interval=25.0, ping_timeout=20.0, upgrade_timeout=10.0)
T = PacketType


class FakeTransport:
    """Records what the session sends; ``writable`` and ``resumable`` are set by the test."""

    def __init__(
        self, name: str = "polling", writable: bool = True, resumable: bool = True
    ) -> None:
        self.name = name
        self.writable = writable
        self.resumable = resumable
        self.batches: list[list[Packet]] = []
        self.finished: list[list[Packet]] = []
        self.closed = False
        self.discarded = False
        self.buffered_bytes = 0

    def send(self, packets: Sequence[Packet]) -> None:
        assert self.writable, "session sent to a transport that is not writable"
        self.batches.append(list(packets))
        if self.name == "polling":
            self.writable = False

    def finish(self, packets: Sequence[Packet]) -> None:
        assert self.writable
        self.finished.append(list(packets))
        self.writable = False

    def close(self) -> None:
        self.closed = True
        self.writable = False

    def discard(self) -> None:
        self.discarded = True
        self.close()

    def abort(self) -> None:
        if self.writable:
            self.finish([])
        self.close()

    def sent(self) -> list[Packet]:
        return [p for batch in self.batches for p in batch]


class Recorder:
    """A SessionHandler that records messages and close reasons."""

    def __init__(self) -> None:
        self.messages: list[str | bytes] = []
        self.reasons: list[str] = []

    def message_received(self, data: str | bytes) -> None:
        self.messages.append(data)

    def session_closed(self, reason: str) -> None:
        self.reasons.append(reason)


def make(
    transport: FakeTransport | None = None, options: EngineIOOptions = OPTIONS, protocol: int = 4
) -> tuple[EngineIOSession, FakeTransport, Recorder, Clock, list[EngineIOSession]]:
    clock = Clock()
    transport = transport or FakeTransport()
    gone: list[EngineIOSession] = []
    info = HandshakeInfo(
        "127.0.0.1", MappingProxyType({}), MappingProxyType({}), False, transport.name, protocol
    )
    session = EngineIOSession("sid1", info, options, clock, transport, gone.append)
    handler = Recorder()
    session.attach_handler(handler)
    return session, transport, handler, clock, gone


def test_open_packet_is_first_and_describes_the_session() -> None:
    """The first packet is the open packet with sid, upgrades and times in milliseconds."""
    _session, transport, _, _, _ = make()
    first = transport.batches[0][0]
    assert first.type is T.OPEN
    assert isinstance(first.data, str)
    assert json.loads(first.data) == {
        "sid": "sid1",
        "upgrades": ["websocket"],
        "pingInterval": 25000,
        "pingTimeout": 20000,
        "maxPayload": 1_000_000,
    }
    assert "," + '"upgrades"' in first.data  # compact JSON, no spaces


def test_websocket_session_offers_no_upgrades() -> None:
    """A session opened over WebSocket advertises an empty upgrade list."""
    _, transport, _, _, _ = make(FakeTransport("websocket", resumable=False))
    data = transport.batches[0][0].data
    assert isinstance(data, str) and json.loads(data)["upgrades"] == []


def test_polling_only_server_offers_no_upgrades() -> None:
    """With websocket disabled, polling sessions advertise no upgrade."""
    _, transport, _, _, _ = make(options=EngineIOOptions(transports=("polling",)))
    data = transport.batches[0][0].data
    assert isinstance(data, str) and json.loads(data)["upgrades"] == []


def test_messages_are_buffered_until_a_poll_arrives() -> None:
    """Messages sent without a pending poll are delivered together, in order, to the next poll."""
    session, transport, _, _, _ = make()
    session.send("a")
    session.send(b"\x01")
    assert len(transport.batches) == 1
    transport.writable = True
    session.transport_ready(transport)
    assert transport.batches[1] == [Packet(T.MESSAGE, "a"), Packet(T.MESSAGE, b"\x01")]


def test_messages_sent_together_leave_in_one_batch() -> None:
    """send() with several messages (a socket.io packet and its attachments) hands them over at once."""
    session, transport, _, _, _ = make(FakeTransport("websocket", resumable=False))
    session.send("451-[...]", b"\x01\x02")
    assert transport.batches[-1] == [Packet(T.MESSAGE, "451-[...]"), Packet(T.MESSAGE, b"\x01\x02")]


def test_received_messages_reach_the_handler() -> None:
    """Message packets from the current transport are handed to the handler."""
    session, transport, handler, _, _ = make()
    session.packet_received(transport, Packet(T.MESSAGE, "hi"))
    session.packet_received(transport, Packet(T.MESSAGE, b"\x00"))
    assert handler.messages == ["hi", b"\x00"]


def test_heartbeat_pings_and_pong_resets() -> None:
    """A ping goes out every ping_interval, and a pong in time keeps the session open."""
    session, transport, _handler, clock, _ = make(FakeTransport("websocket", resumable=False))
    for _ in range(3):
        clock.advance(25.0)
        assert transport.sent()[-1] == Packet(T.PING)
        clock.advance(19.0)
        session.packet_received(transport, Packet(T.PONG))
    assert not session.closed
    assert sum(1 for p in transport.sent() if p.type is T.PING) == 3


def test_missing_pong_closes_with_ping_timeout() -> None:
    """Without a pong within ping_timeout after a ping, the session closes with 'ping timeout'."""
    session, _transport, handler, clock, gone = make(FakeTransport("websocket", resumable=False))
    clock.advance(25.0)
    clock.advance(20.0)
    assert session.closed and handler.reasons == ["ping timeout"]
    assert gone == [session]
    assert not clock.getDelayedCalls()


def test_client_ping_is_a_transport_error() -> None:
    """In v4 only the server pings; a client ping closes the session with 'transport error'."""
    session, transport, handler, _, _ = make()
    session.packet_received(transport, Packet(T.PING))
    assert handler.reasons == ["transport error"]


def test_close_once_with_first_reason() -> None:
    """session_closed is called once, with the first reason, however many closes follow."""
    session, transport, handler, clock, gone = make(FakeTransport("websocket", resumable=False))
    session.close("server close")
    session.close("again")
    session.packet_received(transport, Packet(T.CLOSE))
    session.transport_lost(transport)
    clock.advance(100)
    assert handler.reasons == ["server close"]
    assert gone == [session]


def test_send_after_close_is_ignored() -> None:
    """send() after close neither raises nor sends anything."""
    session, transport, _, _, _ = make(FakeTransport("websocket", resumable=False))
    session.close()
    before = list(transport.batches)
    session.send("late")
    assert transport.batches == before


def test_server_close_flushes_then_closes_polling() -> None:
    """A server close with a poll waiting delivers queued messages followed by the close signal."""
    session, transport, handler, _, gone = make()
    session.send("last")
    transport.writable = True
    session.close()
    assert transport.finished == [[Packet(T.MESSAGE, "last")]]
    assert gone == [session] and handler.reasons == ["server close"]


def test_server_close_without_poll_lingers_for_next_poll() -> None:
    """Without a waiting poll, queued messages and the close wait for the next poll."""
    session, transport, handler, _clock, gone = make()
    session.send("last")
    session.close("bye")
    assert session.closed and not gone and handler.reasons == ["bye"]
    transport.writable = True
    session.transport_ready(transport)
    assert transport.finished == [[Packet(T.MESSAGE, "last")]]
    assert gone == [session]


def test_lingering_session_is_forgotten_after_grace() -> None:
    """A closed polling session whose client never polls again is forgotten after a grace period."""
    session, transport, _, clock, gone = make()
    session.close()
    clock.advance(OPTIONS.ping_interval + OPTIONS.ping_timeout)
    assert gone == [session] and transport.closed


def test_client_close_answers_waiting_poll_with_noop() -> None:
    """A client close packet ends the session with 'transport close' and releases the transport."""
    session, transport, handler, _, gone = make()
    transport.writable = True
    session.packet_received(transport, Packet(T.CLOSE))
    assert handler.reasons == ["transport close"]
    assert transport.closed and not transport.finished
    assert gone == [session]


def test_abort_sends_close_to_waiting_poll() -> None:
    """A parse error answers a waiting poll with the close signal and drops the queue."""
    session, transport, handler, _, _ = make()
    session.send("dropped")
    transport.writable = True
    session.decode_failed(transport)
    assert handler.reasons == ["parse error"]
    assert transport.finished == [[]]


def test_upgrade_probe_pauses_polling_and_upgrade_flushes_in_order() -> None:
    """After the probe polls get noop and messages wait; after upgrade they go over WebSocket."""
    session, polling, handler, clock, _ = make()
    ws = FakeTransport("websocket", resumable=False)
    assert session.begin_upgrade(ws)
    assert session.upgrading
    polling.writable = True
    session.packet_received(ws, Packet(T.PING, "probe"))
    assert ws.batches == [[Packet(T.PONG, "probe")]]
    assert polling.batches[-1] == [Packet(T.NOOP)]
    session.send("one")
    session.send("two")
    polling.writable = True
    session.transport_ready(polling)
    clock.advance(0.1)
    assert polling.batches[-1] == [Packet(T.NOOP)]
    assert len(polling.batches) == 3
    session.packet_received(ws, Packet(T.UPGRADE))
    assert session.transport_name == "websocket" and session.upgraded
    assert ws.batches[-1] == [Packet(T.MESSAGE, "one"), Packet(T.MESSAGE, "two")]
    assert polling.closed and polling.discarded
    session.send("three")
    assert ws.batches[-1] == [Packet(T.MESSAGE, "three")]
    session.packet_received(ws, Packet(T.MESSAGE, "from ws"))
    assert handler.messages == ["from ws"]
    assert not clock.getDelayedCalls() or all(c.getTime() == 25.0 for c in clock.getDelayedCalls())


def test_upgrade_timeout_closes_probe_and_resumes_polling() -> None:
    """If the upgrade is not completed in time, the probe is closed and polling carries on."""
    session, polling, _, clock, _ = make()
    ws = FakeTransport("websocket", resumable=False)
    session.begin_upgrade(ws)
    session.packet_received(ws, Packet(T.PING, "probe"))
    session.send("held")
    clock.advance(OPTIONS.upgrade_timeout)
    assert ws.closed and not session.upgrading and not session.closed
    polling.writable = True
    session.transport_ready(polling)
    assert polling.batches[-1] == [Packet(T.MESSAGE, "held")]


def test_second_upgrade_is_refused() -> None:
    """A second WebSocket cannot upgrade a session that is upgrading or upgraded."""
    session, _, _, _, _ = make()
    first = FakeTransport("websocket", resumable=False)
    assert session.begin_upgrade(first)
    assert not session.begin_upgrade(FakeTransport("websocket", resumable=False))
    session.packet_received(first, Packet(T.UPGRADE))
    assert not session.begin_upgrade(FakeTransport("websocket", resumable=False))


def test_bad_packet_on_probe_only_aborts_upgrade() -> None:
    """An unexpected packet on the probe closes the probe but not the session."""
    session, _, handler, _, _ = make()
    ws = FakeTransport("websocket", resumable=False)
    session.begin_upgrade(ws)
    session.packet_received(ws, Packet(T.MESSAGE, "too early"))
    assert ws.closed and not session.closed and handler.messages == []
    assert session.begin_upgrade(FakeTransport("websocket", resumable=False))


def test_probe_lost_resumes_polling() -> None:
    """If the probe WebSocket disconnects mid-upgrade, held messages go to the next poll."""
    session, polling, _, _, _ = make()
    ws = FakeTransport("websocket", resumable=False)
    session.begin_upgrade(ws)
    session.packet_received(ws, Packet(T.PING, "probe"))
    session.send("held")
    session.transport_lost(ws)
    polling.writable = True
    session.transport_ready(polling)
    assert polling.batches[-1] == [Packet(T.MESSAGE, "held")]


def test_handler_exceptions_do_not_break_the_session() -> None:
    """A handler that raises is logged; the session stays usable and closes once."""

    class Broken(Recorder):
        def message_received(self, data: str | bytes) -> None:
            raise RuntimeError("boom")

    session, transport, _, _, gone = make(FakeTransport("websocket", resumable=False))
    broken = Broken()
    session.attach_handler(broken)
    session.packet_received(transport, Packet(T.MESSAGE, "x"))
    assert not session.closed
    session.close()
    assert broken.reasons == ["server close"] and gone == [session]


def test_poll_during_upgrade_is_refused_if_upgrade_completes_first() -> None:
    """A poll sent after the probe waits briefly; if the upgrade completes, it is refused."""
    session, polling, _, clock, _ = make()
    ws = FakeTransport("websocket", resumable=False)
    session.begin_upgrade(ws)
    session.packet_received(ws, Packet(T.PING, "probe"))
    polling.writable = True
    session.transport_ready(polling)
    session.packet_received(ws, Packet(T.UPGRADE))
    clock.advance(1)
    assert polling.discarded
    assert [Packet(T.NOOP)] not in polling.batches[1:]


class DirectTransport(FakeTransport):
    """A WebSocket-like fake that frames text messages itself (as WebSocketTransport.send_texts)."""

    def __init__(self) -> None:
        super().__init__(name="websocket", resumable=False)
        self.direct: list[str] = []

    def send_texts(self, messages: Sequence[str | bytes]) -> bool:
        if not self.writable or not all(isinstance(m, str) for m in messages):
            return False
        self.direct += messages  # type: ignore[arg-type]
        return True


def test_text_messages_go_straight_to_a_transport_that_frames_them_unless_packets_wait() -> None:
    """Text skips the queue only when nothing is queued: binary, and text after it, keep their order."""
    transport = DirectTransport()
    session, *_ = make(transport)
    session.send("a", "b")
    assert transport.direct == ["a", "b"]
    session.send("c", b"bin")
    assert transport.direct == ["a", "b"]
    assert [p.data for p in transport.sent()][-2:] == ["c", b"bin"]
    transport.writable = False
    session.send("d")
    transport.writable = True
    session.send("e")
    assert transport.direct == ["a", "b"], "queued text is not overtaken"
    session._flush()
    assert [p.data for p in transport.sent()][-2:] == ["d", "e"]

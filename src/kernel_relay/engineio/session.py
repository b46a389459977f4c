"""
One Engine.IO session as a state machine: heartbeat, send buffer, upgrade, close.

The session never touches a socket. It talks to its transports through the small
:class:`Transport` interface and to time through an injected ``IReactorTime``, so every rule here
(ping timeout, upgrade ordering, close-once) can be driven by a ``Clock`` and fake transports.

Lifecycle: ``open`` → (``closing``: closed for the application, but a polling client may still
collect its last packets and the close packet) → ``gone`` (removed from the server).

Heartbeat (:mod:`.heartbeat`): in protocol 4 the server pings, in protocol 3 the client does and the
session answers each ping with a pong carrying the same data. The transports are reached through the
:class:`~.transport.Transport` interface.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from enum import Enum

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from ._timers import cancel
from .heartbeat import Heartbeat
from .options import EngineIOOptions, HandshakeInfo, SessionHandler
from .packets import Binary, Packet, PacketType, as_binary, new_packet_unchecked
from .transport import Transport
from .upgrade import Upgrade

# Reasons given to SessionHandler.session_closed (the server gives two more: see .server).
TRANSPORT_CLOSE = "transport close"
TRANSPORT_ERROR = "transport error"
PING_TIMEOUT = "ping timeout"
SERVER_CLOSE = "server close"
PARSE_ERROR = "parse error"
SLOW_CLIENT = "slow client"


class _State(Enum):
    OPEN = "open"
    CLOSING = "closing"
    GONE = "gone"


# Looked up for every message; an enum member costs more to fetch from its class than a global.
_OPEN = _State.OPEN
_MESSAGE = PacketType.MESSAGE


class _Ending(Enum):
    GRACEFUL = "graceful"  # deliver what is queued, then a close signal
    ABORT = "abort"  # drop what is queued; tell a waiting poll/WebSocket that we close
    PEER = "peer"  # the client closed; just release the transport


class EngineIOSession:
    """
    One client's Engine.IO session, whatever transport carries it.

    Applications use ``sid``, ``handshake``, ``protocol``, ``transport_name``, ``closed``, ``send``
    and ``close``; transports call the ``transport_*``/``packet_received`` methods.
    """

    log = Logger()

    def __init__(
        self,
        sid: str,
        handshake: HandshakeInfo,
        options: EngineIOOptions,
        clock: IReactorTime,
        transport: Transport,
        on_gone: Callable[[EngineIOSession], None],
    ) -> None:
        self.sid = sid
        self.handshake = handshake
        self.protocol = handshake.protocol
        self.upgraded = False
        #: Has the application accepted this session (see :meth:`vouch`)?
        self.vouched = False
        #: Set by the server: told of a session once it is vouched for.
        self.on_vouched: Callable[[EngineIOSession], None] | None = None
        #: Set by the server: told of this session's ``buffered_bytes`` after each send.
        self.on_buffered: Callable[[EngineIOSession, int], None] | None = None
        #: Set by the application: told when what was handed to the session has gone out (its WebSocket's
        #: buffer drained, or a poll collected it), for one that holds more back until then (a replay).
        self.on_drained: Callable[[EngineIOSession], None] | None = None
        self.close_reason: str | None = None
        self._options = options
        self._clock = clock
        self._transport = transport
        # A transport that frames messages with no packet made: see WebSocketTransport.send_texts.
        self._direct = getattr(transport, "send_texts", None)
        self._on_gone = on_gone
        self._handler: SessionHandler | None = None
        self._state = _State.OPEN
        self._buffer: list[Packet] = []
        self._queued_bytes = 0
        self._pong_queued = False
        self._upgrade: Upgrade | None = None
        self._linger_call: IDelayedCall | None = None
        self._farewell_close = True
        self._heartbeat = Heartbeat(
            clock, options, self.protocol < 4, self._send_ping, self._heartbeat_lost
        )
        self._queue(_open_packet(sid, self.protocol, options, transport.name))
        self._heartbeat.start()
        self._flush()

    # -- application API -------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._state is not _OPEN

    @property
    def gone(self) -> bool:
        """Has the server forgotten this session (nothing left to deliver)?"""
        return self._state is _State.GONE

    @property
    def transport_name(self) -> str:
        return self._transport.name

    @property
    def transport(self) -> Transport:
        """The transport currently carrying the session (for the server's request routing)."""
        return self._transport

    @property
    def upgrading(self) -> bool:
        return self._upgrade is not None

    @property
    def buffered_bytes(self) -> int:
        """
        Bytes waiting to go out: queued messages (text counted in characters) plus what the current
        transport's connection has not written yet.
        """
        return self._queued_bytes + self._transport.buffered_bytes

    def attach_handler(self, handler: SessionHandler) -> None:
        """Set the application handler (done once by the server, right after the open packet)."""
        self._handler = handler

    def send(self, *messages: str | Binary) -> None:
        """
        Queue messages (text for ``str``, binary for ``bytes`` or ``memoryview``); deliver them when
        possible.

        Messages given together go out together (a socket.io packet and its attachments in one write).
        A memoryview must stay unchanged until sent (a kernel's ZMQ frame is never written to).
        """
        if self._state is not _OPEN:
            self.log.debug("send on closed session {sid} ignored", sid=self.sid)
            return
        direct = self._direct
        if direct is None or self._buffer or self._upgrade is not None or not direct(messages):
            for data in messages:
                kind = type(data)
                if kind is not str and kind is not bytes:
                    data = as_binary(data)
                self._queue(new_packet_unchecked(Packet, (_MESSAGE, data)))
            self._flush()
        limit = self._options.max_buffered_bytes
        report = self.on_buffered
        if (limit is not None or report is not None) and self._state is _OPEN:
            buffered = self.buffered_bytes
            if limit is not None and buffered > limit:
                self.log.warn(
                    "session {sid} closed: {buffered} bytes waiting to go out, over the limit of"
                    " {limit} (slow client)",
                    sid=self.sid,
                    buffered=buffered,
                    limit=limit,
                )
                self._terminate(SLOW_CLIENT, _Ending.ABORT)
            elif report is not None:
                report(self, buffered)

    def close(self, reason: str = SERVER_CLOSE) -> None:
        """Close from the server side; queued messages still go out before the close signal."""
        self._terminate(reason, _Ending.GRACEFUL)

    def abort(self, reason: str) -> None:
        """Close from the server side at once, dropping what is still queued (e.g. a slow client)."""
        self._terminate(reason, _Ending.ABORT)

    def shed(self, limit: int) -> None:
        """Close at once as a slow client: all sessions together hold more than ``limit`` bytes."""
        self.log.warn(
            "session {sid} closed: {buffered} bytes waiting to go out, the most of any while all "
            "clients together were over the limit of {limit} (slow client)",
            sid=self.sid,
            buffered=self.buffered_bytes,
            limit=limit,
        )
        self._terminate(SLOW_CLIENT, _Ending.ABORT)

    def vouch(self) -> None:
        """
        The application accepted this session (for socket.io: it joined a namespace). The server
        then spares it, and the connections carrying it, when it must let sessions go.
        """
        if self.vouched or self._state is not _OPEN:
            return
        self.vouched = True
        if self.on_vouched is not None:
            self.on_vouched(self)

    # -- transport API ---------------------------------------------------------------------------

    def packet_received(self, transport: Transport, packet: Packet) -> None:
        """A well-formed packet arrived on ``transport`` (the current one or an upgrade probe)."""
        if self._is_probe(transport):
            if self._state is _OPEN:
                self._heartbeat.heard()
            assert self._upgrade is not None
            self._probe_packet(self._upgrade, packet)
            return
        if transport is not self._transport or self._state is not _OPEN:
            self.log.debug("packet on session {sid} ignored", sid=self.sid)
            return
        kind = packet.type
        heartbeat = self._heartbeat
        if heartbeat.client_pings:
            heartbeat.heard()
        if kind is _MESSAGE:
            # The codecs decode what peers send into str or bytes, never a view.
            self._deliver(packet.data)  # type: ignore[arg-type]
        elif kind is PacketType.PONG and not heartbeat.client_pings:
            heartbeat.pong_received()
        elif kind is PacketType.CLOSE:
            self._terminate(TRANSPORT_CLOSE, _Ending.PEER)
        elif kind is PacketType.PING and heartbeat.client_pings:
            # One pong waiting is answer enough: a client that pings without polling (or reading) must
            # not pile up one, with its ping's data, per ping.
            if not self._pong_queued:
                self._pong_queued = True
                self._queue(Packet(PacketType.PONG, packet.data))
            self._flush()
        elif kind is PacketType.PING:
            # In v4 only the server pings; a client ping is a protocol violation.
            self.log.info("client ping on session {sid}: invalid heartbeat direction", sid=self.sid)
            self._terminate(TRANSPORT_ERROR, _Ending.ABORT)
        else:
            self.log.debug("packet {kind} on session {sid} ignored", kind=kind.name, sid=self.sid)

    def decode_failed(self, transport: Transport) -> None:
        """``transport`` received something that is not a packet."""
        if self._is_probe(transport):
            self._abort_upgrade("invalid packet on probe")
        elif transport is self._transport:
            self._terminate(PARSE_ERROR, _Ending.ABORT)

    def transport_error(self, transport: Transport, why: str) -> None:
        """``transport`` misbehaved (overlapping polls, bad content type, ...)."""
        if self._is_probe(transport):
            self._abort_upgrade(why)
        elif transport is self._transport:
            self.log.info("transport error on session {sid}: {why}", sid=self.sid, why=why)
            self._terminate(TRANSPORT_ERROR, _Ending.ABORT)

    def transport_lost(self, transport: Transport, reason: str = TRANSPORT_CLOSE) -> None:
        """``transport``'s connection is gone."""
        if self._is_probe(transport):
            self._abort_upgrade("probe transport closed")
        elif transport is self._transport:
            self._terminate(reason, _Ending.ABORT)

    def transport_drained(self, transport: Transport) -> None:
        """What ``transport`` was handed has gone out (its connection's buffer drained)."""
        if (
            transport is self._transport
            and self._state is _OPEN
            and not self._buffer
            and self.on_drained is not None
        ):
            self.on_drained(self)

    def transport_ready(self, transport: Transport) -> None:
        """``transport`` became writable (a poll request arrived)."""
        if transport is not self._transport:
            return
        if self._state is _State.CLOSING:
            self._deliver_farewell()
        elif self._upgrade is not None and self._upgrade.paused:
            self._upgrade.polled(transport)
        else:
            self._flush()
            self.transport_drained(transport)

    def begin_upgrade(self, transport: Transport) -> bool:
        """Try ``transport`` (a fresh WebSocket) as the new transport; False if refused."""
        if self._state is not _OPEN or self.upgraded or self._upgrade is not None:
            return False
        if self._transport.name == transport.name:
            return False
        self._upgrade = Upgrade(
            transport, self._clock, self._options.upgrade_timeout, self._abort_upgrade
        )
        return True

    # -- internals -------------------------------------------------------------------------------

    def _deliver(self, data: str | bytes) -> None:
        if self._handler is None:
            self.log.debug("message before handler on session {sid} dropped", sid=self.sid)
            return
        try:
            self._handler.message_received(data)
        except Exception:
            self.log.failure("message handler of session {sid} failed", sid=self.sid)

    def _queue(self, packet: Packet) -> None:
        self._buffer.append(packet)
        self._queued_bytes += len(packet.data)

    def _take_buffer(self) -> list[Packet]:
        self._pong_queued = False
        packets, self._buffer = self._buffer, []
        self._queued_bytes = 0
        return packets

    def _flush(self) -> None:
        if self._state is not _OPEN or not self._buffer:
            return
        if self._upgrade is not None and self._upgrade.paused:
            return
        if not self._transport.writable:
            return
        self._transport.send(self._take_buffer())

    def _send_ping(self) -> bool:
        """Queue the heartbeat's ping (protocol 4); False if the session is no longer open."""
        if self._state is not _OPEN:
            return False
        self._queue(Packet(PacketType.PING))
        self._flush()
        return True

    def _heartbeat_lost(self, why: str) -> None:
        self.log.info("session {sid}: {why}", sid=self.sid, why=why)
        self._terminate(PING_TIMEOUT, _Ending.ABORT)

    def _is_probe(self, transport: Transport) -> bool:
        """Is ``transport`` the one an upgrade under way tries?"""
        return self._upgrade is not None and transport is self._upgrade.probe

    def _probe_packet(self, upgrade: Upgrade, packet: Packet) -> None:
        if upgrade.is_probe(packet):
            upgrade.probed(self._transport)
        elif packet.type is PacketType.UPGRADE:
            self._complete_upgrade(upgrade)
        else:
            self._abort_upgrade(f"unexpected {packet.type.name} packet on probe")

    def _complete_upgrade(self, upgrade: Upgrade) -> None:
        upgrade.stop()
        old, self._transport, self._upgrade = self._transport, upgrade.probe, None
        self._direct = getattr(self._transport, "send_texts", None)
        self.upgraded = True
        old.discard()
        if self.vouched and self.on_vouched is not None:
            self.on_vouched(self)  # the new connection carries a vouched session too
        self.log.debug("session {sid} upgraded to {name}", sid=self.sid, name=upgrade.probe.name)
        self._flush()

    def _abort_upgrade(self, why: str) -> None:
        upgrade, self._upgrade = self._upgrade, None
        if upgrade is None:
            return
        self.log.info("upgrade of session {sid} abandoned: {why}", sid=self.sid, why=why)
        upgrade.stop()
        upgrade.probe.close()
        self._flush()

    def _terminate(self, reason: str, ending: _Ending) -> None:
        if self._state is not _OPEN:
            return
        self._state = _State.CLOSING
        self.close_reason = reason
        self._heartbeat.stop()
        self._abort_upgrade("session closed")
        self.log.debug("session {sid} closed: {reason}", sid=self.sid, reason=reason)
        handler, self._handler = self._handler, None
        if handler is not None:
            try:
                handler.session_closed(reason)
            except Exception:
                self.log.failure("close handler of session {sid} failed", sid=self.sid)
        if ending is _Ending.ABORT:
            self._take_buffer()
            self._transport.abort()
            self._finalize()
            return
        if ending is _Ending.PEER:
            self._take_buffer()
        self._farewell_close = ending is _Ending.GRACEFUL
        if self._transport.writable:
            self._deliver_farewell()
        elif self._transport.resumable:
            # No poll is waiting: answer the client's next poll (queued packets and the close
            # packet, or a noop after a client close), but only for a short while.
            grace = self._options.ping_interval + self._options.ping_timeout
            self._linger_call = self._clock.callLater(grace, self._finalize)
        else:
            self._finalize()

    def _deliver_farewell(self) -> None:
        packets = self._take_buffer()
        if self._farewell_close:
            self._transport.finish(packets)
        self._finalize()

    def _finalize(self) -> None:
        if self._state is _State.GONE:
            return
        self._state = _State.GONE
        self._cancel("_linger_call")
        self._take_buffer()
        self._transport.close()
        try:
            self._on_gone(self)
        except Exception:
            self.log.failure("cleanup of session {sid} failed", sid=self.sid)

    def _cancel(self, attribute: str) -> None:
        call = getattr(self, attribute)
        setattr(self, attribute, None)
        cancel(call)


def _open_packet(sid: str, protocol: int, options: EngineIOOptions, transport_name: str) -> Packet:
    """The handshake's OPEN packet: the sid, the upgrades offered, the heartbeat, the payload bound (v4)."""
    upgrades = (
        ["websocket"] if transport_name == "polling" and "websocket" in options.transports else []
    )
    handshake_data: dict[str, object] = {
        "sid": sid,
        "upgrades": upgrades,
        "pingInterval": round(options.ping_interval * 1000),
        "pingTimeout": round(options.ping_timeout * 1000),
    }
    if protocol >= 4:
        handshake_data["maxPayload"] = options.max_payload
    return Packet(PacketType.OPEN, json.dumps(handshake_data, separators=(",", ":")))

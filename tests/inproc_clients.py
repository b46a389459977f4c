"""
Small clients of the relay's two fronts for the in-process harness (:mod:`tests.inproc`): a WebSocket client
(RFC 6455: the upgrade request, masked frames out, the server's frames in, ping answered), a socket.io client
on Engine.IO v4 over it, and a Jupyter kernel WebSocket client in the v1 subprotocol or the legacy JSON one.
They are written here from the protocols' texts, not with the relay's own encoders, so that what the relay
sends is checked against the protocol rather than against itself (only the socket.io packet decoder is the
project's, for binary attachments).
"""

from __future__ import annotations

import base64
import json
import os
import struct
import urllib.parse
import uuid
from itertools import pairwise
from typing import Any

from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure

from kernel_relay.socketio.packet import Packet, PacketDecoder, PacketType

Message = dict[str, Any]
V1 = "v1.kernel.websocket.jupyter.org"
CHANNELS = ("shell", "control", "stdin", "iopub")


def jupyter_message(msg_type: str, content: Message | None = None, msg_id: str = "") -> Message:
    """A client's Jupyter message (a fresh ``msg_id`` unless one is given)."""
    return {
        "header": {
            "msg_id": msg_id or uuid.uuid4().hex,
            "msg_type": msg_type,
            "session": "inproc",
            "username": "test",
            "date": "2026-01-01T00:00:00Z",
            "version": "5.3",
        },
        "parent_header": {},
        "metadata": {},
        "content": content or {},
    }


class WebSocketClient(Protocol):
    """
    One WebSocket connection: the upgrade request for ``path`` with ``headers``, then ``messages`` (``str`` or
    ``bytes``) as they come. A refused upgrade leaves ``status`` and ``body``; a close leaves ``close_code``
    and ``close_reason``; ``lost`` once the connection is gone. ``reading`` False: the client reads nothing
    (the harness stops moving the server's bytes to it).
    """

    def __init__(self, path: str, headers: dict[str, str] | None = None) -> None:
        self.path = path
        self.headers = headers or {}
        self.status: int | None = None
        self.response_headers: dict[str, str] = {}
        self.body = b""
        self.messages: list[str | bytes] = []
        self.close_code: int | None = None
        self.close_reason = ""
        self.lost = False
        self.reading = True
        self._buffer = b""

    @property
    def open(self) -> bool:
        return self.status == 101 and self.close_code is None and not self.lost

    def connectionMade(self) -> None:
        key = base64.b64encode(os.urandom(16)).decode()
        lines = [
            f"GET {self.path} HTTP/1.1",
            "Host: 127.0.0.1:8888",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {key}",
            "Sec-WebSocket-Version: 13",
            *(f"{name}: {value}" for name, value in self.headers.items()),
        ]
        self.transport.write(("\r\n".join(lines) + "\r\n\r\n").encode())  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:
        self._buffer += data
        if self.status is None:
            head, separator, rest = self._buffer.partition(b"\r\n\r\n")
            if not separator:
                return
            status_line, *fields = head.decode("latin-1").split("\r\n")
            self.status = int(status_line.split()[1])
            for field in fields:
                name, _, value = field.partition(":")
                self.response_headers[name.strip().lower()] = value.strip()
            self._buffer = rest
        if self.status != 101:
            self.body, self._buffer = self.body + self._buffer, b""
            return
        while self._read_frame():
            pass

    def _read_frame(self) -> bool:
        data = self._buffer
        if len(data) < 2:
            return False
        opcode, length, start = data[0] & 0x0F, data[1] & 0x7F, 2
        if length == 126:
            if len(data) < 4:
                return False
            (length,), start = struct.unpack("!H", data[2:4]), 4
        elif length == 127:
            if len(data) < 10:
                return False
            (length,), start = struct.unpack("!Q", data[2:10]), 10
        if len(data) < start + length:
            return False
        payload, self._buffer = data[start : start + length], data[start + length :]
        if opcode == 1:
            self.message_received(payload.decode("utf-8"))
        elif opcode == 2:
            self.message_received(payload)
        elif opcode == 9:
            self._send_frame(10, payload)
        elif opcode == 8:
            self._closed(payload)
        return True

    def _closed(self, payload: bytes) -> None:
        if self.close_code is None:
            self.close_code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
            self.close_reason = payload[2:].decode("utf-8", "replace")
            self._send_frame(8, payload[:2])

    def message_received(self, message: str | bytes) -> None:
        self.messages.append(message)

    def _send_frame(self, opcode: int, payload: bytes) -> None:
        if self.transport is None or self.lost:
            return
        mask = os.urandom(4)
        size = len(payload)
        if size < 126:
            header = struct.pack("!BB", 0x80 | opcode, 0x80 | size)
        elif size < 1 << 16:
            header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, size)
        else:
            header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, size)
        masked = bytes(byte ^ mask[i % 4] for i, byte in enumerate(payload))
        self.transport.write(header + mask + masked)

    def send(self, message: str | bytes) -> None:
        """One message, in one frame (text for ``str``, binary for ``bytes``)."""
        if isinstance(message, str):
            self._send_frame(1, message.encode("utf-8"))
        else:
            self._send_frame(2, message)

    def close(self, code: int = 1000) -> None:
        self._send_frame(8, struct.pack("!H", code))

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.lost = True


class SocketIOClient(WebSocketClient):
    """
    A socket.io v5 client on Engine.IO v4 over WebSocket: it joins namespaces with an auth payload, emits
    events, answers pings, and records what each namespace got (``events``), its CONNECT reply (``joined``),
    refusal (``refused``) and disconnect (``left``).
    """

    def __init__(self, query: dict[str, str] | None = None, headers: dict[str, str] | None = None):
        fields = urllib.parse.urlencode({"EIO": "4", "transport": "websocket", **(query or {})})
        super().__init__(f"/socket.io/?{fields}", headers)
        self.sid: str | None = None
        self.events: dict[str, list[tuple[str, list[Any]]]] = {}
        self.joined: dict[str, Any] = {}
        self.refused: dict[str, Any] = {}
        self.left: set[str] = set()
        self.acks: dict[int, list[Any]] = {}
        self._decoder = PacketDecoder()
        self._next_ack = 0

    def message_received(self, message: str | bytes) -> None:
        super().message_received(message)
        if isinstance(message, str):
            kind, data = message[:1], message[1:]
            if kind == "0":
                self.sid = json.loads(data)["sid"]
            elif kind == "2":
                self.send("3")
            if kind != "4":
                return
            packet = self._decoder.feed(data)
        else:
            packet = self._decoder.feed(message)
        if packet is not None:
            self._packet(packet)

    def _packet(self, packet: Packet) -> None:
        name = packet.namespace
        if packet.type == PacketType.CONNECT:
            self.joined[name] = packet.data
        elif packet.type == PacketType.CONNECT_ERROR:
            self.refused[name] = packet.data
        elif packet.type == PacketType.DISCONNECT:
            self.left.add(name)
        elif packet.type == PacketType.EVENT:
            self.events.setdefault(name, []).append((packet.data[0], packet.data[1:]))
        elif packet.type == PacketType.ACK and packet.id is not None:
            self.acks[packet.id] = packet.data

    def join(self, namespace: str, auth: Message | None = None) -> None:
        self.send(f"40{namespace}," + json.dumps(auth or {}))

    def leave(self, namespace: str) -> None:
        self.send(f"41{namespace},")

    def emit(self, namespace: str, event: str, *args: Any) -> int:
        """Send an event asking for an ack; returns the ack's id."""
        self._next_ack += 1
        self.send(f"42{namespace},{self._next_ack}" + json.dumps([event, *args]))
        return self._next_ack

    def got(self, namespace: str, event: str) -> list[Any]:
        """The first argument of every ``event`` the namespace got, in order."""
        return [args[0] for name, args in self.events.get(namespace, []) if name == event]


def _v1_encode(channel: str, message: Message) -> bytes:
    pieces = [channel.encode()] + [
        json.dumps(message.get(name, {})).encode()
        for name in ("header", "parent_header", "metadata", "content")
    ]
    count = len(pieces) + 1
    offsets = [8 * (count + 1)]
    for piece in pieces:
        offsets.append(offsets[-1] + len(piece))
    return struct.pack(f"<{count + 1}Q", count, *offsets) + b"".join(pieces)


def _v1_decode(frame: bytes) -> Message:
    (count,) = struct.unpack_from("<Q", frame)
    offsets = struct.unpack_from(f"<{count}Q", frame, 8)
    pieces = [frame[start:end] for start, end in pairwise(offsets)]
    message: Message = {"channel": pieces[0].decode()}
    for name, piece in zip(
        ("header", "parent_header", "metadata", "content"), pieces[1:5], strict=True
    ):
        message[name] = json.loads(piece)
    message["buffers"] = pieces[5:]
    return message


def _legacy_decode(frame: str | bytes) -> Message:
    if isinstance(frame, str):
        decoded: Message = json.loads(frame)
        return decoded
    (count,) = struct.unpack_from("!I", frame)
    offsets = struct.unpack_from(f"!{count}I", frame, 4)
    ends = [*offsets[1:], len(frame)]
    message: Message = json.loads(frame[offsets[0] : ends[0]])
    message["buffers"] = [
        frame[start:end] for start, end in zip(offsets[1:], ends[1:], strict=True)
    ]
    return message


class JupyterClient(WebSocketClient):
    """
    A Jupyter kernel WebSocket client of one kernel: ``v1`` or the legacy JSON protocol, a ``session_id``,
    a token in ``Authorization``; ``received`` holds every message decoded, with its ``channel``.
    """

    def __init__(
        self, kernel_id: str, *, v1: bool = True, session_id: str = "", token: str | None = None
    ) -> None:
        self.v1 = v1
        self.session_id = session_id or uuid.uuid4().hex
        headers = {"Sec-WebSocket-Protocol": V1} if v1 else {}
        if token is not None:
            headers["Authorization"] = f"token {token}"
        query = urllib.parse.urlencode({"session_id": self.session_id})
        super().__init__(f"/api/kernels/{kernel_id}/channels?{query}", headers)
        self.received: list[Message] = []

    def message_received(self, message: str | bytes) -> None:
        super().message_received(message)
        if self.v1:
            assert isinstance(message, bytes), message
            self.received.append(_v1_decode(message))
        else:
            self.received.append(_legacy_decode(message))

    def send_message(self, channel: str, message: Message) -> None:
        if self.v1:
            self.send(_v1_encode(channel, message))
        else:
            self.send(json.dumps({**message, "channel": channel}))

    def on(self, channel: str) -> list[Message]:
        return [message for message in self.received if message["channel"] == channel]

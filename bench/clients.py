"""
Lean clients, one per target, doing the same minimal work per message: send a full Jupyter message,
receive, check the signature where the client holds the key (direct ZMQ and the forwarder), and
JSON-decode.

- :class:`DirectClient`: pyzmq DEALER (shell) and SUB (iopub) sockets with jupyter_client's Session
  for signing (the baseline: what any relay adds is measured against this).
- :class:`ForwarderClient`: the direct client's messages through :mod:`bench.forwarder`, a relay that
  does no work (the round trip's structural floor).
- :class:`RelayClient`: Engine.IO/socket.io frames spoken directly over :mod:`bench.wsclient`
  (``42/shell/<id>,["msg",{...}]``), one Engine.IO connection multiplexing the namespaces.
- :class:`JupyterServerClient`: :mod:`bench.wsclient` on ``/api/kernels/<id>/channels``, in the legacy
  protocol (Jupyter Server, as the bench has always measured it) or in ``v1.kernel.websocket.jupyter.org``
  (the relay's Jupyter front, as JupyterLab speaks it).
"""

from __future__ import annotations

import hmac
import json
import re
import socket
import struct
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import pairwise
from typing import Any, Protocol

import requests
import zmq
from jupyter_client.session import Session

from bench import forwarder
from bench.processes import HOST
from bench.wsclient import BINARY, TEXT, WebSocket

# The C scanner from an offset: no copy of a large frame's JSON part before parsing it.
_decode_json = json.JSONDecoder().raw_decode

DELIMITER = b"<IDS|MSG>"

_FORWARDED = re.compile(
    r'^kernel_relay_messages_total\{direction="to_client"\} (\S+)$', re.MULTILINE
)


@dataclass
class Msg:
    """One received Jupyter message."""

    channel: str
    header: dict[str, Any]
    parent_header: dict[str, Any]
    content: dict[str, Any]
    buffers: list[bytes] = field(default_factory=list)

    @property
    def msg_type(self) -> str:
        return str(self.header.get("msg_type"))

    @property
    def parent_id(self) -> str | None:
        value = self.parent_header.get("msg_id")
        return value if isinstance(value, str) else None


def new_message(msg_type: str, content: dict[str, Any], session_id: str) -> dict[str, Any]:
    """A complete Jupyter message (every client sends the same full header)."""
    return {
        "header": {
            "msg_id": uuid.uuid4().hex,
            "msg_type": msg_type,
            "session": session_id,
            "username": "bench",
            "date": datetime.now(UTC).isoformat(),
            "version": "5.3",
        },
        "parent_header": {},
        "metadata": {},
        "content": content,
    }


def session_for(connection_info: dict[str, Any]) -> Session:
    """A jupyter_client Session with a kernel's key and a new session id, to sign and check messages."""
    key = connection_info["key"]
    return Session(
        key=key.encode() if isinstance(key, str) else key,
        signature_scheme=connection_info.get("signature_scheme", "hmac-sha256"),
        session=uuid.uuid4().hex,
    )


def signed_frames(
    session: Session, msg_type: str, content: dict[str, Any]
) -> tuple[str, list[bytes]]:
    """A new request's msg_id and its ZMQ frames (delimiter, signature, the four JSON parts)."""
    message = new_message(msg_type, content, session.session)
    parts = [
        json.dumps(message[name]).encode()
        for name in ("header", "parent_header", "metadata", "content")
    ]
    msg_id: str = message["header"]["msg_id"]
    return msg_id, [DELIMITER, session.sign(parts), *parts]


def decode_frames(session: Session, channel: str, frames: list[bytes]) -> Msg:
    """A kernel message from its ZMQ frames, after checking its signature."""
    split = frames.index(DELIMITER)
    raw = frames[split + 2 : split + 6]
    if not hmac.compare_digest(frames[split + 1], session.sign(raw)):
        raise ValueError("bad signature")
    header, parent, _metadata, content = (json.loads(part) for part in raw)
    return Msg(channel, header, parent, content, frames[split + 6 :])


class BenchClient(Protocol):
    name: str

    def send(self, channel: str, msg_type: str, content: dict[str, Any]) -> str:
        """Send a request; returns its msg_id."""
        ...

    def recv(self, timeout: float) -> Msg | None:
        """The next message on any joined channel, or None after ``timeout`` seconds."""
        ...

    def close(self) -> None: ...


class DirectClient:
    name = "direct"

    def __init__(self, connection_info: dict[str, Any], channels: tuple[str, ...]) -> None:
        self.session = session_for(connection_info)
        self.context = zmq.Context()
        self.poller = zmq.Poller()
        self.sockets: dict[str, zmq.Socket[bytes]] = {}
        self.channel_of: dict[zmq.Socket[bytes], str] = {}
        ip = connection_info["ip"]
        for channel in channels:
            kind = zmq.SUB if channel == "iopub" else zmq.DEALER
            sock = self.context.socket(kind)
            sock.linger = 0
            if kind == zmq.SUB:
                sock.setsockopt(zmq.SUBSCRIBE, b"")
                sock.rcvhwm = 0
            else:
                sock.identity = uuid.uuid4().hex.encode()
            sock.connect(f"tcp://{ip}:{connection_info[f'{channel}_port']}")
            self.sockets[channel] = sock
            self.channel_of[sock] = channel
            self.poller.register(sock, zmq.POLLIN)
        self._ready: list[Msg] = []

    def send(self, channel: str, msg_type: str, content: dict[str, Any]) -> str:
        msg_id, frames = signed_frames(self.session, msg_type, content)
        self.sockets[channel].send_multipart(frames)
        return msg_id

    def _decode(self, channel: str, frames: list[bytes]) -> Msg:
        return decode_frames(self.session, channel, frames)

    def recv(self, timeout: float) -> Msg | None:
        if self._ready:
            return self._ready.pop()
        events = self.poller.poll(timeout * 1000)
        if not events:
            return None
        for sock, _ in events:
            self._ready.insert(0, self._decode(self.channel_of[sock], sock.recv_multipart()))
        return self._ready.pop()

    def close(self) -> None:
        for sock in self.sockets.values():
            sock.close(0)
        self.context.term()


class ForwarderClient:
    """
    A direct client's signed messages, sent through :mod:`bench.forwarder` (the structural floor): shell
    only, for round trips; with ``iopub``, the kernel's iopub messages come too (``forwarder_iopub``).
    """

    name = "forwarder"

    def __init__(
        self, port: int, connection_info: dict[str, Any], timeout: float = 60, iopub: bool = False
    ) -> None:
        self.iopub = iopub
        if iopub:
            self.name = "forwarder_iopub"
        self.session = session_for(connection_info)
        self.sock = socket.create_connection((HOST, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._pending = b""

    def send(self, channel: str, msg_type: str, content: dict[str, Any]) -> str:
        if channel != "shell":
            raise ValueError(f"the forwarder only carries shell messages, not {channel}")
        msg_id, frames = signed_frames(self.session, msg_type, content)
        self.sock.sendall(forwarder.pack(frames))
        return msg_id

    def recv(self, timeout: float) -> Msg | None:
        while (message := forwarder.unpack(self._pending)) is None:
            self.sock.settimeout(timeout)
            try:
                data = self.sock.recv(1 << 16)
            except TimeoutError:
                return None
            if not data:
                raise ConnectionError("the forwarder closed the connection")
            self._pending += data
        frames, used = message
        self._pending = self._pending[used:]
        channel = frames.pop(0).decode() if self.iopub else "shell"
        return decode_frames(self.session, channel, frames)

    def close(self) -> None:
        self.sock.close()


class RelayClient:
    name = "relay"

    def __init__(
        self, port: int, kernel_id: str, channels: tuple[str, ...], timeout: float = 60
    ) -> None:
        self.session_id = uuid.uuid4().hex
        self.kernel_id = kernel_id
        self.port = port
        #: socket.io events received, of any channel: with :meth:`forwarded`, tells where a loss happened.
        self.events = 0
        self.ws = WebSocket(f"ws://{HOST}:{port}/socket.io/?EIO=4&transport=websocket", timeout)
        opening = self.ws.recv(timeout)
        if opening is None or not opening[1].startswith(b"0"):
            raise RuntimeError(f"unexpected Engine.IO open packet {opening!r}")
        self.channel_by_ns = {f"/{channel}/{kernel_id}": channel for channel in channels}
        for namespace in self.channel_by_ns:
            self.ws.send_text(f"40{namespace},")
        joined: set[str] = set()
        deadline = time.monotonic() + timeout
        while joined != set(self.channel_by_ns):
            if time.monotonic() > deadline:
                raise RuntimeError("socket.io namespaces not joined in time")
            frame = self.ws.recv(timeout)
            text = bytes(frame[1]).decode() if frame is not None else ""
            if text == "2":
                self.ws.send_text("3")
            elif text.startswith("40/"):
                joined.add(text[2 : text.index(",")])
            elif text.startswith("44/"):
                raise RuntimeError(f"namespace refused: {text}")

    def send(self, channel: str, msg_type: str, content: dict[str, Any]) -> str:
        message = new_message(msg_type, content, self.session_id)
        self.ws.send_text(f"42/{channel}/{self.kernel_id}," + json.dumps(["msg", message]))
        msg_id: str = message["header"]["msg_id"]
        return msg_id

    def recv(self, timeout: float) -> Msg | None:
        while True:
            frame = self.ws.recv(timeout)
            if frame is None:
                return None
            opcode, data = frame
            if opcode != TEXT:
                continue
            if data == b"2":
                self.ws.send_text("3")
                continue
            if data[:2] == b"42":
                return self._event(data, 2, [])
            if data[:2] == b"45":
                dash = data.index(b"-")
                count = int(data[2:dash])
                buffers: list[bytes | bytearray] = []
                while len(buffers) < count:
                    attachment = self.ws.recv(None)
                    if attachment is not None:
                        buffers.append(attachment[1])
                return self._event(data, dash + 1, buffers)

    def forwarded(self) -> int:
        """
        The relay's count of kernel messages it sent on to clients (from ``/metrics``). With this one
        client on the relay, any difference from :attr:`events` over a run was lost inside the relay.
        """
        text = requests.get(f"http://{HOST}:{self.port}/metrics", timeout=10).text
        match = _FORWARDED.search(text)
        if match is None:
            raise RuntimeError("the relay's /metrics has no kernel_relay_messages_total to_client")
        return int(float(match.group(1)))

    def _event(self, data: bytes | bytearray, start: int, buffers: list[Any]) -> Msg | None:
        self.events += 1
        comma = data.index(b",", start)
        channel = self.channel_by_ns.get(data[start:comma].decode())
        payload = _decode_json(data.decode("utf-8"), comma + 1)[0]
        if channel is None or payload[0] != "msg":
            return None
        message = payload[1]
        return Msg(
            channel,
            message["header"],
            message["parent_header"],
            message["content"],
            buffers,
        )

    def close(self) -> None:
        self.ws.close()


V1 = "v1.kernel.websocket.jupyter.org"
_V1_PARTS = ("header", "parent_header", "metadata", "content")


class JupyterServerClient:
    name = "jupyter_server"

    def __init__(self, url: str, timeout: float = 60, v1: bool = False) -> None:
        self.session_id = uuid.uuid4().hex
        self.v1 = v1
        self.ws = WebSocket(url, timeout, V1 if v1 else None)

    def send(self, channel: str, msg_type: str, content: dict[str, Any]) -> str:
        message = new_message(msg_type, content, self.session_id)
        if self.v1:
            pieces = [channel.encode(), *(json.dumps(message[name]).encode() for name in _V1_PARTS)]
            offsets = [8 * (len(pieces) + 2)]
            for piece in pieces:
                offsets.append(offsets[-1] + len(piece))
            table = struct.pack(f"<{len(offsets) + 1}Q", len(offsets), *offsets)
            self.ws.send_binary(table + b"".join(pieces))
        else:
            message["channel"] = channel
            self.ws.send_text(json.dumps(message))
        msg_id: str = message["header"]["msg_id"]
        return msg_id

    def _v1(self, data: bytes | bytearray) -> Msg:
        (count,) = struct.unpack_from("<Q", data)
        offsets = struct.unpack_from(f"<{count}Q", data, 8)
        view = memoryview(data)
        pieces = [view[a:b] for a, b in pairwise(offsets)]
        header, parent, _, content = (json.loads(bytes(p)) for p in pieces[1:5])
        return Msg(bytes(pieces[0]).decode(), header, parent, content, list(pieces[5:]))

    def recv(self, timeout: float) -> Msg | None:
        while True:
            frame = self.ws.recv(timeout)
            if frame is None:
                return None
            opcode, data = frame
            if self.v1 and opcode == BINARY:
                return self._v1(data)
            if opcode == TEXT:
                message = json.loads(data)
                buffers: list[bytes | bytearray] = []
            elif opcode == BINARY:
                (count,) = struct.unpack_from("!I", data)
                offsets = [*struct.unpack_from(f"!{count}I", data, 4), len(data)]
                message = json.loads(data[offsets[0] : offsets[1]])
                buffers = [data[offsets[i] : offsets[i + 1]] for i in range(1, count)]
            else:
                continue
            return Msg(
                message.get("channel", ""),
                message["header"],
                message["parent_header"],
                message["content"],
                buffers,
            )

    def close(self) -> None:
        self.ws.close()

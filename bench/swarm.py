"""
Many socket.io clients in one process: a bare asyncio WebSocket client (RFC 6455 framing by hand,
no per-client thread) speaking Engine.IO v4 / socket.io v5 text frames. Used for fan-out and for the
idle-connection test, where hundreds or thousands of clients must share one bench process.

Each client answers Engine.IO pings, joins its namespaces, and counts the iopub events it receives. With
``channels`` (a kernel's ``/api/kernels/<id>/channels`` path) a client is one of the relay's Jupyter kernel
WebSocket in the v1 protocol instead: joined once upgraded, each binary frame an event.
"""

from __future__ import annotations

import asyncio
import base64
import os
import re
import struct
from collections.abc import Callable

from bench.processes import HOST

STREAM = re.compile(rb'"msg_type": ?"stream"')
IDLE = re.compile(rb'"execution_state": ?"idle"')


def _frame(payload: bytes, opcode: int = 1) -> bytes:
    mask = os.urandom(4)
    length = len(payload)
    if length < 126:
        head = struct.pack("!BB", 0x80 | opcode, 0x80 | length)
    elif length < 1 << 16:
        head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, length)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, length)
    masked = bytes(b ^ mask[i & 3] for i, b in enumerate(payload))
    return head + mask + masked


class SwarmClient(asyncio.Protocol):
    """One Engine.IO WebSocket connection joined to ``namespaces``."""

    def __init__(
        self,
        namespaces: list[str],
        on_event: Callable[[SwarmClient, bytes], None],
        channels: str | None = None,
    ) -> None:
        self.namespaces = namespaces
        self.channels = channels
        self.on_event = on_event
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.upgraded = False
        self.joined: set[str] = set()
        self.all_joined = asyncio.get_running_loop().create_future()
        self.pings = 0
        self.closed_by_server = False
        self.closing = False
        self.lost = asyncio.get_running_loop().create_future()
        self.streams = 0
        self.done = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        key = base64.b64encode(os.urandom(16)).decode()
        if self.channels is None:
            target, offer = "/socket.io/?EIO=4&transport=websocket", ""
        else:
            target = f"{self.channels}?session_id={os.urandom(8).hex()}"
            offer = "Sec-WebSocket-Protocol: v1.kernel.websocket.jupyter.org\r\n"
        transport.write(
            (
                f"GET {target} HTTP/1.1\r\n"
                f"Host: {HOST}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{offer}\r\n"
            ).encode()
        )

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closing:
            self.closed_by_server = True
        if not self.all_joined.done():
            self.all_joined.set_exception(ConnectionError("connection lost before joining"))
        if not self.lost.done():
            self.lost.set_result(None)

    def send_text(self, text: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(_frame(text))

    def close(self) -> None:
        self.closing = True
        if self.transport is not None:
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer
        buffer += data
        if not self.upgraded:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            if not buffer.startswith(b"HTTP/1.1 101"):
                self.close()
                return
            del buffer[: end + 4]
            self.upgraded = True
            if self.channels is not None and not self.all_joined.done():
                self.all_joined.set_result(None)
        position = 0
        size = len(buffer)
        while size - position >= 2:
            first, second = buffer[position], buffer[position + 1]
            length = second & 0x7F
            start = position + 2
            if length == 126:
                if size - start < 2:
                    break
                (length,) = struct.unpack_from("!H", buffer, start)
                start += 2
            elif length == 127:
                if size - start < 8:
                    break
                (length,) = struct.unpack_from("!Q", buffer, start)
                start += 8
            if size - start < length:
                break
            payload = bytes(buffer[start : start + length])
            position = start + length
            self._message(first & 0x0F, payload)
        del buffer[:position]

    def _message(self, opcode: int, payload: bytes) -> None:
        if opcode == 9:
            self.transport.write(_frame(payload, 10)) if self.transport else None
            return
        if opcode == 8:
            self.close()
            self.closed_by_server = True
            return
        if opcode == 2 and self.channels is not None:
            self.on_event(self, payload)
            return
        if opcode != 1:
            return
        if payload == b"2":
            self.pings += 1
            self.send_text(b"3")
        elif payload[:2] == b"42":
            self.on_event(self, payload)
        elif payload[:1] == b"0" and payload[:2] != b"0/":
            for namespace in self.namespaces:
                self.send_text(f"40{namespace},".encode())
        elif payload[:3] == b"40/":
            self.joined.add(payload[2 : payload.index(b",")].decode())
            if len(self.joined) == len(self.namespaces) and not self.all_joined.done():
                self.all_joined.set_result(None)
        elif payload[:3] == b"44/" and not self.all_joined.done():
            self.all_joined.set_exception(ConnectionError(payload.decode()))


async def connect_swarm(
    port: int,
    count: int,
    namespaces: list[str],
    on_event: Callable[[SwarmClient, bytes], None],
    parallel: int = 50,
    timeout: float = 120.0,
    channels: str | None = None,
) -> list[SwarmClient]:
    """Open ``count`` clients (at most ``parallel`` handshakes at once) and wait until all joined."""
    loop = asyncio.get_running_loop()
    gate = asyncio.Semaphore(parallel)

    async def one() -> SwarmClient:
        async with gate:
            _, client = await loop.create_connection(
                lambda: SwarmClient(namespaces, on_event, channels), HOST, port
            )
            await asyncio.wait_for(asyncio.shield(client.all_joined), timeout)
            return client

    return list(await asyncio.gather(*(one() for _ in range(count))))


async def close_swarm(clients: list[SwarmClient]) -> None:
    for client in clients:
        client.close()
    await asyncio.gather(*(asyncio.wait_for(c.lost, 10) for c in clients), return_exceptions=True)

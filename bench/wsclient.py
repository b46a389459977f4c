"""
A minimal blocking WebSocket client for the bench: the least client-side work a WebSocket target can get.

websocket-client reads a frame 16 KB at a time in Python and joins the pieces, which for a 10 MB message
costs the client more than the relay spends on it, and the direct-ZMQ baseline pays nothing like it (libzmq
reads in C). Here a frame's payload is read with ``recv_into`` straight into one buffer of its announced
size, and small frames are cut from one buffered read. Client frames use an all-zero mask: legal (the mask only has to be present), and it makes masking a
no-op instead of a byte-by-byte XOR in Python. Both WebSocket targets (the relay and Jupyter Server) use it.
"""

from __future__ import annotations

import base64
import os
import socket
import struct
from urllib.parse import urlsplit

TEXT = 0x1
BINARY = 0x2
CLOSE = 0x8
PING = 0x9
PONG = 0xA
_ZERO_MASK = b"\x00\x00\x00\x00"
#: Reads below this size are buffered; larger payloads are read straight into their own buffer.
_CHUNK = 256 * 1024


class WebSocketClosed(ConnectionError):
    """The server closed the connection or sent a close frame."""


class WebSocket:
    """One client connection; ``recv`` returns ``(opcode, payload)`` of each whole data message."""

    def __init__(self, url: str, timeout: float = 60.0, subprotocol: str | None = None) -> None:
        parts = urlsplit(url)
        self._timeout = timeout
        self.sock = socket.create_connection((parts.hostname, parts.port or 80), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        key = base64.b64encode(os.urandom(16)).decode("ascii")
        offered = f"Sec-WebSocket-Protocol: {subprotocol}\r\n" if subprotocol else ""
        self.sock.sendall(
            (
                f"GET {path} HTTP/1.1\r\nHost: {parts.netloc}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                f"{offered}\r\n"
            ).encode("ascii")
        )
        response = b""
        while b"\r\n\r\n" not in response:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise WebSocketClosed("connection closed during the handshake")
            response += chunk
        head, _, self._pending = response.partition(b"\r\n\r\n")
        self._offset = 0
        if not head.startswith(b"HTTP/1.1 101"):
            raise ConnectionError(f"WebSocket handshake refused: {head.splitlines()[0]!r}")

    def send_text(self, text: str) -> None:
        self._send(TEXT, text.encode("utf-8"))

    def send_binary(self, data: bytes) -> None:
        self._send(BINARY, data)

    def _send(self, opcode: int, payload: bytes) -> None:
        size = len(payload)
        if size < 126:
            header = struct.pack("!BB", 0x80 | opcode, 0x80 | size)
        elif size < 1 << 16:
            header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, size)
        else:
            header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, size)
        self.sock.sendall(header + _ZERO_MASK + payload)

    def recv(self, timeout: float | None = None) -> tuple[int, bytes | bytearray] | None:
        """The next data message, or None when nothing starts arriving within ``timeout``."""
        fragments: list[bytes | bytearray] = []
        first_opcode = 0
        while True:
            try:
                self.sock.settimeout(timeout if not fragments else self._timeout)
                head = self._read(2)
            except TimeoutError:
                return None
            # A frame has begun: read the rest of it whatever the caller's timeout.
            self.sock.settimeout(self._timeout)
            fin, opcode, size = head[0] & 0x80, head[0] & 0x0F, head[1] & 0x7F
            if size == 126:
                (size,) = struct.unpack("!H", self._read(2))
            elif size == 127:
                (size,) = struct.unpack("!Q", self._read(8))
            payload = self._read(size)
            if opcode == PING:
                self._send(PONG, bytes(payload))
                continue
            if opcode == CLOSE:
                raise WebSocketClosed("the server closed the WebSocket")
            if opcode:
                first_opcode = opcode
            fragments.append(payload)
            if fin:
                return first_opcode, fragments[0] if len(fragments) == 1 else b"".join(fragments)

    def _read(self, size: int) -> bytes | bytearray:
        available = len(self._pending) - self._offset
        if available >= size:
            start = self._offset
            self._offset += size
            return self._pending[start : start + size]
        if size <= _CHUNK:
            # Small reads (frame headers, most messages) come from one buffered recv, not one each.
            chunks = [self._pending[self._offset :]]
            have = available
            while have < size:
                chunk = self.sock.recv(_CHUNK)
                if not chunk:
                    raise WebSocketClosed("connection closed mid-frame")
                chunks.append(chunk)
                have += len(chunk)
            self._pending = b"".join(chunks)
            self._offset = size
            return self._pending[:size]
        buffer = bytearray(size)
        view = memoryview(buffer)
        view[:available] = self._pending[self._offset :]
        filled = available
        self._pending, self._offset = b"", 0
        while filled < size:
            got = self.sock.recv_into(view[filled:])
            if not got:
                raise WebSocketClosed("connection closed mid-frame")
            filled += got
        return buffer

    def close(self) -> None:
        try:
            self._send(CLOSE, struct.pack("!H", 1000))
        except OSError:
            pass
        self.sock.close()

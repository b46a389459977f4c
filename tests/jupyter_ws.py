"""
A test client of the Jupyter kernel WebSocket, framing with Jupyter Server's own (de)serializers (the
reference implementation, from the ``jupyter_server`` package) so the relay's framing is checked against it,
not against itself.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
import websocket

V1 = "v1.kernel.websocket.jupyter.org"

Message = dict[str, Any]


def _reference() -> Any:
    return pytest.importorskip("jupyter_server.services.kernels.connection.base")


def new_message(msg_type: str, content: dict[str, Any], session: str) -> Message:
    return {
        "header": {
            "msg_id": uuid.uuid4().hex,
            "msg_type": msg_type,
            "session": session,
            "username": "test",
            "date": "2026-01-01T00:00:00.000000Z",
            "version": "5.3",
        },
        "parent_header": {},
        "metadata": {},
        "content": content,
    }


class JupyterWS:
    """One channels WebSocket, v1 or legacy; messages received are kept in ``received`` in order."""

    def __init__(
        self,
        base_url: str,
        kernel_id: str,
        *,
        protocol: str = "v1",
        token: str | None = None,
        session_id: str | None = None,
        token_in_query: bool = False,
    ) -> None:
        self.protocol = protocol
        self.session_id = session_id or uuid.uuid4().hex
        url = f"{base_url.replace('http', 'ws', 1)}/api/kernels/{kernel_id}/channels?session_id={self.session_id}"
        headers = []
        if token and token_in_query:
            url += f"&token={token}"
        elif token:
            headers.append(f"Authorization: token {token}")
        self.ws = websocket.create_connection(
            url,
            subprotocols=[V1] if protocol == "v1" else None,
            header=headers,
            timeout=30,
        )
        self.received: list[Message] = []

    @property
    def subprotocol(self) -> str | None:
        value: str | None = self.ws.getsubprotocol()
        return value

    def send(
        self,
        channel: str,
        msg_type: str,
        content: dict[str, Any],
        buffers: list[bytes] = (),  # type: ignore[assignment]
    ) -> str:
        message = new_message(msg_type, content, self.session_id)
        self.send_message(channel, message, list(buffers))
        msg_id: str = message["header"]["msg_id"]
        return msg_id

    def send_message(self, channel: str, message: Message, buffers: list[bytes]) -> None:
        reference = _reference()
        if self.protocol == "v1":
            parts = [
                json.dumps(message[name]).encode()
                for name in ("header", "parent_header", "metadata", "content")
            ]
            self.ws.send_binary(reference.serialize_msg_to_ws_v1([*parts, *buffers], channel))
        elif buffers:
            self.ws.send_binary(
                reference.serialize_binary_message(
                    {**message, "channel": channel, "buffers": buffers}
                )
            )
        else:
            self.ws.send(json.dumps({**message, "channel": channel}))

    def recv(self, timeout: float = 30.0) -> Message | None:
        """The next message (with ``channel`` and ``buffers``), or None at the timeout."""
        self.ws.settimeout(timeout)
        try:
            # Control frames too: the relay's keep-alive pings would otherwise keep one recv_data() from
            # ever timing out, and a wait_for(timeout) would outlast its timeout.
            opcode, data = self.ws.recv_data(control_frame=True)
        except websocket.WebSocketTimeoutException:
            return None
        if opcode in (websocket.ABNF.OPCODE_PING, websocket.ABNF.OPCODE_PONG):
            return None
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            raise ConnectionError(f"closed: {data!r}")
        message = self._decode(opcode, data)
        self.received.append(message)
        return message

    def _decode(self, opcode: int, data: bytes) -> Message:
        reference = _reference()
        if self.protocol == "v1":
            channel, parts = reference.deserialize_msg_from_ws_v1(data)
            names = ("header", "parent_header", "metadata", "content")
            message = {name: json.loads(part) for name, part in zip(names, parts[:4], strict=True)}
            message["buffers"] = [bytes(b) for b in parts[4:]]
            message["channel"] = channel
            return message
        if opcode == websocket.ABNF.OPCODE_BINARY:
            decoded: Message = reference.deserialize_binary_message(data)
            decoded["buffers"] = [bytes(b) for b in decoded["buffers"]]
            return decoded
        text: Message = json.loads(data)
        text.setdefault("buffers", [])
        return text

    def wait_for(self, found: Callable[[Message], bool], timeout: float = 30.0) -> Message:
        for message in self.received:
            if found(message):
                return message
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            message = self.recv(left)
            if message is not None and found(message):
                return message
        raise AssertionError(f"no such message within {timeout}s; received {len(self.received)}")

    def reply_to(self, msg_id: str, timeout: float = 30.0) -> Message:
        return self.wait_for(
            lambda m: m["channel"] != "iopub" and m["parent_header"].get("msg_id") == msg_id,
            timeout,
        )

    def idle_after(self, msg_id: str, timeout: float = 30.0) -> Message:
        return self.wait_for(
            lambda m: (
                m["channel"] == "iopub"
                and m["header"]["msg_type"] == "status"
                and m["parent_header"].get("msg_id") == msg_id
                and m["content"]["execution_state"] == "idle"
            ),
            timeout,
        )

    def execute(self, code: str, timeout: float = 30.0) -> tuple[str, Message]:
        """Run ``code``; its msg_id and execute_reply, once the kernel is idle again."""
        msg_id = self.send("shell", "execute_request", {"code": code, "silent": False})
        reply = self.reply_to(msg_id, timeout)
        self.idle_after(msg_id, timeout)
        return msg_id, reply

    def iopub_for(self, msg_id: str, msg_type: str) -> list[Message]:
        return [
            m
            for m in self.received
            if m["channel"] == "iopub"
            and m["header"]["msg_type"] == msg_type
            and m["parent_header"].get("msg_id") == msg_id
        ]

    def close(self) -> None:
        try:
            self.ws.close()
        except OSError:
            pass

"""A small synchronous Jupyter client over the relay, built on python-socketio's real client."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any

import socketio

from bench.sio_order import in_arrival_order

Message = dict[str, Any]
CHANNELS = ("shell", "stdin", "iopub", "control")


class RelayKernelClient:
    """
    One socket.io client joined to some of a kernel's channel namespaces; collects what each receives.

    ``transports`` is passed to python-socketio: ``["polling", "websocket"]`` (polling, then upgrade) or
    ``["websocket"]``.
    """

    def __init__(
        self,
        url: str,
        kernel_id: str,
        channels: Iterable[str] = CHANNELS,
        transports: list[str] | None = None,
        auth: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.kernel_id = kernel_id
        self.channels = tuple(channels)
        self.session = uuid.uuid4().hex
        self.received: dict[str, list[Message]] = {channel: [] for channel in CHANNELS}
        self.errors: list[Any] = []
        self.disconnected: list[str] = []
        self._changed = threading.Condition()
        self.sio = in_arrival_order(socketio.Client(reconnection=False))
        for channel in self.channels:
            namespace = self.namespace(channel)
            self.sio.on("msg", self._collector(channel), namespace=namespace)
            self.sio.on("error", self._error_collector, namespace=namespace)
            self.sio.on("disconnect", self._disconnect_collector(channel), namespace=namespace)
        self.sio.connect(
            url,
            namespaces=[self.namespace(channel) for channel in self.channels],
            transports=transports or ["polling", "websocket"],
            wait_timeout=10,
            auth=auth,
            headers=headers or {},
        )

    def namespace(self, channel: str) -> str:
        return f"/{channel}/{self.kernel_id}"

    def _collector(self, channel: str) -> Callable[[Message], None]:
        def collect(message: Message) -> None:
            with self._changed:
                self.received[channel].append(message)
                self._changed.notify_all()

        return collect

    def _error_collector(self, error: Any) -> None:
        with self._changed:
            self.errors.append(error)
            self._changed.notify_all()

    def _disconnect_collector(self, channel: str) -> Callable[..., None]:
        def collect(*args: Any) -> None:
            with self._changed:
                self.disconnected.append(channel)
                self._changed.notify_all()

        return collect

    def send(
        self,
        channel: str,
        msg_type: str,
        content: dict[str, Any] | None = None,
        buffers: list[bytes] | None = None,
    ) -> str:
        """Send a request and return its msg_id."""
        msg_id = uuid.uuid4().hex
        message: Message = {
            "header": {"msg_id": msg_id, "msg_type": msg_type, "session": self.session},
            "content": content or {},
        }
        if buffers:
            message["buffers"] = buffers
        self.sio.emit("msg", message, namespace=self.namespace(channel))
        return msg_id

    def wait_for(
        self, predicate: Callable[[], Any], timeout: float = 30.0, what: str = "a condition"
    ) -> Any:
        """Wait until ``predicate()`` is truthy and return its value, or fail after ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                value = predicate()
                if value:
                    return value
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(
                        f"timed out waiting for {what}; received: "
                        + ", ".join(
                            f"{channel}={[m['header'].get('msg_type') for m in messages]}"
                            for channel, messages in self.received.items()
                        )
                        + f"; errors={self.errors}"
                    )
                self._changed.wait(remaining)

    def reply_to(self, channel: str, msg_id: str, timeout: float = 30.0) -> Message:
        def find() -> Message | None:
            for message in self.received[channel]:
                if message["parent_header"].get("msg_id") == msg_id:
                    return message
            return None

        return self.wait_for(find, timeout, f"the {channel} reply to {msg_id}")  # type: ignore[no-any-return]

    def iopub_for(self, msg_id: str, msg_type: str | None = None) -> list[Message]:
        return [
            message
            for message in self.received["iopub"]
            if message["parent_header"].get("msg_id") == msg_id
            and (msg_type is None or message["header"]["msg_type"] == msg_type)
        ]

    def wait_idle(self, msg_id: str, timeout: float = 30.0) -> None:
        """Wait for the iopub ``status: idle`` that closes the request ``msg_id``."""
        self.wait_for(
            lambda: any(
                message["content"].get("execution_state") == "idle"
                for message in self.iopub_for(msg_id, "status")
            ),
            timeout,
            f"idle after {msg_id}",
        )

    def execute(self, code: str, timeout: float = 30.0, **content: Any) -> tuple[str, Message]:
        """Run ``code``; return its msg_id and execute_reply once the kernel is idle again."""
        msg_id = self.send(
            "shell",
            "execute_request",
            {
                "code": code,
                "silent": False,
                "store_history": False,
                "allow_stdin": False,
                **content,
            },
        )
        reply = self.reply_to("shell", msg_id, timeout)
        if "iopub" in self.channels:
            self.wait_idle(msg_id, timeout)
        return msg_id, reply

    def start_sleeping_cell(self, seconds: int = 120) -> str:
        """
        Start a cell that sleeps and return its msg_id once the kernel runs its user code.

        An interrupt that lands before ipykernel reaches the user code (``execute_input`` is published
        first) can be swallowed, so callers wait for the cell's own marker on iopub instead.
        """
        msg_id = self.send(
            "shell",
            "execute_request",
            {"code": f"import time\nprint('sleeping', flush=True)\ntime.sleep({seconds})"},
        )
        self.wait_for(
            lambda: any(
                "sleeping" in m["content"]["text"] for m in self.iopub_for(msg_id, "stream")
            ),
            what="the cell sleeping",
        )
        return msg_id

    def close(self) -> None:
        if self.sio.connected:
            self.sio.disconnect()

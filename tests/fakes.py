"""
Fakes shared by the in-process tests: a kernel and a registry the relay core, the heartbeat monitor and the
culler can drive, and a client of the core that records what it is sent. Each does what the real thing does
at its seam, no more, so a test reads as the behaviour it checks.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, succeed

from kernel_relay.kernels import KernelMessage, UnknownKernel
from kernel_relay.relay.payload import Payload


def kernel_message(
    msg_type: str, channel: str, parent: str = "", content: dict[str, Any] | None = None
) -> KernelMessage:
    """A message as a kernel would send it (its JSON parts as received), in reply to ``parent`` (a msg_id)."""
    parts = (
        {"msg_id": f"{msg_type}-1", "msg_type": msg_type},
        {"msg_id": parent} if parent else {},
        {},
        content if content is not None else {},
    )
    raw = tuple(json.dumps(part).encode() for part in parts)
    return KernelMessage(*parts, channel=channel, raw_parts=raw)  # type: ignore[arg-type]


class FakeKernelClient:
    """One client's line to a fake kernel: records what is sent, delivers what the kernel answers."""

    def __init__(self, identity: bytes, deliver: Callable[[KernelMessage], None]) -> None:
        self.identity = identity
        self.deliver = deliver
        self.sent: list[tuple[str, dict[str, Any]]] = []
        self.closed = False
        self.last_sent_bytes = 0

    def send(self, channel: str, message: dict[str, Any], buffers: list[bytes]) -> str:
        self.sent.append((channel, message))
        self.last_sent_bytes = 100
        return str(message.get("header", {}).get("msg_id") or f"sent-{len(self.sent)}")

    def close(self) -> None:
        self.closed = True


class FakeKernel:
    """A running kernel: its iopub listeners, the client lines opened to it, its state and activity."""

    def __init__(self, kernel_id: str, state: str = "idle", last_activity: float = 0.0) -> None:
        self.id = kernel_id
        self.execution_state = state
        self.last_activity = last_activity
        self.reachable = True
        self.iopub_listeners: list[Callable[[KernelMessage], None]] = []
        self.clients: list[FakeKernelClient] = []

    def add_iopub_listener(self, listener: Callable[[KernelMessage], None]) -> None:
        self.iopub_listeners.append(listener)

    def open_client(
        self, identity: bytes, deliver: Callable[[KernelMessage], None]
    ) -> FakeKernelClient:
        client = FakeKernelClient(identity, deliver)
        self.clients.append(client)
        return client

    def publish(self, message: KernelMessage) -> None:
        """The kernel sends ``message`` on iopub."""
        for listener in list(self.iopub_listeners):
            listener(message)


class FakeRegistry:
    """The kernels the relay runs, and the observers told when they start and stop."""

    def __init__(self, *kernels: FakeKernel) -> None:
        self._kernels = {kernel.id: kernel for kernel in kernels}
        self.observers: list[Any] = []
        self.shut_down: list[str] = []

    def __len__(self) -> int:
        return len(self._kernels)

    def kernels(self) -> list[FakeKernel]:
        return list(self._kernels.values())

    def get(self, kernel_id: str) -> FakeKernel:
        try:
            return self._kernels[kernel_id]
        except KeyError:
            raise UnknownKernel(kernel_id) from None

    def add_observer(self, observer: Any) -> None:
        self.observers.append(observer)

    def remove_observer(self, observer: Any) -> None:
        self.observers.remove(observer)

    def start(self, kernel: FakeKernel) -> None:
        """A kernel is ready: every observer hears of it."""
        self._kernels[kernel.id] = kernel
        for observer in list(self.observers):
            observer.kernel_started(kernel)

    def stop(self, kernel_id: str, reason: str = "shut down") -> None:
        """A kernel stopped or died: every observer hears of it."""
        kernel = self._kernels.pop(kernel_id)
        for observer in list(self.observers):
            observer.kernel_stopped(kernel, reason)

    def shutdown(self, kernel_id: str) -> Deferred[None]:
        self.shut_down.append(kernel_id)
        del self._kernels[kernel_id]
        return succeed(None)


class RecordingClient:
    """A client of the relay core that records every message, event and disconnect it is given."""

    def __init__(self, client_id: str, address: str = "127.0.0.1") -> None:
        self.client_id = client_id
        self.address = address
        self.backlog = 0
        self.delivered: list[tuple[str, str, Payload]] = []
        self.told: list[tuple[str, str, str, dict[str, Any]]] = []
        self.let_go_of: list[tuple[str, str, str]] = []

    def deliver(self, kernel_id: str, channel: str, message: Payload) -> None:
        self.delivered.append((kernel_id, channel, message))

    def tell(self, kernel_id: str, channel: str, event: str, details: dict[str, Any]) -> None:
        self.told.append((kernel_id, channel, event, details))

    def let_go(self, kernel_id: str, channel: str, reason: str) -> None:
        self.let_go_of.append((kernel_id, channel, reason))

    def events(self, event: str) -> list[dict[str, Any]]:
        return [details for _, _, name, details in self.told if name == event]

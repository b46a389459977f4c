"""
Fakes shared by the in-process tests: a kernel and a registry the relay core, the heartbeat monitor and the
culler can drive, kernel processes for the registry's own parts, and a client of the core that records what
it is sent. Each does what the real thing does at its seam, no more, so a test reads as the behaviour it
checks.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from twisted.internet.defer import Deferred, succeed
from twisted.python.failure import Failure

from kernel_relay.fronts.event_words import details_of, event_name
from kernel_relay.fronts.socketio_forms import Payload, client_payload
from kernel_relay.kernels import KernelMessage, UnknownKernel
from kernel_relay.kernels._messages import Frame
from kernel_relay.kernels._processes import ManagedKernel
from kernel_relay.relay.events import ClientEvent
from kernel_relay.relay.payload import Outgoing

_T = TypeVar("_T")


def result_of(d: Deferred[_T]) -> _T:
    """What ``d`` has fired with (and goes on holding); it must have fired, and not failed."""
    outcome: list[Any] = []

    def keep(result: Any) -> Any:
        outcome.append(result)
        return result

    d.addBoth(keep)
    assert outcome, f"{d!r} has not fired"
    assert not isinstance(outcome[0], Failure), outcome[0].getTraceback()
    value: _T = outcome[0]
    return value


def failure_of(d: Deferred[Any], *errors: type[BaseException]) -> Failure:
    """How ``d`` has failed; it must have failed, with one of ``errors`` when any are named."""
    outcome: list[Any] = []
    d.addBoth(outcome.append)
    assert outcome and isinstance(outcome[0], Failure), f"{d!r} has not failed: {outcome}"
    if errors:
        assert outcome[0].check(*errors), outcome[0].getTraceback()
    failure: Failure = outcome[0]
    return failure


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


class EchoSocket:
    """A heartbeat socket that echoes at once while ``answering``, and remembers what it was sent."""

    def __init__(self, on_echo: Callable[[list[Frame]], None]) -> None:
        self.on_echo = on_echo
        self.answering = True
        self.sent: list[list[Frame]] = []
        self.closed = False

    def send(self, frames: Sequence[Frame]) -> None:
        if self.closed:
            raise ConnectionError("socket is closed")
        self.sent.append(list(frames))
        if self.answering:
            self.on_echo(list(frames))

    def close(self) -> None:
        self.closed = True


class FakeKernel:
    """
    A running kernel: its iopub listeners, the client lines opened to it, its state and activity, its
    heartbeat channel, and the readiness probes the registry's parts wait on (``become_ready`` answers).
    """

    def __init__(
        self,
        kernel_id: str,
        state: str = "idle",
        last_activity: float = 0.0,
        *,
        spec_name: str = "python3",
    ) -> None:
        self.id = kernel_id
        self.spec_name = spec_name
        self.execution_state = state
        self.last_activity = last_activity
        self.reachable = True
        #: CurveZMQ keys of an encrypted kernel (None: its channels are not encrypted).
        self.curve: Any = None
        #: Whether the kernel runs in the relay's sandbox (``--kernel-sandbox``).
        self.sandboxed = False
        self.closed = False
        self.pid: int | None = None
        self.iopub_listeners: list[Callable[[KernelMessage], None]] = []
        self.clients: list[FakeKernelClient] = []
        self.heartbeat: EchoSocket | None = None
        self.probes: list[Deferred[None]] = []

    def __repr__(self) -> str:
        return f"<FakeKernel {self.id} {self.execution_state}>"

    def open_heartbeat(self, on_echo: Callable[[list[Frame]], None]) -> EchoSocket:
        self.heartbeat = EchoSocket(on_echo)
        return self.heartbeat

    def wait_ready(self) -> Deferred[None]:
        probe: Deferred[None] = Deferred()
        self.probes.append(probe)
        return probe

    def become_ready(self) -> None:
        """The kernel answers the readiness probe it was sent last."""
        self.probes[-1].callback(None)

    def close(self) -> None:
        self.closed = True

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

    def answer(
        self,
        msg_id: str,
        msg_type: str,
        channel: str = "shell",
        content: dict[str, Any] | None = None,
    ) -> None:
        """The kernel answers the request ``msg_id`` on the client line that sent it."""
        (line,) = [
            line
            for line in self.clients
            if any(sent.get("header", {}).get("msg_id") == msg_id for _, sent in line.sent)
        ]
        line.deliver(kernel_message(msg_type, channel, parent=msg_id, content=content))


class FakeRegistry:
    """The kernels the relay runs, and the observers told when they start and stop."""

    def __init__(self, *kernels: FakeKernel) -> None:
        self._kernels = {kernel.id: kernel for kernel in kernels}
        self.observers: list[Any] = []
        self.shut_down: list[str] = []
        self.holding = False
        """While True, a shutdown is recorded but not done: it waits in ``held`` until the test fires it."""
        self.held: list[Deferred[None]] = []
        self.lookup: Callable[[str], Deferred[None]] | None = None
        """Stands for a fleet's look-up of a kernel this relay does not know (``KernelRegistry.find``)."""

    def __len__(self) -> int:
        return len(self._kernels)

    def find(self, kernel_id: str) -> Deferred[None] | None:
        """As ``KernelRegistry.find``, without its bound: the test fires what ``lookup`` returned."""
        if self.lookup is None or kernel_id in self._kernels:
            return None
        return self.lookup(kernel_id)

    def __contains__(self, kernel_id: object) -> bool:
        return kernel_id in self._kernels

    def kernels(self) -> list[FakeKernel]:
        return list(self._kernels.values())

    def owned(self) -> list[FakeKernel]:
        """The kernels whose processes this relay manages: all of them (no fleet here)."""
        return self.kernels()

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
        if self.holding:
            self.held.append(Deferred())
            return self.held[-1]
        del self._kernels[kernel_id]
        return succeed(None)


class FakeManager:
    """Stands for the jupyter_client manager of one kernel process (the parts only pass it back)."""

    def __init__(self, kernel_id: str) -> None:
        self.kernel_id = kernel_id

    def __repr__(self) -> str:
        return f"<FakeManager {self.kernel_id}>"


def managed(kernel: FakeKernel) -> ManagedKernel:
    """A fake kernel with a manager of its own, as the launcher hands a kernel out."""
    return ManagedKernel(kernel, FakeManager(kernel.id))  # type: ignore[arg-type]


class FakeProcesses:
    """
    Kernel processes as the registry's parts see them (``KernelProcesses``): every call is recorded and
    waits until the test answers it (``answer``); ``connect`` makes a FakeKernel, ``find_dead`` answers
    at once from ``exited``.
    """

    def __init__(self, specs: Sequence[tuple[str, str, str]] = ()) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.pending: dict[str, list[Deferred[Any]]] = {}
        self.connected: dict[str, FakeKernel] = {}
        self.connect_error: Exception | None = None
        self.exited: dict[str, int | None] = {}
        self.polled: list[list[str]] = []
        self.closed = False
        #: The environment asked for by each launch, by kernel id.
        self.envs: dict[str, dict[str, str]] = {}
        self._specs = list(specs)

    def made(self, operation: str) -> list[Any]:
        """What each call of ``operation`` was given, in order."""
        return [argument for name, argument in self.calls if name == operation]

    def waiting(self, operation: str) -> int:
        return len(self.pending.get(operation, []))

    def answer(self, operation: str, result: Any = None) -> None:
        """The oldest call of ``operation`` still waiting returns ``result`` (an exception: raises it)."""
        d = self.pending[operation].pop(0)
        if isinstance(result, BaseException):
            d.errback(result)
        else:
            d.callback(result)

    def launched(self) -> FakeManager:
        """The oldest launch still waiting has started its process: the manager it returns."""
        launches = self.made("launch")
        _, kernel_id = launches[len(launches) - self.waiting("launch")]
        manager = FakeManager(kernel_id)
        self.answer("launch", manager)
        return manager

    def _call(self, operation: str, argument: Any) -> Deferred[Any]:
        self.calls.append((operation, argument))
        d: Deferred[Any] = Deferred()
        self.pending.setdefault(operation, []).append(d)
        return d

    def specs(self) -> Deferred[list[tuple[str, str, str]]]:
        return succeed(list(self._specs))

    def launch(
        self, spec_name: str, kernel_id: str, env: Mapping[str, str] | None = None
    ) -> Deferred[Any]:
        self.envs[kernel_id] = dict(env or {})
        return self._call("launch", (spec_name, kernel_id))

    def connect(self, kernel_id: str, spec_name: str, manager: Any) -> FakeKernel:
        if self.connect_error is not None:
            raise self.connect_error
        kernel = FakeKernel(kernel_id, "starting", spec_name=spec_name)
        self.connected[kernel_id] = kernel
        return kernel

    def stop(self, manager: Any) -> Deferred[None]:
        return self._call("stop", manager)

    def kill(self, manager: Any) -> Deferred[None]:
        return self._call("kill", manager)

    def interrupt(self, manager: Any) -> Deferred[None]:
        return self._call("interrupt", manager)

    def restart(self, manager: Any) -> Deferred[int | None]:
        return self._call("restart", manager)

    def find_dead(
        self, watched: Sequence[tuple[str, Any]]
    ) -> Deferred[list[tuple[str, int | None]]]:
        self.polled.append([kernel_id for kernel_id, _ in watched])
        return succeed(
            [
                (kernel_id, self.exited[kernel_id])
                for kernel_id, _ in watched
                if kernel_id in self.exited
            ]
        )

    def close(self) -> None:
        self.closed = True


class RecordingObserver:
    """A kernel observer that records what it is told, as (event, kernel id[, reason])."""

    def __init__(self) -> None:
        self.events: list[tuple[str, ...]] = []

    def kernel_started(self, kernel: Any) -> None:
        self.events.append(("started", kernel.id))

    def kernel_stopped(self, kernel: Any, reason: str) -> None:
        self.events.append(("stopped", kernel.id, reason))

    def kernel_restarting(self, kernel: Any) -> None:
        self.events.append(("restarting", kernel.id))

    def kernel_restarted(self, kernel: Any) -> None:
        self.events.append(("restarted", kernel.id))

    def kernel_ready(self, kernel: Any) -> None:
        self.events.append(("ready", kernel.id))


class RecordingClient:
    """A client of the relay core that records every message, event and disconnect it is given."""

    def __init__(self, client_id: str, address: str = "127.0.0.1") -> None:
        self.client_id = client_id
        self.address = address
        self.backlog = 0
        #: What the core delivered, and the same as the socket.io front would send it.
        self.outgoing: list[Outgoing] = []
        self.delivered: list[tuple[str, str, Payload]] = []
        #: What the core told, as the socket.io front words it: (kernel id, channel, event, details).
        self.told: list[tuple[str, str, str, dict[str, Any]]] = []
        self.events_told: list[ClientEvent] = []
        self.let_go_of: list[tuple[str, str, str]] = []

    def deliver(self, kernel_id: str, channel: str, message: Outgoing) -> None:
        self.outgoing.append(message)
        self.delivered.append((kernel_id, channel, client_payload(message)))

    def tell(self, kernel_id: str, channel: str, event: ClientEvent) -> None:
        self.events_told.append(event)
        self.told.append((kernel_id, channel, event_name(event), details_of(event, kernel_id)))

    def let_go(self, kernel_id: str, channel: str, reason: str) -> None:
        self.let_go_of.append((kernel_id, channel, reason))

    def events(self, event: str) -> list[dict[str, Any]]:
        return [details for _, _, name, details in self.told if name == event]

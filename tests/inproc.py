"""
The relay in process, for tests of its fronts: the site ``tap`` builds (real core, real socket.io and Jupyter
fronts, real HTTP resources) over :mod:`tests.fakes`' fake kernels, on a ``MemoryReactorClock``, its clients
connected through ``twisted.test.iosim`` (a pump per connection moves the bytes both ways). Time passes only
when a test advances the clock. A client that does not read (``reading = False``) is one whose pump is not
turned; the server's side of each connection pauses its producer once it holds :data:`HIGH_WATER` unread
bytes, as a TCP connection with a full buffer does, so back-pressure and slow clients play out as on a socket.

A test talks to either front through a :class:`Peer` (:class:`SocketIOPeer`, :class:`JupyterPeer`), so one
scenario is written once and parametrised over the fronts (``FRONTS``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any, cast

from treq.testing import StubTreq
from twisted.application.service import IServiceCollection
from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock
from twisted.test.iosim import FakeTransport, IOPump, connect

from kernel_relay import tap
from kernel_relay.http.site import Listener, RelaySite
from kernel_relay.kernels import KernelRegistry
from kernel_relay.relay.core import RelayCore
from tests.fakes import FakeKernel, FakeRegistry, result_of
from tests.inproc_clients import (
    JupyterClient,
    Message,
    SocketIOClient,
    WebSocketClient,
)

#: Unread bytes at which a connection's server side pauses its producer (a TCP send buffer, roughly).
HIGH_WATER = 64 * 1024
PORT = 8888


def relay_site(
    argv: Sequence[str], reactor: MemoryReactorClock, kernels: FakeRegistry
) -> RelaySite:
    """
    The site ``tap.makeService`` builds for ``argv`` on ``reactor``, with ``kernels`` in place of the kernel
    registry (nothing is started: no kernel, no listener, no timer of the services).

    The one place that knows how ``tap`` builds: ``tap.relay_tree`` over the fake registry.
    """
    options = tap.Options()
    options.parseOptions(["--port", str(PORT), *argv])
    tree = tap.relay_tree(options, reactor, lambda *_: cast(KernelRegistry, kernels))
    (site,) = {
        service.factory for service in IServiceCollection(tree) if isinstance(service, Listener)
    }
    assert isinstance(site, RelaySite)
    return site


class PressureTransport(FakeTransport):
    """The server's side of an in-memory connection: it pauses its streaming producer while it holds
    :data:`HIGH_WATER` bytes or more that its peer has not read, and resumes it once they are read."""

    paused = False

    def held(self) -> int:
        return sum(len(chunk) for chunk in self.stream)

    def write(self, data: bytes) -> None:
        super().write(bytes(data))
        if self.producer is not None and self.streamingProducer and not self.paused:
            if self.held() >= HIGH_WATER:
                self.paused = True
                self.producer.pauseProducing()

    def getOutBuffer(self) -> bytes | None:
        data: bytes | None = super().getOutBuffer()
        if self.paused:
            self.paused = False
            if self.producer is not None:
                self.producer.resumeProducing()
        return data


class InProcessRelay:
    """A relay built by :func:`relay_site` from ``argv``, with fake kernels started for ``kernels`` (ids)."""

    def __init__(self, *argv: str, kernels: Sequence[str] = ("k1",)) -> None:
        self.clock = MemoryReactorClock()
        self.registry = FakeRegistry()
        self.site = relay_site(argv, self.clock, self.registry)
        self.pumps: list[tuple[WebSocketClient, IOPump]] = []
        self._port = 40000
        for kernel_id in kernels:
            self.start_kernel(kernel_id)

    def start_kernel(self, kernel_id: str) -> FakeKernel:
        kernel = FakeKernel(kernel_id)
        self.registry.start(kernel)
        return kernel

    def kernel(self, kernel_id: str = "k1") -> FakeKernel:
        return self.registry.get(kernel_id)

    @property
    def core(self) -> RelayCore:
        """The relay core the fronts serve (it watches the registry's kernels)."""
        (core,) = [o for o in self.registry.observers if isinstance(o, RelayCore)]
        return core

    def connect(self, client: WebSocketClient) -> WebSocketClient:
        """Connect ``client`` to the site from a loopback address of its own, and let them talk."""
        self._port += 1
        server = self.site.buildProtocol(IPv4Address("TCP", "127.0.0.1", self._port))
        assert server is not None
        relay_end = IPv4Address("TCP", "127.0.0.1", PORT)
        client_end = IPv4Address("TCP", "127.0.0.1", self._port)
        server_io = PressureTransport(server, True, relay_end, client_end)
        client_io = FakeTransport(client, False, client_end, relay_end)
        pump = connect(server, server_io, client, client_io, greet=False, clock=self.clock)
        self.pumps.append((client, pump))
        self.flush()
        return client

    def flush(self) -> None:
        """Move bytes on every connection whose client reads, until none moves."""
        for _ in range(10_000):
            if not any([pump.pump() for client, pump in self.pumps if client.reading]):
                return
        raise AssertionError("the connections never went quiet")

    def advance(self, seconds: float, step: float = 0.5) -> None:
        """Let ``seconds`` pass, in steps, the connections talking after each."""
        while seconds > 0:
            self.clock.advance(min(step, seconds))
            seconds -= step
            self.flush()

    def http(self) -> StubTreq:
        """A treq of the site's resources (REST), without connections."""
        return StubTreq(self.site.resource)

    def post_json(self, path: str, body: Message, token: str | None = None) -> tuple[int, Any]:
        headers = {"Authorization": [f"Bearer {token}"]} if token else {}
        stub = self.http()
        response = result_of(
            stub.post(f"http://127.0.0.1:{PORT}{path}", json.dumps(body).encode(), headers=headers)
        )
        return response.code, json.loads(result_of(stub.content(response)))

    def metric(self, sample: str) -> float:
        """The value of one sample of the site's ``/metrics`` (``name{labels}``), 0 when absent."""
        stub = self.http()
        response = result_of(stub.get(f"http://127.0.0.1:{PORT}/metrics"))
        for line in result_of(stub.content(response)).decode().splitlines():
            if line.startswith(sample + " "):
                return float(line.split()[-1])
        return 0.0

    def kernel_token(self, admin: str, access: str, kernel_id: str = "k1") -> str:
        """A token of one kernel with ``access`` (``full`` or ``read-only``), issued with ``admin``."""
        code, body = self.post_json(f"/api/kernels/{kernel_id}/tokens", {"access": access}, admin)
        assert code == 201, body
        token: str = body["token"]
        return token


def _metadata(message: Message) -> Message:
    metadata = message.get("metadata") or {}
    return json.loads(metadata) if isinstance(metadata, str) else metadata  # type: ignore[no-any-return]


def relay_seq(message: Message) -> int:
    return int(_metadata(message)["relay_seq"])


def is_state_told(message: Message) -> bool:
    """Whether ``message`` is the kernel's state the relay tells a joining iopub client first (its mark)."""
    marks = _metadata(message).get("kernel_relay")
    return isinstance(marks, dict) and marks.get("state") == "current"


def without_state(messages: list[Message]) -> list[Message]:
    """What a peer got, less the states it was told on joining (tests of the state read them apart)."""
    return [message for message in messages if not is_state_told(message)]


class SocketIOPeer:
    """A socket.io client joined to ``channels`` of one kernel (one namespace each)."""

    front = "socketio"

    def __init__(
        self,
        relay: InProcessRelay,
        kernel_id: str = "k1",
        channels: Sequence[str] = ("shell", "stdin", "iopub"),
        token: str | None = None,
        since: int | None = None,
    ) -> None:
        self.relay, self.kernel_id = relay, kernel_id
        self.client = SocketIOClient()
        relay.connect(self.client)
        auth: Message = {"token": token} if token else {}
        for channel in channels:
            joining = {**auth, "since": since} if channel == "iopub" and since is not None else auth
            self.client.join(self._namespace(channel), joining)
        relay.flush()

    def _namespace(self, channel: str) -> str:
        return f"/{channel}/{self.kernel_id}"

    def send(self, channel: str, message: Message) -> None:
        self.client.emit(self._namespace(channel), "msg", message)
        self.relay.flush()

    def got(self, channel: str) -> list[Message]:
        return without_state(list(self.client.got(self._namespace(channel), "msg")))

    def states_told(self) -> list[Message]:
        return [m for m in self.client.got(self._namespace("iopub"), "msg") if is_state_told(m)]

    def told(self, event: str) -> list[Message]:
        return [details for name in self.client.events for details in self.client.got(name, event)]

    @property
    def refusal(self) -> str | None:
        for refused in self.client.refused.values():
            return str(refused.get("message"))
        return None

    @property
    def gone(self) -> bool:
        return self.client.lost or bool(self.client.left)

    @property
    def last_seq(self) -> int:
        return relay_seq(self.got("iopub")[-1])

    def leave(self) -> None:
        self.client.transport.loseConnection()  # type: ignore[union-attr]
        self.relay.flush()

    def resume(self) -> SocketIOPeer:
        """The same client back, on a new connection, asking for what came after the last it saw."""
        return SocketIOPeer(self.relay, self.kernel_id, ("iopub",), since=self.last_seq)


class JupyterPeer:
    """A Jupyter kernel WebSocket client of one kernel (all four channels on one connection)."""

    front = "jupyter"

    def __init__(
        self,
        relay: InProcessRelay,
        kernel_id: str = "k1",
        channels: Sequence[str] = (),
        token: str | None = None,
        since: int | None = None,
        *,
        v1: bool = True,
        session_id: str = "",
    ) -> None:
        self.relay, self.kernel_id, self.token, self.v1 = relay, kernel_id, token, v1
        self.client = JupyterClient(kernel_id, v1=v1, session_id=session_id, token=token)
        relay.connect(self.client)

    def send(self, channel: str, message: Message) -> None:
        self.client.send_message(channel, message)
        self.relay.flush()

    def got(self, channel: str) -> list[Message]:
        return without_state(
            [m for m in self.client.on(channel) if "kernel_relay" not in _metadata(m)]
        )

    def states_told(self) -> list[Message]:
        return [
            m for m in self.client.on("iopub") if is_state_told(m)
        ]  # got() leaves out relay marks

    def told(self, event: str) -> list[Message]:
        told = [_metadata(m).get("kernel_relay") for m in self.client.on("iopub")]
        return [details for details in told if details and details.get("event") == event]

    @property
    def refusal(self) -> str | None:
        if self.client.status == 101:
            return None
        return str(json.loads(self.client.body)["message"])

    @property
    def gone(self) -> bool:
        return self.client.lost or self.client.close_code is not None

    @property
    def last_seq(self) -> int:
        return relay_seq(self.got("iopub")[-1])

    def leave(self) -> None:
        self.client.close()
        self.relay.flush()

    def resume(self) -> JupyterPeer:
        """The same session back on a new connection (a Jupyter client resumes by its ``session_id``)."""
        return JupyterPeer(
            self.relay,
            self.kernel_id,
            token=self.token,
            v1=self.v1,
            session_id=self.client.session_id,
        )


Peer = SocketIOPeer | JupyterPeer
PeerFactory = Callable[..., Peer]


def legacy_jupyter(*args: Any, **kwargs: Any) -> JupyterPeer:
    return JupyterPeer(*args, v1=False, **kwargs)


#: The fronts a scenario runs on: socket.io, Jupyter v1, Jupyter legacy JSON.
FRONTS: dict[str, PeerFactory] = {
    "socketio": SocketIOPeer,
    "jupyter-v1": JupyterPeer,
    "jupyter-legacy": legacy_jupyter,
}

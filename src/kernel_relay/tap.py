"""
``twist kernel-relay`` / ``twistd kernel-relay``: command-line options and the service tree. Wiring only.
"""

from __future__ import annotations

import socket
from collections.abc import Sequence
from typing import Any

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import IService, MultiService, Service
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import serverFromString
from twisted.logger import Logger
from twisted.python import usage
from twisted.web.http import Request
from twisted.web.server import Site

from . import __version__
from .demo import demo_resources
from .engineio import EngineIOOptions
from .kernels import KernelRegistry
from .origins import OriginPolicy
from .relay import Relay
from .socketio import SocketIOServer
from .web import OriginGuard, RelayAPI, RelayRoot

log = Logger()

DEFAULT_PORT = 3000
TRANSPORTS = ("polling", "websocket")


def _positive(kind: type[float] | type[int]) -> Any:
    def coerce(text: str) -> float | int:
        value = kind(text)
        if value <= 0:
            raise ValueError(f"must be positive, not {text}")
        return value

    coerce.coerceDoc = "Must be positive."  # type: ignore[attr-defined]
    return coerce


def _transports(text: str) -> tuple[str, ...]:
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    unknown = [name for name in names if name not in TRANSPORTS]
    if not names or unknown:
        raise ValueError(f"transports are a comma-separated subset of {','.join(TRANSPORTS)}")
    return names


_transports.coerceDoc = "A comma-separated subset of polling,websocket."  # type: ignore[attr-defined]


class Options(usage.Options):
    synopsis = "[options] [port]"
    longdesc = (
        "Relay Jupyter kernels to web clients over socket.io. GET /spawn/<kernelspec> starts a kernel, "
        "GET /shutdown/<id> stops it, and socket.io namespaces /shell/<id>, /stdin/<id>, /iopub/<id> and "
        "/control/<id> carry its messages as 'msg' events. The relay runs code for whoever reaches it: "
        "--port listens on loopback only; use --listen for anything else."
    )

    optParameters: Sequence[Sequence[Any]] = [
        [
            "port",
            "p",
            None,
            f"TCP port to listen on, on loopback only (127.0.0.1 and ::1). [default: {DEFAULT_PORT} "
            "unless --listen is given]",
            usage.portCoerce,
        ],
        ["ping-interval", None, 25.0, "Seconds between Engine.IO heartbeats.", _positive(float)],
        [
            "ping-timeout",
            None,
            20.0,
            "Seconds a client may take to answer a heartbeat before it is dropped.",
            _positive(float),
        ],
        [
            "max-payload",
            None,
            16 * 1024 * 1024,
            "Largest message, in bytes, a client may send in one packet or polling request.",
            _positive(int),
        ],
        ["transports", None, ",".join(TRANSPORTS), "Engine.IO transports to offer.", _transports],
        [
            "connect-timeout",
            None,
            45.0,
            "Seconds a client may stay connected without joining a namespace.",
            _positive(float),
        ],
        [
            "shutdown-timeout",
            None,
            5.0,
            "Seconds a kernel gets to honour a shutdown_request before it is killed.",
            _positive(float),
        ],
        [
            "launch-timeout",
            None,
            60.0,
            "Seconds a new kernel gets to become ready before the spawn fails.",
            _positive(float),
        ],
        [
            "access-log",
            None,
            None,
            "Write an HTTP access log (combined format) to this file.",
        ],
    ]

    optFlags: Sequence[Sequence[Any]] = [
        ["no-demo", None, "Do not serve the demo page at / (and its files under /demo/)."],
        [
            "no-eio3",
            None,
            "Refuse Engine.IO protocol 3 clients (socket.io-client 1.x/2.x); serve protocol 4 only.",
        ],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["listen"] = []
        self["allow-origin"] = []

    def opt_listen(self, description: str) -> None:
        """Listen on a Twisted endpoint (repeatable), e.g. tcp:3000:interface=0.0.0.0,
        ssl:3443:privateKey=key.pem:certKey=cert.pem or unix:/run/kernel-relay.sock."""
        self["listen"].append(description)

    def opt_allow_origin(self, origin: str) -> None:
        """Let web pages from this origin use the relay (repeatable): an exact origin such as
        https://app.example.com, a pattern such as https://*.example.com, or * for any. By default only
        same-origin pages and clients sending no Origin (curl, Node, Python) are served."""
        self["allow-origin"].append(origin)

    def parseArgs(self, port: str | None = None) -> None:
        """Accept the original kernel-relay's positional ``[port]``."""
        if port is not None:
            if self["port"] is not None:
                raise usage.UsageError("give the port either as --port or as an argument, not both")
            try:
                self["port"] = usage.portCoerce(port)
            except ValueError as error:
                raise usage.UsageError(f"invalid port {port!r}: {error}") from None

    def postOptions(self) -> None:
        if isinstance(self["transports"], str):
            self["transports"] = _transports(self["transports"])
        if self["port"] is None and not self["listen"]:
            self["port"] = DEFAULT_PORT
        if self["ping-timeout"] >= self["ping-interval"] * 10:
            log.warn("--ping-timeout is much longer than --ping-interval; dead clients linger")

    def endpoints(self) -> list[str]:
        """Every endpoint description to listen on."""
        descriptions = list(self["listen"])
        if self["port"] is not None:
            descriptions.append(f"tcp:{self['port']}:interface=127.0.0.1")
            if _ipv6_loopback_available():
                descriptions.append(f"tcp6:{self['port']}:interface=\\:\\:1")
        return descriptions


def _ipv6_loopback_available() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


class RelaySite(Site):
    """A Site that keeps quiet about every request unless an access log was asked for."""

    noisy = False
    displayTracebacks = False

    def log(self, request: Request) -> None:
        if self.logPath is not None:
            super().log(request)


class KernelsService(Service):
    """Stops the relay cleanly: clients are told first, then every kernel the relay started is shut down."""

    def __init__(self, socketio: SocketIOServer, kernels: KernelRegistry) -> None:
        self._socketio = socketio
        self._kernels = kernels

    def stopService(self) -> Deferred[None]:
        super().stopService()
        log.info("Stopping: shutting down {count} kernel(s)", count=len(self._kernels))
        self._socketio.close("server shutting down")
        return self._kernels.shutdown_all()


def makeService(options: Options) -> IService:
    from twisted.internet import reactor

    origins = OriginPolicy.from_options(options["allow-origin"])
    kernels = KernelRegistry(
        reactor,
        shutdown_timeout=options["shutdown-timeout"],
        launch_timeout=options["launch-timeout"],
    )
    socketio = SocketIOServer(
        reactor,
        engineio_options=EngineIOOptions(
            ping_interval=options["ping-interval"],
            ping_timeout=options["ping-timeout"],
            max_payload=options["max-payload"],
            transports=options["transports"],
            origins=origins,
            allow_eio3=not options["no-eio3"],
        ),
        connect_timeout=options["connect-timeout"],
    )
    relay = Relay(socketio, kernels)
    api = RelayAPI(kernels, relay.client_count)
    site = RelaySite(
        RelayRoot(
            OriginGuard(api.resource(), origins),
            socketio.resource(),
            demo=None if options["no-demo"] else demo_resources(),
        ),
        logPath=options["access-log"],
    )

    top = MultiService()
    KernelsService(socketio, kernels).setServiceParent(top)
    for description in options.endpoints():
        listener = StreamServerEndpointService(serverFromString(reactor, description), site)
        # A port that cannot be bound must stop the relay at start, not leave it running deaf.
        listener._raiseSynchronously = True
        listener.setServiceParent(top)
    log.info(
        "kernel-relay {version} listening on {endpoints}",
        version=__version__,
        endpoints=", ".join(options.endpoints()),
    )
    return top

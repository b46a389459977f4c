"""
The server the official Engine.IO and socket.io conformance suites expect, built on kernel-relay's
public protocol APIs only.

- ``/engine.io/``: an Engine.IO echo server (every message is sent back to its session).
- ``/socket.io/``: a socket.io server where ``/`` and ``/custom`` emit ``auth`` with the client's
  auth payload on connect, ``message`` is answered with ``message-back`` and the same arguments,
  and ``message-with-ack`` is acknowledged with its arguments.

Both use pingInterval 300 ms, pingTimeout 200 ms, maxPayload 1000000, any origin (CORS ``*``), and
the socket.io connect timeout is 1000 ms, as the suites' reference configuration. Engine.IO protocol
3 (socket.io-client 1.x/2.x, the v3 suite) is served beside protocol 4 unless ``--no-eio3`` is given;
``--max-buffered-bytes N`` closes sessions with more than N bytes waiting to go out ("slow client").

Run: ``python examples/conformance_server.py --port 3000`` (``--interface`` defaults to 127.0.0.1).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from typing import Any, cast

from twisted.internet.interfaces import IReactorCore, IReactorTCP, IReactorTime
from twisted.logger import (
    FilteringLogObserver,
    Logger,
    LogLevel,
    LogLevelFilterPredicate,
    globalLogBeginner,
    textFileLogObserver,
)
from twisted.web.resource import Resource
from twisted.web.server import Site

from kernel_relay.engineio import EngineIOOptions, EngineIOServer, EngineIOSession
from kernel_relay.http.origins import OriginPolicy
from kernel_relay.socketio import Socket, SocketIOServer

log = Logger()

OPTIONS = EngineIOOptions(
    ping_interval=0.3,
    ping_timeout=0.2,
    max_payload=1_000_000,
    origins=OriginPolicy(("*",)),
)
CONNECT_TIMEOUT = 1.0


class Echo:
    """Engine.IO handler that sends each message straight back."""

    def __init__(self, session: EngineIOSession) -> None:
        self.session = session

    def message_received(self, data: str | bytes) -> None:
        self.session.send(data)

    def session_closed(self, reason: str) -> None:
        log.debug("echo session {sid} closed: {reason}", sid=self.session.sid, reason=reason)


def send_auth(socket: Socket, auth: Any) -> None:
    """Show the client the auth payload it connected with (sent right after the CONNECT reply)."""
    socket.emit("auth", auth)


def message(socket: Socket, *args: Any) -> None:
    socket.emit("message-back", *args)


def message_with_ack(socket: Socket, *args: Any) -> tuple[Any, ...]:
    return args


def build(
    reactor: IReactorTime, options: EngineIOOptions = OPTIONS
) -> tuple[Resource, SocketIOServer, EngineIOServer]:
    """The resource tree with both servers mounted, and the servers (to close them on shutdown)."""
    echo = EngineIOServer(reactor, options, Echo)
    socketio = SocketIOServer(reactor, engineio_options=options, connect_timeout=CONNECT_TIMEOUT)
    main_namespace = socketio.of("/")
    main_namespace.on_connect(send_auth)
    main_namespace.on("message", message)
    main_namespace.on("message-with-ack", message_with_ack)
    socketio.of("/custom").on_connect(send_auth)
    root = Resource()  # type: ignore[no-untyped-call]
    root.putChild(b"engine.io", echo.resource())
    root.putChild(b"socket.io", socketio.resource())
    return root, socketio, echo


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description="Conformance-suite server for kernel-relay.")
    parser.add_argument("--port", type=int, default=3000)
    parser.add_argument("--interface", default="127.0.0.1")
    parser.add_argument("--debug", action="store_true", help="log debug events too")
    parser.add_argument("--no-eio3", action="store_true", help="refuse Engine.IO protocol 3")
    parser.add_argument("--max-buffered-bytes", type=int, default=None, help="slow-client limit")
    args = parser.parse_args(argv)

    from twisted.internet import reactor  # a script: the global reactor is fine here

    level = LogLevel.debug if args.debug else LogLevel.info
    predicate = LogLevelFilterPredicate(defaultLogLevel=level)
    observer = FilteringLogObserver(textFileLogObserver(sys.stdout), [predicate])
    globalLogBeginner.beginLoggingTo([observer])
    core = cast(IReactorCore, reactor)
    options = replace(
        OPTIONS, allow_eio3=not args.no_eio3, max_buffered_bytes=args.max_buffered_bytes
    )
    root, socketio, echo = build(cast(IReactorTime, reactor), options)

    def shutdown() -> None:
        socketio.close("server shutting down")
        echo.close_all("server shutting down")

    core.addSystemEventTrigger("before", "shutdown", shutdown)
    site = Site(root)  # type: ignore[no-untyped-call]
    site.noisy = False
    cast(IReactorTCP, reactor).listenTCP(args.port, site, interface=args.interface)  # type: ignore[arg-type]
    log.info("conformance server on {interface}:{port}", interface=args.interface, port=args.port)
    # reactor.run installs SIGINT/SIGTERM handlers that stop the reactor cleanly.
    core.run()


if __name__ == "__main__":
    main(sys.argv[1:])

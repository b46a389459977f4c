"""
A socket.io test server exercising what the conformance example does not: dynamic (pattern)
namespaces, connect refusal with data, server-side emit with ack, server-side disconnect, and
reporting the disconnect reasons it saw.

Run: ``python tests/servers/socketio_app.py --port 3000`` (socket.io at ``/socket.io/``).

Namespaces and events (the same on ``/`` and on every ``/dyn/<room>``):

- on connect: emits ``welcome`` with ``{"namespace", "params", "auth", "sid"}``; ``/dyn/forbidden``
  is refused with ``ConnectionRefused("forbidden room", {"room": "forbidden"})``.
- ``echo``: emits ``echo-back`` with the same arguments and acks with them too.
- ``ask``: the server calls the client with ``question`` and its arguments (ack requested, 5 s
  timeout) and then emits ``answer`` with the client's ack arguments (or ``answer-error``).
- ``kick``: the server disconnects this socket.
- ``broadcast``: emits ``news`` with the arguments to every socket of the namespace.
- ``reasons``: acks with the list of ``[namespace, reason]`` disconnects seen so far.
"""

from __future__ import annotations

import argparse
import re
import sys
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
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import Site

from kernel_relay.engineio import EngineIOOptions
from kernel_relay.http.origins import OriginPolicy
from kernel_relay.socketio import ConnectionRefused, NamespaceGroup, Socket, SocketIOServer

log = Logger()

DYNAMIC = re.compile(r"/dyn/(?P<room>[a-z0-9-]+)")


class App:
    """The handlers, with the disconnect reasons they saw."""

    def __init__(self, server: SocketIOServer) -> None:
        self.server = server
        self.reasons: list[list[str]] = []
        for group in (server.of("/"), server.of(DYNAMIC)):
            self.register(group)

    def register(self, group: NamespaceGroup) -> None:
        group.on_connect(self.connected)
        group.on_disconnect(self.disconnected)
        group.on("echo", self.echo)
        group.on("ask", self.ask)
        group.on("kick", self.kick)
        group.on("broadcast", self.broadcast)
        group.on("reasons", self.report)

    def connected(self, socket: Socket, auth: Any) -> None:
        if socket.namespace.params.get("room") == "forbidden":
            raise ConnectionRefused("forbidden room", {"room": "forbidden"})
        socket.emit(
            "welcome",
            {
                "namespace": socket.namespace.name,
                "params": socket.namespace.params,
                "auth": auth,
                "sid": socket.id,
            },
        )

    def disconnected(self, socket: Socket, reason: str) -> None:
        self.reasons.append([socket.namespace.name, reason])

    def echo(self, socket: Socket, *args: Any) -> tuple[Any, ...]:
        socket.emit("echo-back", *args)
        return args

    def ask(self, socket: Socket, *args: Any) -> None:
        def answered(reply: list[Any]) -> None:
            socket.emit("answer", *reply)

        def failed(failure: Failure) -> None:
            socket.emit("answer-error", failure.getErrorMessage())

        socket.call("question", *args, timeout=5.0).addCallbacks(answered, failed)

    def kick(self, socket: Socket) -> None:
        socket.disconnect()

    def broadcast(self, socket: Socket, *args: Any) -> None:
        socket.namespace.emit("news", *args)

    def report(self, socket: Socket) -> list[list[str]]:
        return self.reasons


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description="socket.io test application")
    parser.add_argument("--port", type=int, default=3000)
    parser.add_argument("--interface", default="127.0.0.1")
    parser.add_argument("--transports", default="polling,websocket")
    parser.add_argument("--debug", action="store_true")
    args = parser.parse_args(argv)

    from twisted.internet import reactor  # a script: the global reactor is fine here

    level = LogLevel.debug if args.debug else LogLevel.info
    predicate = LogLevelFilterPredicate(defaultLogLevel=level)
    globalLogBeginner.beginLoggingTo(
        [FilteringLogObserver(textFileLogObserver(sys.stdout), [predicate])]
    )
    options = EngineIOOptions(
        ping_interval=1.0,
        ping_timeout=2.0,
        transports=tuple(args.transports.split(",")),
        origins=OriginPolicy(("*",)),
    )
    server = SocketIOServer(
        cast(IReactorTime, reactor), engineio_options=options, connect_timeout=5.0
    )
    App(server)
    root = Resource()  # type: ignore[no-untyped-call]
    root.putChild(b"socket.io", server.resource())
    core = cast(IReactorCore, reactor)
    core.addSystemEventTrigger("before", "shutdown", server.close, "server shutting down")
    site = Site(root)  # type: ignore[no-untyped-call]
    site.noisy = False
    cast(IReactorTCP, reactor).listenTCP(args.port, site, interface=args.interface)  # type: ignore[arg-type]
    log.info("socket.io test app on {interface}:{port}", interface=args.interface, port=args.port)
    core.run()


if __name__ == "__main__":
    main(sys.argv[1:])

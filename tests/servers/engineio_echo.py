"""
An Engine.IO echo server for live tests: every message is sent straight back to its session.

Run: ``python tests/servers/engineio_echo.py --port 3000 --ping-interval 300 --ping-timeout 200``
(times in milliseconds). The server is mounted at ``/engine.io/``. A text message ``close-me``
makes the server close that session (to test server-side close), and ``sessions?`` answers with
the number of open sessions.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

from twisted.internet import reactor
from twisted.internet.interfaces import IReactorCore, IReactorTCP
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

log = Logger()


@dataclass
class Echo:
    """Sends every message back unchanged."""

    session: EngineIOSession
    server: EngineIOServer

    def message_received(self, data: str | bytes) -> None:
        if data == "close-me":
            self.session.close()
        elif data == "sessions?":
            self.session.send(str(len(self.server.sessions)))
        else:
            self.session.send(data)

    def session_closed(self, reason: str) -> None:
        log.info("session {sid} closed: {reason}", sid=self.session.sid, reason=reason)


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=3000)
    parser.add_argument("--ping-interval", type=int, default=25000, help="milliseconds")
    parser.add_argument("--ping-timeout", type=int, default=20000, help="milliseconds")
    parser.add_argument("--upgrade-timeout", type=int, default=10000, help="milliseconds")
    parser.add_argument("--max-payload", type=int, default=1_000_000, help="bytes")
    parser.add_argument("--transports", default="polling,websocket")
    parser.add_argument("--allow-origin", action="append", default=[])
    parser.add_argument("--max-buffered-bytes", type=int, default=None, help="slow-client limit")
    parser.add_argument("--debug", action="store_true", help="log debug events too")
    return parser.parse_args(argv)


def main(argv: list[str]) -> None:
    args = parse(argv)
    level = LogLevel.debug if args.debug else LogLevel.info
    observer = FilteringLogObserver(
        textFileLogObserver(sys.stdout), [LogLevelFilterPredicate(defaultLogLevel=level)]
    )
    globalLogBeginner.beginLoggingTo([observer])
    options = EngineIOOptions(
        ping_interval=args.ping_interval / 1000,
        ping_timeout=args.ping_timeout / 1000,
        upgrade_timeout=args.upgrade_timeout / 1000,
        max_payload=args.max_payload,
        transports=tuple(args.transports.split(",")),
        origins=OriginPolicy.from_options(args.allow_origin),
        max_buffered_bytes=args.max_buffered_bytes,
    )
    holder: list[EngineIOServer] = []
    server = EngineIOServer(reactor, options, lambda session: Echo(session, holder[0]))
    holder.append(server)
    root = Resource()
    root.putChild(b"engine.io", server.resource())
    tcp: IReactorTCP = reactor  # type: ignore[assignment]
    core: IReactorCore = reactor  # type: ignore[assignment]
    tcp.listenTCP(args.port, Site(root), interface="127.0.0.1")
    core.addSystemEventTrigger("before", "shutdown", server.close_all)
    log.info("engine.io echo server on 127.0.0.1:{port}", port=args.port)
    core.run()


if __name__ == "__main__":
    main(sys.argv[1:])

"""A real Redis for the fleet's tests: Debian's ``redis-server`` on a free loopback port, no persistence."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import ServerProcess, free_port

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


class RedisServer(ServerProcess):
    """``redis-server`` on 127.0.0.1:``port`` (a new free one unless given), keeping nothing on disk."""

    def __init__(self, directory: Path, port: int | None = None) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        port = port or free_port()
        super().__init__(
            [
                REDIS_SERVER,
                "--bind",
                "127.0.0.1",
                "--port",
                str(port),
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(directory),
                "--protected-mode",
                "yes",
            ],
            port,
        )
        self.url = self.database(0)

    def database(self, number: int) -> str:
        """The URL of one of its databases: a fleet of its own for each test that needs one."""
        return f"redis://127.0.0.1:{self.port}/{number}"

    def restart(self) -> RedisServer:
        """Stop this server and start another on the same port (empty: nothing was saved)."""
        self.stop()
        return RedisServer(self.directory, self.port)


def require_redis() -> None:
    """Skip without redis-server on a developer's machine; in CI (which installs it) fail instead."""
    if not os.access(REDIS_SERVER, os.X_OK):
        if os.environ.get("CI"):
            pytest.fail("redis-server is not installed: .ci/run installs Debian's redis-server")
        pytest.skip("redis-server is not installed (apt-get install redis-server)")


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    require_redis()
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    try:
        yield server
    finally:
        server.stop()


def redis_command(port: int, db: int, *args: str | bytes) -> object:
    """One command on a fresh connection, its reply decoded from RESP (bulk strings as bytes)."""
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        reader = conn.makefile("rb")

        def send(*words: str | bytes) -> None:
            parts = [w.encode() if isinstance(w, str) else w for w in words]
            conn.sendall(
                b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in parts)
            )

        def read() -> object:
            line = reader.readline()[:-2]
            kind, rest = line[:1], line[1:]
            if kind in (b"+", b"-"):
                return rest.decode()
            if kind == b":":
                return int(rest)
            if kind == b"$":
                size = int(rest)
                return None if size < 0 else reader.read(size + 2)[:-2]
            if kind == b"*":
                size = int(rest)
                return None if size < 0 else [read() for _ in range(size)]
            raise ValueError(f"not RESP: {line!r}")

        send("SELECT", str(db))
        read()
        send(*args)
        return read()

"""
Headless Chromium, DNS rebinding: a page loaded from ``rebound.test:PORT`` finds a relay on PORT once the name
points at 127.0.0.1, same-origin in the browser's eyes. A relay without a token must refuse it; with
``--allow-host rebound.test`` the very same page gets through, which shows the test reproduces the attack.
"""

from __future__ import annotations

import json
import socket
import subprocess
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Relay
from tests.support import CHROMIUM, ROOT, free_port, headless_chromium

PAGE = ROOT / "tests" / "browser-origin" / "rebind.html"
CLIENT = (
    ROOT / "src" / "kernel_relay" / "demo" / "static" / "vendor" / "socket.io-client.esm.min.js"
)
NAME = "rebound.test"

pytestmark = [
    pytest.mark.timeout(300),
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Chromium is not installed"),
]


class _Server(ThreadingHTTPServer):
    """A ThreadingHTTPServer that can cut every connection it accepted, idle ones included."""

    def __init__(self, port: int, handler: type[BaseHTTPRequestHandler]) -> None:
        super().__init__(("127.0.0.1", port), handler)
        self.connections: list[socket.socket] = []

    def get_request(self) -> tuple[socket.socket, Any]:
        connection, address = super().get_request()
        self.connections.append(connection)
        return connection, address

    def close(self) -> None:
        """
        Stop, and cut every connection: Chromium opens spare connections ahead of need, and one left open
        would carry the page's next request to this server instead of to whatever takes the port next.
        """
        self.shutdown()
        self.server_close()
        for connection in self.connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            connection.close()


def _serve(port: int, handle: Callable[[BaseHTTPRequestHandler], None]) -> _Server:
    """A quiet HTTP server on 127.0.0.1:port whose every request goes to ``handle``."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            handle(self)

        do_POST = do_GET

    server = _Server(port, Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def _answer(
    request: BaseHTTPRequestHandler, body: bytes, content_type: str, code: int = 200
) -> None:
    request.send_response(code)
    request.send_header("Content-Type", content_type)
    request.send_header("Content-Length", str(len(body)))
    request.send_header("Access-Control-Allow-Origin", "*")
    request.end_headers()
    request.wfile.write(body)


class Collector:
    """On a port of its own: tells the page when the relay is up (and its kernel), and takes the result."""

    def __init__(self) -> None:
        self.asked = threading.Event()
        self.ready = threading.Event()
        self.done = threading.Event()
        self.kernel = ""
        self.result: dict[str, Any] | None = None
        self.server = _serve(0, self._handle)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def _handle(self, request: BaseHTTPRequestHandler) -> None:
        path = request.path.split("?", 1)[0]
        if path == "/go":
            self.asked.set()
            self.ready.wait(90)
            _answer(request, json.dumps({"kernel": self.kernel}).encode(), "application/json")
        elif path == "/result":
            length = int(request.headers.get("Content-Length", "0"))
            self.result = json.loads(request.rfile.read(length))
            self.done.set()
            _answer(request, b"{}", "application/json")
        else:  # /hold: the page's load event waits for the result
            self.done.wait(90)
            _answer(request, b"", "image/gif", 404)

    def close(self) -> None:
        self.ready.set()
        self.done.set()
        self.server.close()


def _page_server(port: int) -> _Server:
    """What first holds the port: the page and the socket.io client, as the attacker's server would."""

    def handle(request: BaseHTTPRequestHandler) -> None:
        path = request.path.split("?", 1)[0]
        files = {
            "/rebind.html": (PAGE, "text/html"),
            "/probe.js": (PAGE.with_name("probe.js"), "text/javascript"),
            "/socket.io-client.esm.min.js": (CLIENT, "text/javascript"),
        }
        if path in files:
            file, content_type = files[path]
            _answer(request, file.read_bytes(), content_type)
        else:
            _answer(request, b"", "text/plain", 404)

    return _serve(port, handle)


def _visit(tmp_path: Path, transport: str, *relay_args: str) -> dict[str, Any]:
    """Load the page from rebound.test, hand its port to a relay, and return what the page posted."""
    port = free_port()
    collector = Collector()
    page = _page_server(port)
    browser = subprocess.Popen(
        headless_chromium(
            f"http://{NAME}:{port}/rebind.html?collector={collector.url}&transport={transport}",
            f"--host-resolver-rules=MAP {NAME} 127.0.0.1",
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    relay: Relay | None = None
    try:
        assert collector.asked.wait(90), "the page never asked to go on"
        page.close()
        relay = Relay(tmp_path / "runtime", *relay_args, port=port)
        collector.kernel = relay.spawn()
        collector.ready.set()
        _, errors = browser.communicate(timeout=150)
        assert collector.result is not None, errors[-3000:]
        return collector.result
    finally:
        if browser.poll() is None:
            browser.kill()
            browser.wait()
        if relay is not None:
            relay.stop()
        collector.close()


@pytest.mark.parametrize("transport", ["polling", "websocket"])
def test_a_rebound_page_can_neither_spawn_nor_connect(tmp_path: Path, transport: str) -> None:
    result = _visit(tmp_path, transport)
    assert result["spawn"] == "403", result
    assert result["connect"].startswith("refused:"), result


def test_the_same_page_gets_through_when_its_name_is_allowed(tmp_path: Path) -> None:
    """Without the guard (here: its name allowed) the attack works: this test can see it."""
    assert _visit(tmp_path, "websocket", "--allow-host", NAME) == {
        "spawn": "200",
        "connect": "connected",
    }

"""
Headless Chromium: a page from another origin (another port on 127.0.0.1) can neither spawn a kernel
nor join a namespace of a loopback relay, over polling or WebSocket, unless the relay allows its origin.
"""

from __future__ import annotations

import json
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Relay
from tests.support import CHROMIUM, ROOT, headless_chromium

PAGE = ROOT / "tests" / "browser-origin" / "page.html"
PROBE = PAGE.with_name("probe.js")
CLIENT = (
    ROOT / "src" / "kernel_relay" / "demo" / "static" / "vendor" / "socket.io-client.esm.min.js"
)

pytestmark = [
    pytest.mark.timeout(300),
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Chromium is not installed"),
]


class ProbeServer:
    """Serves the probe page and the socket.io client, and collects the result the page posts."""

    def __init__(self) -> None:
        self.result: dict[str, Any] | None = None
        self.arrived = threading.Event()
        probe = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/hold":
                    probe.arrived.wait(90)
                    self.answer(b"", "image/gif", 404)
                elif path == "/page.html":
                    self.answer(PAGE.read_bytes(), "text/html")
                elif path == "/socket.io-client.esm.min.js":
                    self.answer(CLIENT.read_bytes(), "text/javascript")
                elif path == "/probe.js":
                    self.answer(PROBE.read_bytes(), "text/javascript")
                else:
                    self.answer(b"", "text/plain", 404)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                probe.result = json.loads(self.rfile.read(length))
                probe.arrived.set()
                self.answer(b"{}", "application/json")

            def answer(self, body: bytes, content_type: str, code: int = 200) -> None:
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.origin = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def visit(self, relay: Relay, kernel_id: str, transport: str) -> dict[str, Any]:
        """Open the page in headless Chromium and return what it posted."""
        self.result = None
        self.arrived.clear()
        url = f"{self.origin}/page.html?relay={relay.url}&kernel={kernel_id}&transport={transport}"
        completed = subprocess.run(
            headless_chromium(url),
            capture_output=True,
            text=True,
            timeout=150,
        )
        assert self.result is not None, completed.stderr[-3000:]
        return self.result

    def close(self) -> None:
        self.arrived.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def probe() -> Iterator[ProbeServer]:
    server = ProbeServer()
    try:
        yield server
    finally:
        server.close()


@pytest.mark.parametrize("transport", ["polling", "websocket"])
def test_foreign_page_can_neither_spawn_nor_connect(
    relay: Relay, kernel_id: str, probe: ProbeServer, transport: str
) -> None:
    """With the default policy the page's spawn never reaches a kernel and its namespace connect fails."""
    before = len(relay.kernels())
    result = probe.visit(relay, kernel_id, transport)
    assert result["spawn"].startswith("blocked"), result
    assert result["connect"].startswith("refused"), result
    assert len(relay.kernels()) == before


@pytest.mark.parametrize("transport", ["polling", "websocket"])
def test_allowed_origin_can_spawn_and_connect(
    tmp_path_factory: pytest.TempPathFactory, probe: ProbeServer, transport: str
) -> None:
    """With --allow-origin <the page's origin> the same page spawns a kernel and joins the namespace."""
    with Relay(tmp_path_factory.mktemp("runtime"), "--allow-origin", probe.origin) as relay:
        kernel_id = relay.spawn()
        result = probe.visit(relay, kernel_id, transport)
        assert result == {"spawn": "200", "connect": "connected"}
        assert len(relay.kernels()) == 2

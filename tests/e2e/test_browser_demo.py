"""The demo page at ``/``: its HTTP headers, ``--no-demo``, and a full session in headless Chromium."""

from __future__ import annotations

import base64
import fnmatch
import json
import struct
import tomllib
import zlib
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
import requests

from kernel_relay.demo import CONTENT_SECURITY_POLICY, DemoFiles, StaticFile, load_static_files
from tests.browser.harness import artifact, require_chromium, run_script
from tests.conftest import Relay
from tests.support import ROOT

STATIC = ROOT / "src" / "kernel_relay" / "demo" / "static"


def tiny_png(size: int = 48, block: int = 12) -> bytes:
    """A small PNG (four-colour checkerboard) built by hand, so the kernel needs no imaging library."""
    colours = [(37, 99, 235), (250, 204, 21), (22, 163, 74), (220, 38, 38)]
    rows = b"".join(
        b"\x00" + b"".join(bytes(colours[(x // block + 2 * (y // block)) % 4]) for x in range(size))
        for y in range(size)
    )

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows, 9))
        + chunk(b"IEND", b"")
    )


@pytest.fixture(scope="module")
def plain_relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Relay]:
    """A relay started with ``--no-demo``."""
    server = Relay(tmp_path_factory.mktemp("runtime"), "--no-demo")
    try:
        yield server
    finally:
        server.stop()


# --- HTTP ------------------------------------------------------------------------------------------------


def test_page_is_served_with_security_and_cache_headers(relay: Relay) -> None:
    """GET / answers the page as UTF-8 HTML with a CSP forbidding inline script, nosniff and an ETag."""
    response = requests.get(f"{relay.url}/", timeout=10)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/html; charset=utf-8"
    assert response.content == (STATIC / "index.html").read_bytes()
    csp = response.headers["Content-Security-Policy"]
    assert csp == CONTENT_SECURITY_POLICY
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Cache-Control"] == "no-cache"
    assert response.headers["ETag"].startswith('"')


@pytest.mark.parametrize(
    ("path", "content_type"),
    [
        ("app.js", "text/javascript; charset=utf-8"),
        ("app.css", "text/css; charset=utf-8"),
        ("favicon.svg", "image/svg+xml"),
        ("vendor/socket.io-client.esm.min.js", "text/javascript; charset=utf-8"),
        ("vendor/socket.io-client.LICENSES.txt", "text/plain; charset=utf-8"),
    ],
)
def test_assets_are_served_with_their_content_type(
    relay: Relay, path: str, content_type: str
) -> None:
    """Each file of the page is served under /demo/ byte for byte, with its own content type."""
    response = requests.get(f"{relay.url}/demo/{path}", timeout=10)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == content_type
    assert response.content == (STATIC / path).read_bytes()


def test_unchanged_files_revalidate_with_304(relay: Relay) -> None:
    """A request carrying the file's ETag in If-None-Match gets 304 with no body; a stale tag gets 200."""
    url = f"{relay.url}/demo/vendor/socket.io-client.esm.min.js"
    etag = requests.get(url, timeout=10).headers["ETag"]
    cached = requests.get(url, headers={"If-None-Match": etag}, timeout=10)
    assert cached.status_code == 304
    assert cached.content == b""
    stale = requests.get(url, headers={"If-None-Match": '"stale"'}, timeout=10)
    assert stale.status_code == 200 and len(stale.content) > 1000


def test_unknown_files_and_other_methods_are_refused(relay: Relay) -> None:
    """Unknown paths under /demo/ are 404 (including index.html and ../ tricks), POST is 405 with Allow."""
    for path in ("nope.js", "index.html", "../web.py", "vendor", "vendor/"):
        response = requests.get(f"{relay.url}/demo/{path}", timeout=10)
        assert response.status_code == 404, path
    posted = requests.post(f"{relay.url}/", data=b"x", timeout=10)
    assert posted.status_code == 405
    assert posted.headers["Allow"] == "GET, HEAD"
    head = requests.head(f"{relay.url}/demo/app.js", timeout=10)
    assert head.status_code == 200 and head.content == b""


def test_demo_leaves_the_rest_api_alone(relay: Relay) -> None:
    """With the demo mounted, REST routes and their JSON 404s behave as before."""
    assert requests.get(f"{relay.url}/api/kernelspecs", timeout=30).status_code == 200
    missing = requests.get(f"{relay.url}/no/such/route", timeout=10)
    assert missing.status_code == 404
    assert missing.headers["Content-Type"].startswith("application/json")


def test_no_demo_serves_no_page(plain_relay: Relay) -> None:
    """--no-demo leaves / and /demo/ to the API, which answers its JSON 404, while the API still works."""
    for path in ("/", "/demo/app.js"):
        response = requests.get(f"{plain_relay.url}{path}", timeout=10)
        assert response.status_code == 404, path
        assert "error" in response.json()
    assert requests.get(f"{plain_relay.url}/api/kernelspecs", timeout=30).status_code == 200


# --- files and packaging -----------------------------------------------------------------------------------


def test_static_files_load_recursively_skipping_hidden(tmp_path: Path) -> None:
    """load_static_files keys files by /-joined relative path and skips dotfiles and _private entries."""
    (tmp_path / "sub").mkdir()
    (tmp_path / "index.html").write_bytes(b"<p>")
    (tmp_path / "sub" / "x.js").write_bytes(b"1")
    (tmp_path / ".hidden").write_bytes(b"")
    (tmp_path / "__pycache__").mkdir()
    loaded = load_static_files(tmp_path)  # type: ignore[arg-type]
    assert sorted(loaded) == ["index.html", "sub/x.js"]
    assert loaded["sub/x.js"] == StaticFile.of("x.js", b"1")
    assert loaded["sub/x.js"].content_type == "text/javascript; charset=utf-8"
    assert StaticFile.of("a.bin", b"").content_type == "application/octet-stream"
    assert isinstance(DemoFiles(loaded), DemoFiles)


def test_package_data_ships_every_static_file() -> None:
    """pyproject's package-data globs cover every file of the page, so `pip install .` serves it."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["package-data"]["kernel_relay"]
    package = ROOT / "src" / "kernel_relay"
    shipped = set(load_static_files())
    assert {"index.html", "app.js", "app.css", "vendor/socket.io-client.esm.min.js"} <= shipped
    for name in shipped:
        relative = (STATIC / name).relative_to(package).as_posix()
        matches = [
            pattern
            for pattern in patterns
            if fnmatch.fnmatch(relative, pattern) and relative.count("/") == pattern.count("/")
        ]
        assert matches, f"{relative} is not in package-data"


def test_page_has_no_inline_script_or_handlers() -> None:
    """The page's HTML loads its only script from a file and has no on* handler attributes."""

    class Scan(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.scripts: list[dict[str, str | None]] = []
            self.handlers: list[str] = []

        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            if tag == "script":
                self.scripts.append(dict(attrs))
            self.handlers += [f"{tag} {name}" for name, _ in attrs if name.startswith("on")]

    scan = Scan()
    scan.feed((STATIC / "index.html").read_text())
    assert scan.scripts == [{"type": "module", "src": "demo/app.js"}]
    assert scan.handlers == []


# --- Chromium --------------------------------------------------------------------------------------------


def drive_demo(relay: Relay, screenshot: Path, fragment: str = "") -> dict[str, Any]:
    """Run tests/browser/demo_page.js against ``relay`` and check everything the page showed."""
    require_chromium()
    before = {kernel["id"] for kernel in relay.kernels()}
    screenshot.unlink(missing_ok=True)
    result = run_script(
        "demo_page.js",
        f"{relay.url}/{fragment}",
        str(screenshot),
        env={"DEMO_PNG_BASE64": base64.b64encode(tiny_png()).decode("ascii")},
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-4000:] + relay.output()[-3000:]
    seen: dict[str, Any] = json.loads(result.stdout)

    assert seen["page"] == {"status": 200, "csp": CONTENT_SECURITY_POLICY}
    assert "python3" in seen["kernelspecs"]
    assert seen["editorEnabled"] is True

    assert seen["result"]["prompt"] == "In [1]:"
    assert seen["result"]["status"] == "ok"
    assert [(o["kind"], o["text"]) for o in seen["result"]["outputs"]] == [("execute-result", "2")]

    assert [(o["kind"], o["text"]) for o in seen["print"]["outputs"]] == [
        ("stream stdout", "hello from the demo page\n")
    ]

    (error,) = seen["error"]["outputs"]
    assert seen["error"]["status"] == "error"
    assert error["kind"] == "error" and error["ename"] == "ZeroDivisionError"
    assert "ZeroDivisionError: division by zero" in error["text"]
    assert "\x1b" not in error["text"] and "[0;" not in error["text"]
    assert error["coloured"] > 0, "IPython's ANSI colours are rendered as styled spans"

    assert seen["display"]["status"] == "ok"
    assert seen["display"]["images"] == [
        {"complete": True, "width": 48, "height": 48, "src": "data:image/png;base64,"}
    ]

    assert [(o["kind"], o["text"]) for o in seen["input"]["outputs"]] == [
        ("stream stdin", "name? chromium\n"),
        ("stream stdout", "hello chromium\n"),
    ]

    marker, interrupted = seen["interrupt"]["outputs"]
    assert (marker["kind"], marker["text"]) == ("stream stdout", "sleeping\n")
    assert interrupted["ename"] == "KeyboardInterrupt"
    assert seen["interrupt"]["status"] == "error"

    assert seen["afterShutdown"] == {
        "status": "python3 shut down",
        "editorEnabled": False,
        "startEnabled": True,
    }
    assert seen["restartedCells"] == 0, "a new kernel starts with a clean page"
    assert seen["afterDeath"]["status"] == "python3 died"
    assert seen["afterDeath"]["editorEnabled"] is False
    assert seen["afterDeath"]["cell"]["status"] == "aborted"
    assert seen["cspViolations"] == []
    assert seen["consoleErrors"] == []
    assert seen["pageErrors"] == []

    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert screenshot.stat().st_size > 20_000, "the screenshot shows a rendered page"
    after = {kernel["id"] for kernel in relay.kernels()}
    assert after <= before, "the kernels the page started are gone"
    return seen


def test_demo_session_in_chromium(relay: Relay) -> None:
    """In headless Chromium the page spawns python3 and shows a result, a print, a coloured traceback, a PNG,
    an input() round trip and an interrupted sleep, shuts the kernel down, starts another and sees it die;
    a screenshot is saved."""
    seen = drive_demo(relay, artifact("demo-page.png"))
    assert len(seen["websockets"]) == 2, (
        "one Engine.IO connection per kernel, upgraded to WebSocket"
    )
    assert all("/socket.io/?EIO=4&transport=websocket&sid=" in url for url in seen["websockets"])


def test_demo_session_over_polling_only(tmp_path_factory: pytest.TempPathFactory) -> None:
    """The same session works when the relay offers long-polling only (--transports polling)."""
    server = Relay(tmp_path_factory.mktemp("runtime"), "--transports", "polling")
    try:
        seen = drive_demo(server, artifact("demo-page-polling.png"))
    finally:
        server.stop()
    assert seen["websockets"] == []
    assert seen["engineRequests"] > 10


def test_demo_session_with_a_token(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Opened as /#token=<t> on a relay with a token, the page works and drops the token from its address."""
    token = "demo-page-token-0123456789abcdef"
    server = Relay(tmp_path_factory.mktemp("runtime"), token=token)
    try:
        assert requests.get(f"{server.url}/api/kernelspecs", timeout=10).status_code == 401
        seen = drive_demo(server, artifact("demo-page-token.png"), fragment=f"#token={token}")
    finally:
        server.stop()
    assert seen["location"] == f"{server.url}/"


def test_demo_without_its_token_says_how_to_give_it(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """Opened without the token on a relay that has one, the page is served and says how to pass the token."""
    require_chromium()
    server = Relay(tmp_path_factory.mktemp("runtime"), token="another-token-0123456789abcdef")
    try:
        result = run_script("demo_no_token.js", f"{server.url}/", timeout=180)
    finally:
        server.stop()
    assert result.returncode == 0, result.stderr[-4000:]
    seen = json.loads(result.stdout)
    assert seen["pageStatus"] == 200
    assert "#token=" in seen["status"]
    assert seen["startEnabled"] is False

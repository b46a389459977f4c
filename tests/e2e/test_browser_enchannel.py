"""enchannel-socketio-backend 0.1.0 as published (socket.io-client 1.7.4: Engine.IO 3) in headless Chromium."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.browser.harness import artifact, require_chromium, run_script
from tests.conftest import Relay
from tests.support import free_port

PAGE_PORT = free_port()


@pytest.fixture(scope="module")
def cors_relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Relay]:
    """A relay that lets pages from http://127.0.0.1:PAGE_PORT (another origin) use it."""
    server = Relay(
        tmp_path_factory.mktemp("runtime"), "--allow-origin", f"http://127.0.0.1:{PAGE_PORT}"
    )
    try:
        yield server
    finally:
        server.stop()


def run_enchannel(
    relay: Relay,
    mode: str,
    screenshot_name: str,
    stdin_timeout_ms: int = 0,
    wait_timeout_ms: int = 90_000,
) -> dict[str, Any]:
    """Run tests/browser/enchannel_page.js against ``relay`` and return its observations."""
    require_chromium()
    screenshot = artifact(screenshot_name)
    screenshot.unlink(missing_ok=True)
    result = run_script(
        "enchannel_page.js",
        relay.url,
        str(screenshot),
        mode,
        str(PAGE_PORT),
        str(stdin_timeout_ms),
        env={"ENCHANNEL_TIMEOUT": str(wait_timeout_ms)},
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-4000:] + relay.output()[-3000:]
    observed: dict[str, Any] = json.loads(result.stdout)
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return observed


@pytest.mark.parametrize("mode", ["same-origin", "cross-origin"])
def test_enchannel_session_in_chromium(mode: str, request: pytest.FixtureRequest) -> None:
    """A page bundled from the npm package spawns python3, gets kernel_info and execute replies and output
    over Engine.IO 3 (polling, then WebSocket), disconnects and shuts the kernel down through its own API."""
    relay: Relay = request.getfixturevalue("relay" if mode == "same-origin" else "cors_relay")
    before = {kernel["id"] for kernel in relay.kernels()}
    observed = run_enchannel(relay, mode, f"enchannel-{mode}.png")
    assert observed["ok"], (
        f"{observed.get('error', '')}\n{observed.get('engineFailures')}\n{relay.output()[-3000:]}"
    )
    assert observed["bundled"]["enchannel-socketio-backend"] == "0.1.0"
    assert observed["bundled"]["socket.io-client"].startswith("1.")
    expected_origin = relay.url if mode == "same-origin" else f"http://127.0.0.1:{PAGE_PORT}"
    assert observed["pageOrigin"] == expected_origin
    session = observed["result"]

    assert session["kernelInfo"] == {
        "type": "kernel_info_reply",
        "status": "ok",
        "language": "python",
        "frozen": True,
    }
    assert session["execute"]["reply"] == "ok"
    assert session["execute"]["stream"] == "hello from enchannel, ünïcödé 🎉\n"
    assert session["execute"]["result"] == ["42"]
    assert session["disconnected"] is True
    assert session["shutdown"] == "ok", "enchannel's shutdown() found its kernelId in the reply"

    assert observed["pageErrors"] == []
    problems = [
        text
        for text in observed["consoleErrors"]
        if "WebSocket" in text or "CORS" in text or "blocked" in text
    ]
    assert problems == []
    polls = observed["engineRequests"]
    assert polls and all("EIO=3" in url for url in polls)
    # enchannel opens two Engine.IO connections (its connect() joins /shell/<id> twice): both upgrade, and
    # neither is lost and reopened (a non-ASCII character in a polling payload once made 1.x reconnect).
    assert len(observed["websockets"]) == 2
    assert observed["engineFailures"] == []
    assert all("EIO=3&transport=websocket" in url for url in observed["websockets"])
    assert session["kernelId"] not in {kernel["id"] for kernel in relay.kernels()}
    assert {kernel["id"] for kernel in relay.kernels()} <= before


def test_enchannel_input_reaches_stdio(relay: Relay) -> None:
    """input() in the kernel reaches enchannel's stdio channel and its input_reply is read by the kernel."""
    observed = run_enchannel(relay, "same-origin", "enchannel-stdin.png", stdin_timeout_ms=10_000)
    assert observed["ok"], observed.get("error", "")
    assert observed["result"]["stdin"] == {
        "prompt": "name? ",
        "reply": "ok",
        "ename": None,
        "stream": "hello enchannel\n",
    }


def test_enchannel_cross_origin_with_any_origin(tmp_path_factory: pytest.TempPathFactory) -> None:
    """With --allow-origin '*' (what the original relay did) a page from another origin can use enchannel."""
    server = Relay(tmp_path_factory.mktemp("runtime"), "--allow-origin", "*")
    try:
        observed = run_enchannel(
            server, "cross-origin", "enchannel-any-origin.png", wait_timeout_ms=20_000
        )
        assert observed["ok"], observed.get("error", "")
        assert observed["result"]["execute"]["result"] == ["42"]
    finally:
        server.stop()

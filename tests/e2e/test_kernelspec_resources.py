"""
Kernelspec resource files on a real relay (``GET /kernelspecs/<name>/<file>``): a symlink out of the
kernelspec's directory and a FIFO in it are answered 404, and the relay stays responsive meanwhile.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.conftest import Relay

pytestmark = pytest.mark.timeout(60)

SPEC = "resources"


@pytest.fixture(scope="module")
def jupyter_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("jupyter")
    directory = root / "kernels" / SPEC
    directory.mkdir(parents=True)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python with odd resources",
        "language": "python",
    }
    (directory / "kernel.json").write_text(json.dumps(spec))
    (directory / "logo-64x64.png").write_bytes(b"\x89PNG a logo")
    (directory / "kernel.js").symlink_to("/etc/passwd")
    os.mkfifo(directory / "kernel.css")
    return root


@pytest.fixture(scope="module")
def relay(tmp_path_factory: pytest.TempPathFactory, jupyter_path: Path) -> Iterator[Relay]:
    server = Relay(tmp_path_factory.mktemp("runtime"), env={"JUPYTER_PATH": str(jupyter_path)})
    try:
        yield server
    finally:
        server.stop()


def test_a_symlink_out_of_the_kernelspec_directory_is_not_served(relay: Relay) -> None:
    """kernel.js -> /etc/passwd is a 404, and nothing of /etc/passwd is sent; the logo is served."""
    response = requests.get(f"{relay.url}/kernelspecs/{SPEC}/kernel.js", timeout=10)
    assert response.status_code == 404
    assert b"root:" not in response.content
    logo = requests.get(f"{relay.url}/kernelspecs/{SPEC}/logo-64x64.png", timeout=10)
    assert logo.status_code == 200 and logo.content == b"\x89PNG a logo"


def test_a_fifo_in_the_kernelspec_directory_is_a_404_and_the_relay_stays_responsive(
    relay: Relay, jupyter_path: Path
) -> None:
    """A FIFO named kernel.css is a 404 without waiting for a writer; other requests are answered meanwhile."""
    fifo = jupyter_path / "kernels" / SPEC / "kernel.css"
    answers: list[int] = []
    reader = threading.Thread(
        target=lambda: answers.append(
            requests.get(f"{relay.url}/kernelspecs/{SPEC}/kernel.css", timeout=30).status_code
        ),
        daemon=True,
    )
    reader.start()
    try:
        reader.join(5)
        health = requests.get(f"{relay.url}/api/health", timeout=5)
        assert health.status_code == 200
        reader.join(10)
        assert answers == [404]
    finally:
        # Were the relay waiting in open() for a writer, give it one (and EOF) so that it can stop.
        try:
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        except OSError:
            pass
        reader.join(30)

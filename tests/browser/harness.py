"""
Helpers for the headless Chromium tests: find Chromium, install this folder's npm packages, run its scripts.

Chromium is Debian's (``/usr/bin/chromium``, or ``$KERNEL_RELAY_CHROMIUM``), driven by ``playwright-core``,
which never downloads a browser. Without Chromium the tests skip, except under ``CI=true`` where a missing
browser is a failure: CI installs it (``.ci/run``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support import ROOT, ensure_node_modules

BROWSER_DIR = Path(__file__).resolve().parent
ARTIFACTS = ROOT / "test-artifacts"


def chromium_path() -> Path:
    return Path(os.environ.get("KERNEL_RELAY_CHROMIUM", "/usr/bin/chromium"))


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def require(condition: bool, reason: str) -> None:
    """Skip the test with ``reason`` when ``condition`` is false, or fail it under CI."""
    if condition:
        return
    if in_ci():
        pytest.fail(f"{reason} (CI=true: the CI setup must provide it)")
    pytest.skip(reason)


def require_node() -> None:
    require(
        shutil.which("node") is not None and shutil.which("npm") is not None,
        "node and npm are required",
    )


def require_chromium() -> None:
    require_node()
    path = chromium_path()
    require(
        path.is_file() and os.access(path, os.X_OK),
        f"Chromium is not installed at {path} (apt-get install chromium)",
    )


def ensure_browser_modules() -> Path:
    """``npm ci`` this folder (from its package-lock.json) unless node_modules is already up to date."""
    return ensure_node_modules(BROWSER_DIR, {"PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD": "1"})


def run_script(
    script: str, *args: str, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """Run ``tests/browser/<script>`` with Node; output as text."""
    ensure_browser_modules()
    return subprocess.run(
        ["node", str(BROWSER_DIR / script), *args],
        cwd=BROWSER_DIR,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={
            **os.environ,
            "PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD": "1",
            "KERNEL_RELAY_CHROMIUM": str(chromium_path()),
            **(env or {}),
        },
    )


def artifact(name: str) -> Path:
    """A path under ``test-artifacts/`` (gitignored) for a screenshot or log a person may want to look at."""
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS / name

"""The demo's vendored socket.io-client bundle is exactly what tests/browser's lock file builds."""

from __future__ import annotations

import json
from pathlib import Path

from tests.browser.harness import BROWSER_DIR, require_node, run_script
from tests.support import ROOT

VENDOR = ROOT / "src" / "kernel_relay" / "demo" / "static" / "vendor"
FILES = ("socket.io-client.esm.min.js", "socket.io-client.LICENSES.txt")


def locked_version(package: str) -> str:
    lock = json.loads((BROWSER_DIR / "package-lock.json").read_text())
    version: str = lock["packages"][f"node_modules/{package}"]["version"]
    return version


def test_vendored_bundle_rebuilds_identically(tmp_path: Path) -> None:
    """build_vendor.js run from the committed lock reproduces the committed bundle and licence notice."""
    require_node()
    result = run_script("build_vendor.js", str(tmp_path), timeout=300)
    assert result.returncode == 0, result.stderr
    for name in FILES:
        assert (tmp_path / name).read_bytes() == (VENDOR / name).read_bytes(), (
            f"{name} is stale: run `node tests/browser/build_vendor.js {VENDOR.relative_to(ROOT)}`"
        )


def test_vendored_bundle_names_its_version_and_licences() -> None:
    """The bundle's banner names the locked socket.io-client version and the notice has each MIT licence."""
    version = locked_version("socket.io-client-4")
    assert version.startswith("4.8.")
    bundle = (VENDOR / FILES[0]).read_text()
    assert bundle.startswith(f"/*! socket.io-client {version} (MIT)")
    assert "export{" in bundle, "an ES module the page imports"
    notice = (VENDOR / FILES[1]).read_text()
    for package in ("socket.io-client", "engine.io-client", "engine.io-parser", "socket.io-parser"):
        assert f"\n{package} " in notice
    assert notice.count("Permission is hereby granted") >= 5

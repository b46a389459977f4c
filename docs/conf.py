"""Sphinx configuration of kernel-relay's documentation: plain reStructuredText, Sphinx's default theme."""

from __future__ import annotations

import tomllib
from pathlib import Path

# The version pyproject.toml declares: the docs build does not install or import the package.
with (Path(__file__).parent.parent / "pyproject.toml").open("rb") as pyproject:
    release = tomllib.load(pyproject)["project"]["version"]

project = "kernel-relay"
author = "kernel-relay developers"
copyright = "kernel-relay developers"
extensions: list[str] = []
# deploy/ holds files the pages include (a systemd unit, a Dockerfile), not pages.
exclude_patterns = ["_build", "deploy"]
html_theme = "alabaster"
# Plain literal blocks (``::``) hold shell sessions, JSON with ellipses and configuration files: shown as
# they are. Examples that are code say their language (``.. code-block:: python``).
highlight_language = "none"

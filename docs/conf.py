"""Sphinx configuration of kernel-relay's documentation: plain reStructuredText, the default theme."""

from __future__ import annotations

project = "kernel-relay"
author = "kernel-relay developers"
copyright = "kernel-relay developers"
extensions: list[str] = []
# deploy/ holds files the pages include (a unit, a Dockerfile), not pages.
exclude_patterns = ["_build", "deploy"]
html_theme = "alabaster"
# Plain literal blocks (``::``) hold shell sessions, JSON with ellipses and config files: shown as they are.
# Examples that are code say their language (``.. code-block:: python``).
highlight_language = "none"

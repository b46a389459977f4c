"""
The documentation against the code it describes: every option of ``kernel-relay --help`` in the generated
reference (docs/options.rst), and every page the README points to present.
"""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest

from kernel_relay.tap import Options

ROOT = Path(__file__).parent.parent
DOCS = ROOT / "docs"

#: An option's entry in ``--help`` (``  -p, --port PORT ...``, ``  --no-auth ...``).
_HELP_ENTRY = re.compile(r"^  (?:-\w, )?--([a-z0-9][a-z0-9-]*)", re.MULTILINE)
#: An option's entry in docs/options.rst (````--port PORT````).
_REFERENCE_ENTRY = re.compile(r"^``--([a-z0-9][a-z0-9-]*)[ `]", re.MULTILINE)


def help_text() -> str:
    """What ``kernel-relay --help`` prints."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        Options().parseOptions(["--help"])
    return out.getvalue()


def test_every_option_in_help_is_in_the_reference() -> None:
    """Each option --help lists (and each option Options declares) has its entry in docs/options.rst."""
    listed = set(_HELP_ENTRY.findall(help_text()))
    declared = {name.rstrip("=") for name in Options().longOpt}
    reference = set(_REFERENCE_ENTRY.findall((DOCS / "options.rst").read_text(encoding="utf-8")))
    assert len(listed) > 40, sorted(listed)
    assert declared <= listed, sorted(declared - listed)
    assert listed <= reference, f"regenerate docs/options.rst: {sorted(listed - reference)} missing"


def test_the_readme_points_to_pages_that_exist() -> None:
    """Every docs/ page README.rst links to exists, and every page of docs/ is linked from it."""
    readme = (ROOT / "README.rst").read_text(encoding="utf-8")
    targets = set(re.findall(r"^\.\. _[^:]+: (docs/[\w./-]+)$", readme, re.MULTILINE))
    pages = {f"docs/{page.name}" for page in DOCS.glob("*.rst")} - {"docs/index.rst"}
    assert targets == pages

"""
The house rules of ``src/`` that anyone can check without running the relay (issue #31): no module over
450 lines, no function over 60 lines, and imports that point down the layers of docs/architecture.rst's
table (/work/shared/DESIGN.md): each layer knows only what is below it, and only ``tap`` and
``command_line`` wire everything together.

Read from the source with ``ast``: nothing here imports the relay.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "kernel_relay"

MAX_MODULE_LINES = 450
MAX_FUNCTION_LINES = 60

# Today's offenders, being cut by other branches of issue #31 at the time of writing. These lists must
# shrink to empty: remove an entry as soon as its module or function is cut (the staleness tests below
# fail for an entry that no longer offends), and never add one.
MODULES_OVER_THE_LIMIT: frozenset[str] = frozenset()
FUNCTIONS_OVER_THE_LIMIT: frozenset[str] = frozenset()


def _modules() -> Iterator[tuple[str, Path]]:
    """Every module of the package, by its path below ``src`` (``kernel_relay/http/api.py``)."""
    for path in sorted(PACKAGE.rglob("*.py")):
        yield path.relative_to(SRC).as_posix(), path


@cache
def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text())


def _line_count(path: Path) -> int:
    return len(path.read_text().splitlines())


def _functions(tree: ast.AST, prefix: str = "") -> Iterator[tuple[str, int]]:
    """Every function and method (nested ones too) by qualified name, with its length in lines."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            name = prefix + node.name
            assert node.end_lineno is not None
            yield name, node.end_lineno - node.lineno + 1
            yield from _functions(node, name + ".")
        elif isinstance(node, ast.ClassDef):
            yield from _functions(node, prefix + node.name + ".")
        else:
            yield from _functions(node, prefix)


def _long_functions() -> dict[str, int]:
    found = {}
    for name, path in _modules():
        for function, length in _functions(_tree(path)):
            if length > MAX_FUNCTION_LINES:
                found[f"{name}::{function}"] = length
    return found


def test_no_module_is_over_the_line_limit() -> None:
    """No module of src/ has more than 450 lines, but for the listed ones being cut."""
    over = {
        name: _line_count(path)
        for name, path in _modules()
        if _line_count(path) > MAX_MODULE_LINES and name not in MODULES_OVER_THE_LIMIT
    }
    assert over == {}, f"modules over {MAX_MODULE_LINES} lines: cut them along their seams"


def test_no_function_is_over_the_line_limit() -> None:
    """No function of src/ has more than 60 lines, but for the listed ones being cut."""
    over = {name: length for name, length in _long_functions().items()}
    for allowed in FUNCTIONS_OVER_THE_LIMIT:
        over.pop(allowed, None)
    assert over == {}, f"functions over {MAX_FUNCTION_LINES} lines"


def test_the_size_allow_lists_name_only_todays_offenders() -> None:
    """An allowed module or function that is no longer too long leaves the allow-list (it must shrink)."""
    sizes = {name: _line_count(path) for name, path in _modules()}
    stale_modules = {
        name for name in MODULES_OVER_THE_LIMIT if sizes.get(name, 0) <= MAX_MODULE_LINES
    }
    stale_functions = FUNCTIONS_OVER_THE_LIMIT - set(_long_functions())
    assert stale_modules == set() and stale_functions == set()


# -- imports ----------------------------------------------------------------------------------------------

#: What no layer knows below ``tap``: its wiring.
WIRING = ("kernel_relay.tap", "kernel_relay.command_line")
#: The wire formats and their transports, which the core and the fleet never know.
WIRE_FORMATS = (
    "kernel_relay.engineio",
    "kernel_relay.socketio",
    "kernel_relay.fronts",
    "kernel_relay.http",
    "kernel_relay.websocket",
    "kernel_relay.websocket_frames",
    "klein",
    "autobahn",
    "twisted.web",
)
JUPYTER = ("jupyter_client", "zmq", "txzmq", "kernel_relay.kernels")
#: The layers above the foundations: what a foundation module (auth, budget, metrics, ...) never knows.
LAYERS = (
    "kernel_relay.engineio",
    "kernel_relay.socketio",
    "kernel_relay.kernels",
    "kernel_relay.relay",
    "kernel_relay.fronts",
    "kernel_relay.http",
    "kernel_relay.fleet",
    "kernel_relay.websocket",
    *WIRING,
)

#: (modules, by a prefix of their dotted name; what they must not import, by prefix), as DESIGN.md's table
#: says. A prefix ending in "*" matches any name that starts with it ("kernel_relay.kernels._*": the package's
#: private modules, its internals).
RULES: list[tuple[tuple[str, ...], tuple[str, ...]]] = [
    (
        ("kernel_relay.engineio",),
        (
            "kernel_relay.socketio",
            "kernel_relay.relay",
            "kernel_relay.fronts",
            "kernel_relay.http",
            "kernel_relay.fleet",
            *JUPYTER,
            *WIRING,
        ),
    ),
    (
        ("kernel_relay.socketio",),
        (
            "kernel_relay.relay",
            "kernel_relay.fronts",
            "kernel_relay.http",
            "kernel_relay.fleet",
            *JUPYTER,
            *WIRING,
        ),
    ),
    (
        ("kernel_relay.kernels",),
        (
            "kernel_relay.http",
            "kernel_relay.socketio",
            "kernel_relay.engineio",
            "kernel_relay.websocket",
            "kernel_relay.websocket_frames",
            "kernel_relay.fronts",
            "kernel_relay.relay",
            "klein",
            "autobahn",
            "twisted.web",
            *WIRING,
        ),
    ),
    (("kernel_relay.relay",), (*WIRE_FORMATS, *WIRING)),
    (
        ("kernel_relay.fronts.socketio",),
        ("kernel_relay.fronts.jupyter*", "kernel_relay.kernels._*", *WIRING),
    ),
    (
        ("kernel_relay.fronts.jupyter*",),
        ("kernel_relay.fronts.socketio", "kernel_relay.kernels._*", *WIRING),
    ),
    (("kernel_relay.http",), ("zmq", "txzmq", "kernel_relay.kernels._zmq", *WIRING)),
    (("kernel_relay.fleet",), (*WIRE_FORMATS, *WIRING)),
    (
        (
            "kernel_relay.auth",
            "kernel_relay.budget",
            "kernel_relay.jsontext",
            "kernel_relay.logs",
            "kernel_relay.memory",
            "kernel_relay.metrics",
            "kernel_relay.settings",
            "kernel_relay.twisted_internals",
            "kernel_relay.jupyter_client_internals",
            "kernel_relay.txredisapi_internals",
            "kernel_relay.websocket_frames",
        ),
        LAYERS,
    ),
    (
        ("kernel_relay.websocket",),
        tuple(layer for layer in LAYERS if layer != "kernel_relay.websocket"),
    ),
    (("kernel_relay.cli",), ("kernel_relay.tap",)),
]

# Imports that break a rule today, on files other branches of issue #31 are reworking; each must go.
IMPORTS_ALLOWED_FOR_NOW: frozenset[tuple[str, str]] = frozenset()


def _dotted(name: str) -> tuple[str, bool]:
    """A module path below src/ as a dotted name, and whether it is a package's ``__init__``."""
    parts = name.removesuffix(".py").split("/")
    if parts[-1] == "__init__":
        return ".".join(parts[:-1]), True
    return ".".join(parts), False


def _imports(name: str, path: Path) -> Iterator[str]:
    """What a module imports, as absolute dotted names (``from . import x`` gives the package and ``x``)."""
    dotted, is_package = _dotted(name)
    package = dotted if is_package else dotted.rpartition(".")[0]
    for node in ast.walk(_tree(path)):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            yield module
            yield from (f"{module}.{alias.name}" for alias in node.names)


def _matches(name: str, prefix: str) -> bool:
    if prefix.endswith("*"):
        return name.startswith(prefix[:-1])
    return name == prefix or name.startswith(prefix + ".")


def _violations() -> set[tuple[str, str]]:
    found = set()
    for name, path in _modules():
        dotted, _ = _dotted(name)
        imported = set(_imports(name, path))
        for modules, forbidden in RULES:
            if not any(_matches(dotted, module) for module in modules):
                continue
            for target in imported:
                if any(_matches(target, prefix) for prefix in forbidden):
                    found.add((dotted, target))
    return found


def test_imports_point_down_the_layers() -> None:
    """No module imports a layer above its own, a sibling front, kernel internals outside kernels, or the wiring."""
    assert sorted(_violations() - IMPORTS_ALLOWED_FOR_NOW) == []


def test_the_import_allow_list_names_only_todays_violations() -> None:
    """An allowed import that is gone leaves the allow-list (it must shrink to empty)."""
    assert IMPORTS_ALLOWED_FOR_NOW - _violations() == set()


def test_only_the_plugin_imports_the_wiring() -> None:
    """tap is imported by no module outside it (the Twisted plugin loads it lazily), command_line only by tap."""
    importers = {
        _dotted(name)[0]: {
            target
            for target in _imports(name, path)
            if _matches(target, "kernel_relay.tap") or _matches(target, "kernel_relay.command_line")
        }
        for name, path in _modules()
    }
    wiring = {module: targets for module, targets in importers.items() if targets}
    assert wiring and all(_matches(module, "kernel_relay.tap") for module in wiring), wiring


@pytest.mark.parametrize(
    ("module", "target", "broken"),
    [
        ("kernel_relay.relay.core", "kernel_relay.socketio.packet", True),
        ("kernel_relay.fronts.socketio", "kernel_relay.fronts.jupyter_wire", True),
        ("kernel_relay.fronts.jupyter", "kernel_relay.kernels._zmq", True),
        ("kernel_relay.fronts.jupyter", "kernel_relay.kernels", False),
        ("kernel_relay.engineio.session", "kernel_relay.budget", False),
    ],
)
def test_the_rules_catch_what_they_should(module: str, target: str, broken: bool) -> None:
    """The rule matching itself: an upward import is caught, an allowed one is not."""
    caught = any(
        any(_matches(module, m) for m in modules) and any(_matches(target, f) for f in forbidden)
        for modules, forbidden in RULES
    )
    assert caught is broken

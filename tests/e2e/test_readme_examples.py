"""
The README's client examples, taken from README.rst as written and run as a user would paste them, against
a real relay: the python-socketio script, the Node socket.io-client script and the REST API's curl lines.
Only the relay's address is substituted (and, in the curl lines, the example kernel id by a real one).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest

from tests.conftest import Relay
from tests.support import ROOT, ensure_node_modules, node_available

README = ROOT / "README.rst"

#: Where the examples' programs expect the relay, and the curl lines' form of it.
EXAMPLE_URL = "http://localhost:3000"
EXAMPLE_HOST = "localhost:3000"

#: The paragraphs whose literal block (``::``) is each example.
PYTHON_MARKER = "Python (``python-socketio``)"
NODE_MARKER = "Node (``socket.io-client``"
SPAWN_MARKER = "``GET /spawn/<kernelSpecName>``"
INTERRUPT_MARKER = "``POST /api/kernels/<id>/interrupt``"
SHUTDOWN_MARKER = "``GET /shutdown/<id>``"


def literal_block(marker: str) -> str:
    """The literal block after the paragraph of README.rst that starts with ``marker``, dedented."""
    lines = README.read_text(encoding="utf-8").splitlines()
    starts = [i for i, line in enumerate(lines) if line.lstrip().startswith(marker)]
    assert len(starts) == 1, f"README.rst should have one paragraph starting {marker!r}"
    colon = next(i for i in range(starts[0], len(lines)) if lines[i].rstrip().endswith("::"))
    indent = len(lines[colon]) - len(lines[colon].lstrip())
    block: list[str] = []
    for line in lines[colon + 1 :]:
        if line.strip() and len(line) - len(line.lstrip()) <= indent:
            break
        block.append(line)
    text = textwrap.dedent("\n".join(block)).strip("\n")
    assert text, f"no literal block after {marker!r}"
    return text + "\n"


def at_relay(source: str, relay: Relay) -> str:
    """The example with the relay's URL for the one it names."""
    assert EXAMPLE_URL in source, f"the example no longer names {EXAMPLE_URL}"
    return source.replace(EXAMPLE_URL, relay.url)


def kernel_ids(relay: Relay) -> set[object]:
    return {kernel["id"] for kernel in relay.kernels()}


def test_the_python_example_prints_the_result_and_exits(relay: Relay, tmp_path: Path) -> None:
    """The python-socketio script prints the cell's result and the reply, exits 0 and stops its kernel."""
    script = tmp_path / "example.py"
    script.write_text(at_relay(literal_block(PYTHON_MARKER), relay))
    before = kernel_ids(relay)
    result = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=90, cwd=tmp_path
    )
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert "iopub execute_input {'code': '1+1', 'execution_count': 1}" in lines
    assert (
        "iopub execute_result {'data': {'text/plain': '2'}, 'metadata': {}, 'execution_count': 1}"
        in lines
    )
    assert "iopub status {'execution_state': 'idle'}" in lines
    assert "shell ok" in lines
    assert kernel_ids(relay) == before


@pytest.mark.skipif(not node_available(), reason="needs node and npm")
def test_the_node_example_prints_the_result_and_exits(relay: Relay, tmp_path: Path) -> None:
    """The socket.io-client script prints the cell's result and the reply, then exits by itself."""
    node_modules = ensure_node_modules() / "node_modules"
    script = tmp_path / "example.js"
    script.write_text(at_relay(literal_block(NODE_MARKER), relay))
    before = kernel_ids(relay)
    # A script that does not end by itself fails here, on the timeout.
    result = subprocess.run(
        ["node", str(script)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env={**os.environ, "NODE_PATH": str(node_modules)},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert (
        "execute_result { data: { 'text/plain': '2' }, metadata: {}, execution_count: 1 }" in lines
    )
    assert "status { execution_state: 'idle' }" in lines
    assert "reply ok" in lines
    assert kernel_ids(relay) == before


def curl_example(marker: str) -> tuple[list[str], str]:
    """The ``$ curl ...`` line of an example block, as arguments, and the output line after it."""
    command, output = literal_block(marker).splitlines()[:2]
    assert command.startswith("$ curl "), command
    return shlex.split(command.removeprefix("$ ")), output


def curl(argv: list[str], relay: Relay, replace: dict[str, str]) -> str:
    """Run a README curl line against the relay; its output."""
    arguments = []
    for argument in argv:
        argument = argument.replace(EXAMPLE_HOST, f"127.0.0.1:{relay.port}")
        for old, new in replace.items():
            argument = argument.replace(old, new)
        arguments.append(argument)
    assert any(f"127.0.0.1:{relay.port}" in argument for argument in arguments), argv
    result = subprocess.run(arguments, capture_output=True, text=True, timeout=90, check=True)
    return result.stdout


@pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")
def test_the_rest_examples_answer_as_shown(relay: Relay) -> None:
    """The REST API section's curl lines spawn, interrupt and shut down a kernel, answering as shown."""
    spawn, spawned = curl_example(SPAWN_MARKER)
    example_id = json.loads(spawned)["id"]
    answer = curl(spawn, relay, {})
    kernel_id = json.loads(answer)["id"]
    uuid.UUID(kernel_id)
    assert answer == spawned.replace(example_id, kernel_id)
    assert kernel_id in kernel_ids(relay)
    for marker in (INTERRUPT_MARKER, SHUTDOWN_MARKER):
        command, shown = curl_example(marker)
        assert example_id in " ".join(command), f"the {marker} example names another kernel"
        assert curl(command, relay, {example_id: kernel_id}) == shown.replace(example_id, kernel_id)
    assert kernel_id not in kernel_ids(relay)

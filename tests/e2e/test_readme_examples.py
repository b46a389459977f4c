"""
The client examples of README.rst and docs/, taken from the files as written and run as a user would paste
them, against a real relay: each is the code block after a label ``.. _example-<name>:``. Only the relay's
address (and token, and in the curl lines the example kernel id) is substituted.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import socketio

from tests.conftest import Relay, relay_fixture
from tests.support import ROOT, ServerProcess, ensure_node_modules, free_port, node_available

README = ROOT / "README.rst"
DOCS = ROOT / "docs"
JUPYTER_NODE = ROOT / "tests" / "jupyter-node"

#: Where the examples expect the relay, and the curl lines' form of it.
EXAMPLE_URL = "http://localhost:3000"
EXAMPLE_HOST = "localhost:3000"
EXAMPLE_LOOPBACK = "127.0.0.1:3000"
#: The token of the examples that need one.
EXAMPLE_TOKEN = "SECRET"

#: Every example label, with the file that holds it; a new example needs a test here.
EXAMPLES = {
    "example-readme-socketio": README,
    "example-readme-jupyter": README,
    "example-socketio-python": DOCS / "socketio.rst",
    "example-socketio-node": DOCS / "socketio.rst",
    "example-rest-spawn": DOCS / "rest.rst",
    "example-rest-interrupt": DOCS / "rest.rst",
    "example-rest-shutdown": DOCS / "rest.rst",
    "example-jupyter-curl": DOCS / "jupyter.rst",
    "example-jupyterlab-services": DOCS / "jupyter.rst",
    "example-papermill": DOCS / "jupyter.rst",
    "example-socketio-server": DOCS / "socketio-server.rst",
}

_LABEL = re.compile(r"^\.\. _(example-[a-z0-9-]+):\s*$", re.MULTILINE)

token_relay = relay_fixture(token=EXAMPLE_TOKEN)


def code_block(label: str) -> str:
    """The literal block (``::`` or ``.. code-block::``) after the label ``.. _<label>:``, dedented."""
    lines = EXAMPLES[label].read_text(encoding="utf-8").splitlines()
    starts = [i for i, line in enumerate(lines) if line.strip() == f".. _{label}:"]
    assert len(starts) == 1, f"{EXAMPLES[label].name} should have one label {label!r}"
    colon = next(
        i
        for i in range(starts[0], len(lines))
        if lines[i].rstrip().endswith("::") or lines[i].lstrip().startswith(".. code-block::")
    )
    opener = lines[colon].lstrip()
    indent = len(lines[colon]) - len(opener)
    block: list[str] = []
    for line in lines[colon + 1 :]:
        stripped = line.strip()
        if stripped and len(line) - len(line.lstrip()) <= indent:
            break
        if opener.startswith(".. ") and not any(block) and stripped.startswith(":"):
            continue  # a directive's option
        block.append(line)
    body = [line for line in block if line.strip()]
    depth = min(len(line) - len(line.lstrip()) for line in body) if body else 0
    text = "\n".join(line[depth:] for line in block).strip("\n")
    assert text, f"no code block after {label!r}"
    return text + "\n"


def at_relay(source: str, relay: Relay) -> str:
    """The example with the relay's address (and token) for the ones it names."""
    named = [example for example in (EXAMPLE_URL, EXAMPLE_LOOPBACK) if example in source]
    assert named, "the example no longer names the relay's address"
    source = source.replace(EXAMPLE_URL, relay.url)
    source = source.replace(EXAMPLE_LOOPBACK, f"127.0.0.1:{relay.port}")
    return source.replace(EXAMPLE_TOKEN, relay.token) if relay.token else source


def kernel_ids(relay: Relay) -> set[object]:
    return {kernel["id"] for kernel in relay.kernels()}


def run_python(label: str, relay: Relay, tmp_path: Path) -> list[str]:
    """Run a Python example against the relay; the lines it printed, once it exited 0."""
    script = tmp_path / f"{label}.py"
    script.write_text(at_relay(code_block(label), relay))
    result = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=90, cwd=tmp_path
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout.splitlines()


def run_node(label: str, relay: Relay, tmp_path: Path, node_modules: Path) -> list[str]:
    """Run a Node example against the relay; the lines it printed, once it exited 0 by itself."""
    script = tmp_path / f"{label}.js"
    script.write_text(at_relay(code_block(label), relay))
    # A script that does not end by itself fails here, on the timeout.
    result = subprocess.run(
        ["node", str(script)],
        capture_output=True,
        text=True,
        timeout=90,
        cwd=tmp_path,
        env={**os.environ, "NODE_PATH": str(node_modules)},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout.splitlines()


def test_every_example_label_is_run_here() -> None:
    """Every ``example-*`` label of README.rst and docs/ is one of the examples these tests run."""
    found: dict[str, Path] = {}
    for path in [README, *sorted(DOCS.glob("*.rst"))]:
        for label in _LABEL.findall(path.read_text(encoding="utf-8")):
            assert label not in found, f"{label} is in both {found[label]} and {path}"
            found[label] = path
    assert found == EXAMPLES


@pytest.mark.parametrize("label", ["example-readme-socketio", "example-readme-jupyter"])
def test_the_readme_examples_print_the_answer(relay: Relay, tmp_path: Path, label: str) -> None:
    """The README's socket.io and Jupyter examples print the cell's result, exit 0 and stop their kernel."""
    before = kernel_ids(relay)
    assert run_python(label, relay, tmp_path) == ["42"]
    assert kernel_ids(relay) == before


def test_the_python_example_prints_the_result_and_exits(relay: Relay, tmp_path: Path) -> None:
    """The python-socketio script prints the cell's result and the reply, exits 0 and stops its kernel."""
    before = kernel_ids(relay)
    lines = run_python("example-socketio-python", relay, tmp_path)
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
    before = kernel_ids(relay)
    node_modules = ensure_node_modules() / "node_modules"
    lines = run_node("example-socketio-node", relay, tmp_path, node_modules)
    assert (
        "execute_result { data: { 'text/plain': '2' }, metadata: {}, execution_count: 1 }" in lines
    )
    assert "status { execution_state: 'idle' }" in lines
    assert "reply ok" in lines
    assert kernel_ids(relay) == before


@pytest.mark.skipif(not node_available(), reason="needs node and npm")
def test_the_jupyterlab_services_example_runs_a_cell(token_relay: Relay, tmp_path: Path) -> None:
    """The @jupyterlab/services script prints the cell's stream and result, then stops its kernel."""
    before = kernel_ids(token_relay)
    node_modules = ensure_node_modules(JUPYTER_NODE) / "node_modules"
    lines = run_node("example-jupyterlab-services", token_relay, tmp_path, node_modules)
    assert any(line.startswith("stream") and "hello" in line for line in lines), lines
    assert any(line.startswith("execute_result") and "'42'" in line for line in lines), lines
    assert kernel_ids(token_relay) == before


def test_the_papermill_example_executes_a_notebook(relay: Relay, tmp_path: Path) -> None:
    """The papermill lines run a notebook at the relay through GatewayKernelManager and write its outputs."""
    nbformat = pytest.importorskip("nbformat")
    pytest.importorskip("papermill")
    pytest.importorskip("jupyter_server.gateway.managers")
    from nbformat.v4 import new_code_cell, new_notebook

    notebook = new_notebook(cells=[new_code_cell("6*7")])
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3"}
    nbformat.write(notebook, tmp_path / "in.ipynb")
    before = kernel_ids(relay)
    run_python("example-papermill", relay, tmp_path)
    (cell,) = nbformat.read(tmp_path / "out.ipynb", as_version=4).cells
    assert [output["data"]["text/plain"] for output in cell.outputs] == ["42"]
    assert kernel_ids(relay) == before


def curl_example(label: str) -> tuple[list[str], str]:
    """The ``$ curl ...`` line of an example block, as arguments, and the output line after it."""
    command, output = code_block(label).splitlines()[:2]
    assert command.startswith("$ curl "), command
    return shlex.split(command.removeprefix("$ ")), output


def curl(argv: list[str], relay: Relay, replace: dict[str, str]) -> str:
    """Run a documented curl line against the relay; its output."""
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
    """The REST API page's curl lines spawn, interrupt and shut down a kernel, answering as shown."""
    spawn, spawned = curl_example("example-rest-spawn")
    example_id = json.loads(spawned)["id"]
    answer = curl(spawn, relay, {})
    kernel_id = json.loads(answer)["id"]
    uuid.UUID(kernel_id)
    assert answer == spawned.replace(example_id, kernel_id)
    assert kernel_id in kernel_ids(relay)
    for label in ("example-rest-interrupt", "example-rest-shutdown"):
        command, shown = curl_example(label)
        assert example_id in " ".join(command), f"the {label} example names another kernel"
        assert curl(command, relay, {example_id: kernel_id}) == shown.replace(example_id, kernel_id)
    assert kernel_id not in kernel_ids(relay)


def test_the_socketio_server_example_serves_a_room(tmp_path: Path) -> None:
    """The socket.io library's example program refuses a wrong token, and acks and broadcasts "say"."""
    port = free_port()
    script = tmp_path / "server.py"
    source = code_block("example-socketio-server")
    assert "listenTCP(8000," in source
    script.write_text(source.replace("listenTCP(8000,", f"listenTCP({port},"))
    with ServerProcess([sys.executable, str(script)], port):
        url = f"http://127.0.0.1:{port}"
        with socketio.SimpleClient() as stranger:
            with pytest.raises(socketio.exceptions.ConnectionError):
                stranger.connect(
                    url, namespace="/room/lobby", auth={"token": "wrong"}, wait_timeout=10
                )
        with socketio.SimpleClient() as member:
            member.connect(url, namespace="/room/lobby", auth={"token": "secret"}, wait_timeout=10)
            assert member.call("say", "hello", timeout=10) == "delivered"
            assert member.receive(timeout=10) == ["said", "hello"]


@pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")
def test_the_kernel_api_examples_answer_as_shown(token_relay: Relay) -> None:
    """The kernel API's curl lines start a kernel (its model as shown), interrupt it and delete it."""
    lines = code_block("example-jupyter-curl").splitlines()
    commands = [
        shlex.split(line.removeprefix("$ ")) for line in lines if line.startswith("$ curl ")
    ]
    assert len(commands) == 3 and lines[0].startswith("$ ") and not lines[1].startswith("$ ")
    shown = json.loads(lines[1])
    token = {EXAMPLE_TOKEN: token_relay.token or ""}
    model = json.loads(curl(commands[0], token_relay, token))
    assert model.keys() == shown.keys()
    assert model["name"] == shown["name"]
    kernel_id = model["id"]
    assert kernel_id in kernel_ids(token_relay)
    for command in commands[1:]:
        assert curl(command, token_relay, {**token, shown["id"]: kernel_id}) == ""
    assert kernel_id not in kernel_ids(token_relay)

"""The ``kernel-relay`` console script, run as a user runs it: the installed program, as a real process."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import requests

from tests.support import ServerProcess, free_port

#: The relay, started as its console script (by ServerProcess, which the conftest does not count).
pytestmark = pytest.mark.e2e

#: The script pip installed beside the interpreter from ``[project.scripts]``.
KERNEL_RELAY = Path(sys.executable).with_name("kernel-relay")


@pytest.fixture(scope="module", autouse=True)
def _installed() -> None:
    assert KERNEL_RELAY.exists(), f"{KERNEL_RELAY} is missing: reinstall the package (tox -r)"


def start(
    runtime_dir: Path, *args: str, port: int, env: dict[str, str] | None = None
) -> ServerProcess:
    """``kernel-relay ARGS`` as a child process listening on ``port``, its kernels' files in ``runtime_dir``."""
    runtime_dir.mkdir(parents=True, exist_ok=True)
    return ServerProcess(
        [str(KERNEL_RELAY), *args],
        port,
        env={"JUPYTER_RUNTIME_DIR": str(runtime_dir), "KERNEL_RELAY_TOKEN": "", **(env or {})},
    )


#: A line of the text log: time, level, [logger], message.
TEXT_LINE = re.compile(
    r"^\d{4}-\d\d-\d\dT[\d:.]+Z (debug|info|warn|error|critical)\s+\[([^\]]+)\] (.*)$"
)


def logged(relay: ServerProcess) -> list[str]:
    """The messages of the relay's log, which is text by default whatever its output is."""
    matches = (TEXT_LINE.match(line) for line in relay.output().splitlines())
    return [match.group(3) for match in matches if match]


def wait_gone(pids: list[int], timeout: float = 15.0) -> list[int]:
    """Wait for the processes to exit; return those still running after ``timeout``."""
    deadline = time.monotonic() + timeout
    alive = pids
    while alive and time.monotonic() < deadline:
        alive = [pid for pid in alive if _running(pid)]
        time.sleep(0.1)
    return alive


def _running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_stops_every_kernel_and_exits_0(
    tmp_path: Path, stop_signal: signal.Signals
) -> None:
    """``kernel-relay PORT`` serves /spawn, and SIGTERM or SIGINT shuts its kernels down and exits 0."""
    if stop_signal == signal.SIGINT and signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        pytest.skip("SIGINT is ignored here, so the relay inherits that (as a background job does)")
    runtime = tmp_path / "runtime"
    port = free_port()
    relay = start(runtime, str(port), port=port)
    try:
        response = requests.get(f"{relay.url}/spawn/python3", timeout=90)
        assert response.status_code == 200, response.text
        kernel_id = response.json()["id"]
        kernels = [
            child.pid for child in psutil.Process(relay.process.pid).children(recursive=True)
        ]
        assert kernels, "the spawned kernel should be a child of the relay"
        assert [f.name for f in runtime.glob("kernel-relay-*/kernel-*.json")] == [
            f"kernel-{kernel_id}.json"
        ]
    except BaseException:
        relay.stop(signal.SIGKILL)
        raise
    code = relay.stop(stop_signal, timeout=60)
    output = relay.output()
    assert code == 0, output[-3000:]
    assert wait_gone(kernels) == []
    assert list(runtime.glob("kernel-relay-*/kernel-*.json")) == []
    events = logged(relay)
    assert "Stopping: shutting down 1 kernel(s)" in events
    assert events[-1] == "Main loop terminated."
    assert "Traceback" not in output


def test_listen_takes_an_endpoint(tmp_path: Path) -> None:
    """``kernel-relay --listen tcp:PORT:interface=127.0.0.1`` serves the REST API on that endpoint only."""
    port = free_port()
    relay = start(tmp_path / "runtime", "--listen", f"tcp:{port}:interface=127.0.0.1", port=port)
    try:
        response = requests.get(f"{relay.url}/api/kernels", timeout=10)
        assert response.status_code == 200
        assert response.json() == []
    finally:
        assert relay.stop() == 0, relay.output()[-3000:]
    assert any(f"listening on tcp:{port}:interface=127.0.0.1 (" in event for event in logged(relay))


def test_help_lists_the_relays_options() -> None:
    """``kernel-relay --help`` is the relay's help under the program's own name, every option in it."""
    result = subprocess.run(
        [str(KERNEL_RELAY), "--help"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == "Usage: kernel-relay [options] [port]"
    for option in (
        "--port",
        "--listen",
        "--allow-origin",
        "--allow-host",
        "--token",
        "--pool",
        "--ping-interval",
        "--shutdown-timeout",
        "--launch-timeout",
        "--generate-token",
        "--version",
    ):
        assert option in result.stdout, option
    assert "plugin" not in result.stdout  # not twist's usage: no plugin to name


def test_version_and_usage_errors() -> None:
    """``--version`` prints kernel-relay's version; a wrong option is one line on stderr and exit status 2."""
    from kernel_relay import __version__

    version = subprocess.run(
        [str(KERNEL_RELAY), "--version"], capture_output=True, text=True, timeout=60
    )
    assert version.returncode == 0
    assert version.stdout.splitlines()[0] == f"kernel-relay {__version__}"
    wrong = subprocess.run(
        [str(KERNEL_RELAY), "--no-such-option"], capture_output=True, text=True, timeout=60
    )
    assert wrong.returncode == 2
    assert wrong.stderr == (
        "kernel-relay: error: option --no-such-option not recognized "
        "(kernel-relay --help lists the options)\n"
    )
    assert wrong.stdout == ""


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        (["--max-payload", "lots"], {}, "--max-payload 'lots': 'lots' is not a size"),
        (["--ping-interval", "-5"], {}, "--ping-interval '-5': '-5' is not a duration"),
        ([], {"KERNEL_RELAY_MAX_KERNELS": "0"}, "--max-kernels '0': must be positive, not 0"),
        (["3000", "3001"], {}, "unexpected argument '3001'"),
    ],
)
def test_a_bad_setting_is_one_line_and_exit_status_2(
    argv: list[str], env: dict[str, str], message: str
) -> None:
    """A bad value, from the command line or the environment, is one line naming it (no help, no traceback)."""
    result = subprocess.run(
        [str(KERNEL_RELAY), *argv],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "KERNEL_RELAY_TOKEN": "", **env},
    )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1, result.stderr
    assert message in result.stderr
    assert "Parameter type enforcement failed" not in result.stderr


def test_settings_from_the_environment_and_a_bare_port_before_the_options(tmp_path: Path) -> None:
    """``KERNEL_RELAY_MAX_KERNELS=1 kernel-relay PORT --log-format json``: a second spawn is refused; JSON lines."""
    port = free_port()
    relay = start(
        tmp_path / "runtime",
        str(port),
        "--log-format",
        "json",
        port=port,
        env={"KERNEL_RELAY_MAX_KERNELS": "1", "KERNEL_RELAY_KERNEL_SANDBOX": "off"},
    )
    try:
        first = requests.get(f"{relay.url}/spawn/python3", timeout=90)
        assert first.status_code == 200, first.text
        second = requests.get(f"{relay.url}/spawn/python3", timeout=90)
        assert second.status_code == 500
        assert "kernels" in second.json()["error"]
    finally:
        assert relay.stop() == 0, relay.output()[-3000:]
    records = [json.loads(line) for line in relay.output().splitlines() if line.strip()]
    assert {"time", "level", "logger", "message"} <= set(records[0])
    assert records[-1]["message"] == "Main loop terminated."
    starting = [record["message"] for record in records if "starting on" in record["message"]]
    assert (
        starting == []
    )  # Twisted's per-socket lines are left out: the relay's own line has the URLs
    assert any(f"http://127.0.0.1:{port}/" in record["message"] for record in records)


def _crashing_kernelspec(root: Path) -> dict[str, str]:
    """A kernelspec ``crasher`` whose kernel writes a traceback on stderr and exits: JUPYTER_PATH to find it."""
    spec = root / "kernels" / "crasher"
    spec.mkdir(parents=True)
    code = "raise RuntimeError('boom from the kernel')"
    spec.joinpath("kernel.json").write_text(
        json.dumps(
            {
                "argv": [sys.executable, "-c", code, "{connection_file}"],
                "display_name": "crasher",
                "language": "python",
            }
        )
    )
    return {"JUPYTER_PATH": str(root)}


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_a_kernels_traceback_is_logged_as_lines_of_that_kernel(
    tmp_path: Path, log_format: str
) -> None:
    """A kernel's stderr reaches the log as lines naming the kernel, in either format, never raw."""
    port = free_port()
    relay = start(
        tmp_path / "runtime",
        "--port",
        str(port),
        "--log-format",
        log_format,
        port=port,
        env={
            **_crashing_kernelspec(tmp_path / "jupyter"),
            "KERNEL_RELAY_KERNEL_SANDBOX": "auto" if log_format == "text" else "off",
        },
    )
    try:
        response = requests.get(f"{relay.url}/spawn/crasher", timeout=90)
        assert response.status_code == 500
        deadline = time.monotonic() + 20
        while "boom from the kernel" not in relay.output() and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        assert relay.stop() == 0, relay.output()[-3000:]
    output = relay.output().splitlines()
    raw = [line for line in output if "boom from the kernel" in line]
    assert raw, relay.output()[-3000:]
    if log_format == "json":
        records = [json.loads(line) for line in output]
        ours = [record for record in records if record.get("stream") == "stderr"]
        assert ours and all(len(record["kernel_id"]) == 36 for record in ours)
        messages = [record["message"] for record in ours]
    else:
        messages = logged(relay)
        assert all(TEXT_LINE.match(line) for line in output if line.strip())
    kernel_lines = [m for m in messages if m.startswith("kernel ") and " stderr: " in m]
    assert any(m.endswith("stderr: Traceback (most recent call last):") for m in kernel_lines)
    assert any(m.endswith("stderr: RuntimeError: boom from the kernel") for m in kernel_lines)

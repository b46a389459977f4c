"""
A throwaway JupyterLab server whose kernels live behind a gateway (``--gateway-url``), for the browser test
that opens a notebook in it (``jupyterlab_notebook.js``).

JupyterLab's own server keeps the contents (the notebook files, in a temporary root_dir) and serves the page;
every kernelspec, kernel and kernel channel it proxies to the gateway. So a notebook that runs a cell proves
that the gateway answers what Jupyter Server's ``GatewayClient`` asks of it.

Everything JupyterLab reads or writes is kept under ``tmp_path``: the user's own Jupyter config, settings,
workspaces, extensions and ``JUPYTER_*``/``JUPYTERLAB_*`` environment (a ``JUPYTER_GATEWAY_*`` variable
would reconfigure the gateway client) must not change what the test sees.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.support import ROOT, free_port

#: Turns off JupyterLab's news prompt and update check, which would otherwise put a toast over the page and
#: make the server fetch from the internet.
NOTIFICATION_SETTINGS = {"fetchNews": "false", "checkForUpdates": False}

#: jupyter-server-nbmodel (in the interop extra, for #33's tests) enables itself on install, and its lab
#: extension then runs cells through its server-side client, which fails behind ``--gateway-url``
#: (``POST /api/kernels/<id>/execute`` -> 404 without the server part, a 500 with it): the test is of
#: JupyterLab as it comes.
DISABLED_SERVER_EXTENSIONS = ("jupyter_server_nbmodel",)
DISABLED_LAB_EXTENSIONS = ("@datalayer/jupyter-server-nbmodel",)

#: Environment variables of these prefixes configure Jupyter (paths, tokens, the gateway client); the
#: server gets none of the user's.
SCRUBBED_PREFIXES = ("JUPYTER", "JPY_", "IPYTHON")


class JupyterLabError(RuntimeError):
    """JupyterLab did not start, or did not answer; the message ends with its log."""


def jupyterlab_argv(
    python: str,
    port: int,
    token: str,
    gateway_url: str,
    gateway_token: str | None,
    dirs: dict[str, Path],
) -> list[str]:
    """The command line: loopback only, no browser, this token, the gateway, and only our own dirs."""
    argv = [
        python,
        "-m",
        "jupyterlab",
        "--no-browser",
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}",
        # Fail rather than quietly listen on another port than the one we wait for.
        "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={dirs['root']}",
        f"--gateway-url={gateway_url}",
        f"--LabApp.user_settings_dir={dirs['settings']}",
        f"--LabApp.workspaces_dir={dirs['workspaces']}",
        # No announcements feed and no update check: nothing leaves loopback.
        "--LabApp.news_url=None",
        "--LabApp.check_for_updates_class=jupyterlab.handlers.announcements.NeverCheckForUpdate",
        # No terminals: the test needs no shell on the server.
        "--ServerApp.terminals_enabled=False",
        # An extension manager that never asks PyPI.
        "--LabApp.extension_manager=readonly",
        # JupyterLab as it comes (see DISABLED_LAB_EXTENSIONS).
        *(f"--ServerApp.jpserver_extensions={name}=False" for name in DISABLED_SERVER_EXTENSIONS),
    ]
    if os.geteuid() == 0:
        # Containers and CI run tests as root, which Jupyter Server refuses without this.
        argv.append("--allow-root")
    if gateway_token:
        argv.append(f"--GatewayClient.auth_token={gateway_token}")
    return argv


def private_dirs(tmp_path: Path) -> dict[str, Path]:
    """
    Fresh root, runtime, config, data, settings and workspaces dirs; the settings silence the news, the
    page config disables ``DISABLED_LAB_EXTENSIONS``.
    """
    base = tmp_path / "jupyterlab"
    dirs = {
        name: base / name
        for name in ("root", "runtime", "config", "data", "settings", "workspaces")
    }
    for path in dirs.values():
        path.mkdir(parents=True, exist_ok=True)
    page_config = dirs["config"] / "labconfig"
    page_config.mkdir(parents=True, exist_ok=True)
    (page_config / "page_config.json").write_text(
        json.dumps({"disabledExtensions": dict.fromkeys(DISABLED_LAB_EXTENSIONS, True)}),
        encoding="utf-8",
    )
    notification = dirs["settings"] / "@jupyterlab" / "apputils-extension"
    notification.mkdir(parents=True, exist_ok=True)
    (notification / "notification.jupyterlab-settings").write_text(
        json.dumps(NOTIFICATION_SETTINGS), encoding="utf-8"
    )
    return dirs


def private_env(dirs: dict[str, Path]) -> dict[str, str]:
    """The current environment without Jupyter's variables, pointed at our dirs, without user site-packages."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.upper().startswith(SCRUBBED_PREFIXES)
    }
    env.update(
        JUPYTER_RUNTIME_DIR=str(dirs["runtime"]),
        JUPYTER_CONFIG_DIR=str(dirs["config"]),
        JUPYTER_DATA_DIR=str(dirs["data"]),
        JUPYTERLAB_SETTINGS_DIR=str(dirs["settings"]),
        JUPYTERLAB_WORKSPACES_DIR=str(dirs["workspaces"]),
        # Packages in ~/.local would add server extensions (and lab extensions) of the user's.
        PYTHONNOUSERSITE="1",
        PYTHONUNBUFFERED="1",
    )
    return env


def wait_until_answering(
    url: str, process: subprocess.Popen[bytes], log: Path, timeout: float
) -> None:
    """Poll ``url`` until it answers 200: a listening port is not yet a server that renders /lab."""
    deadline = time.monotonic() + timeout
    last_error = "no attempt"
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise JupyterLabError(
                f"JupyterLab exited with {process.returncode} before answering {url}\n"
                f"--- its log ---\n{read_log(log)}"
            )
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return
                last_error = f"HTTP {response.status}"
        except (urllib.error.URLError, OSError) as error:
            last_error = str(error)
        time.sleep(0.2)
    raise JupyterLabError(
        f"JupyterLab did not answer {url} within {timeout}s ({last_error})\n"
        f"--- its log ---\n{read_log(log)}"
    )


def read_log(log: Path) -> str:
    return log.read_text(errors="replace") if log.exists() else "(no log)"


def stop(process: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    """SIGTERM (the server then shuts its kernels down through the gateway), SIGKILL its group if it hangs."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
            return
        except subprocess.TimeoutExpired:
            pass
    # Whatever the server started in its session (it should be nothing: kernels run on the gateway).
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()


@contextmanager
def jupyterlab_with_gateway(
    gateway_url: str,
    gateway_token: str | None,
    tmp_path: Path,
    *,
    python: str = sys.executable,
    timeout: float = 60.0,
) -> Iterator[str]:
    """
    Run ``python -m jupyterlab --gateway-url=<gateway_url>`` on a free loopback port and yield its
    ``/lab?token=...`` URL; stop it on exit.

    ``python`` is the interpreter with jupyterlab installed (the test environment's, by default).
    The server's log is in the error when it does not start, and added as a note to an exception
    raised in the ``with`` body, since a browser failure is often explained by a gateway error there.
    """
    dirs = private_dirs(tmp_path)
    port = free_port()
    token = secrets.token_hex(16)
    log_path = tmp_path / "jupyterlab" / "server.log"
    base = f"http://127.0.0.1:{port}"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            jupyterlab_argv(python, port, token, gateway_url, gateway_token, dirs),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=private_env(dirs),
            # Not tests/browser: `python -m jupyterlab` would import this file from there.
            cwd=ROOT,
            start_new_session=True,
        )
    try:
        wait_until_answering(f"{base}/lab?token={token}", process, log_path, timeout)
        try:
            yield f"{base}/lab?token={token}"
        except Exception as error:
            error.add_note(f"--- JupyterLab's log ({log_path}) ---\n{read_log(log_path)}")
            raise
    finally:
        stop(process)

"""Fixtures shared by the relay's end-to-end tests: a real relay process with real kernels, on loopback."""

from __future__ import annotations

import gc
import os
import shutil
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.support import ROOT, ServerProcess, free_port

TWIST = [sys.executable, "-m", "twisted", "kernel-relay"]


class Relay(ServerProcess):
    """
    A ``twist kernel-relay`` child process, its runtime dir (connection files) and a REST helper;
    ``wrapper`` is a command line it runs under (``prlimit --nofile=...``, say).
    """

    def __init__(
        self,
        runtime_dir: Path,
        *args: str,
        port: int | None = None,
        env: dict[str, str] | None = None,
        token: str | None = None,
        wrapper: Sequence[str] = (),
    ) -> None:
        self.runtime_dir = runtime_dir
        self.token = token
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        if token:
            args = ("--token", token, *args)
        runtime_dir.mkdir(parents=True, exist_ok=True)
        port = port or free_port()
        super().__init__(
            [*wrapper, *TWIST, "--port", str(port), *args],
            port,
            env={
                "JUPYTER_RUNTIME_DIR": str(runtime_dir),
                "PYTHONUNBUFFERED": "1",
                # A token in the developer's environment must not turn on auth for every test relay.
                "KERNEL_RELAY_TOKEN": "",
                **(env or {}),
            },
        )

    def spawn(self, spec: str = "python3") -> str:
        response = requests.get(f"{self.url}/spawn/{spec}", headers=self.headers, timeout=90)
        assert response.status_code == 200, response.text
        kernel_id: str = response.json()["id"]
        return kernel_id

    def shutdown(self, kernel_id: str) -> requests.Response:
        return requests.get(f"{self.url}/shutdown/{kernel_id}", headers=self.headers, timeout=60)

    def connection_files(self) -> list[Path]:
        """Its kernels' connection files, in its private directory of the runtime dir."""
        return sorted(self.runtime_dir.glob(f"kernel-relay-{self.process.pid}/kernel-*.json"))

    def kernels(self) -> list[dict[str, object]]:
        response = requests.get(f"{self.url}/api/kernels", headers=self.headers, timeout=10)
        response.raise_for_status()
        listing: list[dict[str, object]] = response.json()
        return listing


def relay_runtime_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("runtime")


def relay_fixture(*args: str, scope: str = "module", **keywords: Any) -> Any:
    """
    A fixture of a relay started with ``args`` (and :class:`Relay`'s keywords: ``token``, ``env``,
    ``wrapper``), stopped when its ``scope`` ends.
    """

    @pytest.fixture(scope=scope)  # type: ignore[call-overload]
    def fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Relay]:
        server = Relay(relay_runtime_dir(tmp_path_factory), *args, **keywords)
        try:
            yield server
        finally:
            server.stop()

    return fixture


def kernel_fixture(relay: str, scope: str = "module") -> Any:
    """A fixture of a python3 kernel on the relay fixture named ``relay``, shut down when its scope ends."""

    @pytest.fixture(scope=scope)  # type: ignore[call-overload]
    def fixture(request: pytest.FixtureRequest) -> Iterator[str]:
        server: Relay = request.getfixturevalue(relay)
        kernel = server.spawn()
        yield kernel
        server.shutdown(kernel)

    return fixture


#: One relay for a test module; every kernel it started is gone when the module ends.
relay = relay_fixture()
#: A python3 kernel shared by the tests of a module that do not need one of their own.
kernel_id = kernel_fixture("relay")


@pytest.fixture(scope="session", autouse=True)
def _isolated_jupyter_runtime(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Keep connection files of in-process tests out of the user's runtime dir."""
    runtime = tmp_path_factory.mktemp("jupyter-runtime")
    previous = os.environ.get("JUPYTER_RUNTIME_DIR")
    os.environ["JUPYTER_RUNTIME_DIR"] = str(runtime)
    yield
    if previous is None:
        os.environ.pop("JUPYTER_RUNTIME_DIR", None)
    else:
        os.environ["JUPYTER_RUNTIME_DIR"] = previous
    shutil.rmtree(runtime, ignore_errors=True)


@pytest.fixture
def no_cyclic_gc() -> Iterator[None]:
    """The cyclic garbage collector off: what a reference cycle holds then stays held."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


__all__ = ["ROOT", "Relay", "kernel_fixture", "relay_fixture"]

"""
Fixtures shared by the relay's end-to-end tests (a real relay process with real kernels, on loopback), and the
``e2e`` mark, set wherever a test lives: on a test that starts the relay, kernels, sshd, Node or Chromium, that
is one whose code or fixtures use something tagged :func:`~tests.support.starts_processes` (``Relay``, the
relay fixtures, sshd, Node, Chromium) or ``subprocess``, directly or through a function of the tests, so that
``pytest -m "not e2e"`` runs the in-process tests. Redis and the small servers of the protocol tests
(``ServerProcess``: an Engine.IO echo server, the socket.io conformance app) are not ``e2e``: they need no
kernels and start in a moment. A module that starts processes some other way (a real kernel registry) says
so with ``pytestmark = pytest.mark.e2e``.
"""

from __future__ import annotations

import fcntl
import gc
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import CodeType
from typing import Any

import pytest
import requests

from tests.support import ROOT, ServerProcess, free_port, starts_processes

TWIST = [sys.executable, "-m", "twisted", "kernel-relay"]


@starts_processes
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
    @starts_processes
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
    @starts_processes
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


def _tagged(value: object) -> bool:
    return getattr(value, "starts_processes", None) is True or value is subprocess


def _code_names(code: CodeType) -> Iterator[str]:
    yield from code.co_names
    for constant in code.co_consts:
        if isinstance(constant, CodeType):
            yield from _code_names(constant)


def starts_processes_in(function: object, seen: set[object] | None = None) -> bool:
    """
    Whether ``function`` is tagged, or its code names a global that is (``subprocess`` too), or calls a
    function of the tests that does.
    """
    seen = set() if seen is None else seen
    if function in seen:
        return False
    seen.add(function)
    if _tagged(function):
        return True
    code = getattr(function, "__code__", None)
    if not isinstance(code, CodeType):
        return False
    names = getattr(function, "__globals__", {})
    for name in _code_names(code):
        value = names.get(name)
        if _tagged(value):
            return True
        module = getattr(value, "__module__", None) or ""
        helper = (
            module.startswith("tests") and module != __name__
        )  # not this module's own functions
        if helper and callable(value) and starts_processes_in(value, seen):
            return True
    return False


def starts_processes_of(item: pytest.Item) -> bool:
    """Whether the test, or a fixture it uses, starts processes (see :func:`starts_processes_in`)."""
    fixtures = getattr(item, "_fixtureinfo", None)
    if fixtures is not None:
        for name in item.fixturenames:  # type: ignore[attr-defined]
            if any(starts_processes_in(d.func) for d in fixtures.name2fixturedefs.get(name, ())):
                return True
    return starts_processes_in(getattr(item, "function", None))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark ``e2e`` every test that starts processes (see the module doc)."""
    for item in items:
        if item.get_closest_marker("e2e") is None and starts_processes_of(item):
            item.add_marker(pytest.mark.e2e)


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


@pytest.fixture(scope="module")
def one_at_a_time(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """
    Held by a test file that measures a relay's memory, for all its tests: under ``pytest -n`` no two such
    files run beside each other (the workers of one run share the lock file).
    """
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent
    with (root / "one-at-a-time.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


__all__ = ["ROOT", "Relay", "kernel_fixture", "relay_fixture"]

"""
Jupyter Server's kernel REST API (Klein), answered as Jupyter Server 2.x answers it, over the relay's kernels:
JupyterLab, ``@jupyterlab/services`` and ``jupyter server --gateway-url`` use the relay unchanged.

- ``GET /api``, ``GET /api/status``; ``GET /api/kernelspecs``, ``GET /api/kernelspecs/<name>``,
  ``GET /kernelspecs/<name>/<file>`` (a kernelspec's logos, read as :mod:`.kernelspecs` says);
- ``GET /api/kernels``, ``POST /api/kernels`` (``{"name", "env"}``: 201, the model, ``Location``),
  ``GET|DELETE /api/kernels/<id>``, ``POST /api/kernels/<id>/interrupt`` (204) and ``/restart`` (200, the model).

A kernel's model is ``id``, ``name``, ``last_activity`` (ISO 8601, UTC, ``Z``), ``execution_state`` and
``connections`` (clients of every front), and ``reachable`` (its heartbeat). Errors are Jupyter Server's
``{"message", "reason"}`` with its status codes. ``env`` on POST may set only ``KERNEL_*`` variables and the
names the operator allows (``--kernel-env-allow``): a client must never choose ``LD_PRELOAD`` or ``PATH``
for a process that runs its code with the relay's rights. The channels WebSocket is the Jupyter front's
(:mod:`kernel_relay.fronts.jupyter`); the guards of :mod:`.guards` stand in front of all of it.
"""

from __future__ import annotations

import mimetypes
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import quote

from klein import Klein
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource
from werkzeug.exceptions import HTTPException

from .. import __version__
from ..jsontext import JSONError, loads
from ..kernels import (
    Kernel,
    KernelRegistry,
    KernelSpecInfo,
    UnknownKernel,
    UnknownKernelSpec,
    iso_date,
)
from ..kernels.spawning import (
    KernelspecNotAllowed,
    Spawner,
    SpawnUnavailable,
    TooManyKernels,
    error_text,
)
from .api import json_body
from .kernelspecs import (
    RESOURCE_FILE,
    ResourceReader,
    read_here,
    spec_model,
)

# Re-exported for the wiring (tap), which imports it from here.
from .kernelspecs import threaded_resource_reader as threaded_resource_reader
from .lookup import kernel_found_first

log = Logger()

#: Names a client may always set in a new kernel's environment (Jupyter's convention for launch parameters).
KERNEL_ENV: Final = re.compile(r"KERNEL_[A-Za-z0-9_]{1,128}")
MAX_ENV_VARIABLES: Final = 64
MAX_ENV_VALUE: Final = 32 * 1024


class BadEnvironment(ValueError):
    """A POST's ``env`` is not a JSON object of allowed names to strings."""


@dataclass(frozen=True)
class EnvPolicy:
    """Which environment variables a client may set for a kernel it starts: ``KERNEL_*`` and ``allowed``."""

    allowed: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def from_option(cls, names: str | None) -> EnvPolicy:
        """``--kernel-env-allow NAME[,NAME...]``."""
        return cls(frozenset(name.strip() for name in (names or "").split(",") if name.strip()))

    def checked(self, env: object) -> dict[str, str]:
        """``env`` as the variables to add; BadEnvironment says what is wrong with it."""
        if env is None:
            return {}
        if not isinstance(env, dict):
            raise BadEnvironment('"env" must be a JSON object of variable names to strings')
        if len(env) > MAX_ENV_VARIABLES:
            raise BadEnvironment(f'"env" may set at most {MAX_ENV_VARIABLES} variables')
        refused = sorted(
            name for name in env if not (KERNEL_ENV.fullmatch(name) or name in self.allowed)
        )
        if refused:
            shown = ", ".join(repr(name[:64]) for name in refused[:5])
            raise BadEnvironment(
                f'"env" may set only KERNEL_* variables{self._and_allowed()}; refused: {shown}'
            )
        for name, value in env.items():
            if not isinstance(value, str) or len(value) > MAX_ENV_VALUE or "\x00" in value:
                raise BadEnvironment(
                    f'"env" value of {name} must be a string of at most {MAX_ENV_VALUE} characters '
                    "without NUL"
                )
        return dict(env)

    def _and_allowed(self) -> str:
        if not self.allowed:
            return " (the relay's operator can allow more with --kernel-env-allow)"
        return " and " + ", ".join(sorted(self.allowed))


def jupyter_error(request: IRequest, code: int, message: str, reason: str | None = None) -> bytes:
    """An error as Jupyter Server's API handlers write it."""
    return json_body(request, code, {"message": message, "reason": reason})


class JupyterAPI:
    """
    Jupyter Server's kernel routes. ``clients_of(kernel_id)`` counts a kernel's clients over every front;
    ``default_spec`` is the kernelspec a POST without ``name`` starts (``python3`` if installed);
    ``read_resource`` reads kernelspec resource files (the relay's: in a thread, see
    :func:`threaded_resource_reader`; by default on the calling thread, for tests).
    """

    app = Klein()

    def __init__(
        self,
        kernels: KernelRegistry,
        spawner: Spawner,
        clients_of: Callable[[str], int],
        *,
        env_policy: EnvPolicy | None = None,
        default_spec: str | None = None,
        clock: Callable[[], float] = time.time,
        read_resource: ResourceReader = read_here,
        base_url: str = "/",
    ) -> None:
        self.base_url = base_url
        """The relay's ``--base-url``, for the URLs it gives out (``Location``, kernelspec resources)."""
        self._kernels = kernels
        self._read_resource = read_resource
        self._spawner = spawner
        self._clients_of = clients_of
        self._env_policy = env_policy or EnvPolicy()
        self._default_spec = default_spec
        self._clock = clock
        self._started = clock()

    def resource(self) -> IResource:
        return self.app.resource()  # type: ignore[no-any-return]

    def model(self, kernel: Kernel) -> dict[str, Any]:
        return {
            "id": kernel.id,
            "name": kernel.spec_name,
            "last_activity": iso_date(kernel.last_activity),
            "execution_state": kernel.execution_state,
            "connections": self._clients_of(kernel.id),
            "reachable": kernel.reachable,
            # Whether its ZeroMQ channels are CurveZMQ-encrypted (see --kernel-encryption).
            "encrypted": kernel.curve is not None,
            # Whether it runs in the relay's sandbox (see --kernel-sandbox).
            "sandboxed": kernel.sandboxed,
        }

    # -- discovery -------------------------------------------------------------------------------------

    @app.route("/api", methods=["GET"])
    @app.route("/api/", methods=["GET"])
    def version(self, request: IRequest) -> bytes:
        return json_body(request, 200, {"version": __version__})

    @app.route("/api/status", methods=["GET"])
    def status(self, request: IRequest) -> bytes:
        kernels = self._kernels.kernels()
        last = max((kernel.last_activity for kernel in kernels), default=self._started)
        return json_body(
            request,
            200,
            {
                "started": iso_date(self._started),
                "last_activity": iso_date(last),
                "kernels": len(kernels),
                "connections": sum(self._clients_of(kernel.id) for kernel in kernels),
            },
        )

    def _allowed(self, specs: Iterable[KernelSpecInfo]) -> list[KernelSpecInfo]:
        """The kernelspecs this relay may start (``--allow-kernelspec``): the only ones it shows."""
        return [spec for spec in specs if self._spawner.allows(spec.name)]

    def _default(self, specs: Iterable[KernelSpecInfo]) -> str | None:
        names = [spec.name for spec in self._allowed(specs)]
        if self._default_spec in names:
            return self._default_spec
        if "python3" in names:
            return "python3"
        return names[0] if names else None

    @app.route("/api/kernelspecs", methods=["GET"])
    @app.route("/api/kernelspecs/", methods=["GET"])
    def kernelspecs(self, request: IRequest) -> Deferred[bytes]:
        def listed(specs: list[KernelSpecInfo]) -> bytes:
            return json_body(
                request,
                200,
                {
                    "default": self._default(specs),
                    "kernelspecs": {
                        spec.name: spec_model(spec, self.base_url) for spec in self._allowed(specs)
                    },
                },
            )

        return self._kernels.specs().addCallbacks(
            listed, self._specs_failed, errbackArgs=(request,)
        )

    @app.route("/api/kernelspecs/<name>", methods=["GET"])
    def kernelspec(self, request: IRequest, name: str) -> Deferred[bytes]:
        def found(specs: list[KernelSpecInfo]) -> bytes:
            for spec in self._allowed(specs):
                if spec.name == name:
                    return json_body(request, 200, spec_model(spec, self.base_url))
            return jupyter_error(request, 404, f"Kernel spec {name} not found")

        return self._kernels.specs().addCallbacks(found, self._specs_failed, errbackArgs=(request,))

    @app.route("/kernelspecs/<name>/<filename>", methods=["GET"])
    def kernelspec_file(self, request: IRequest, name: str, filename: str) -> Deferred[bytes]:
        def missing() -> bytes:
            return jupyter_error(request, 404, f"Kernel spec resource {name}/{filename} not found")

        def found(specs: list[KernelSpecInfo]) -> Deferred[bytes] | bytes:
            specs = self._allowed(specs)
            spec = next((spec for spec in specs if spec.name == name), None)
            if spec is None or not spec.resource_dir or not RESOURCE_FILE.fullmatch(filename):
                return missing()
            return self._read_resource(spec.resource_dir, filename).addCallbacks(
                served, read_failed
            )

        def served(data: bytes | None) -> bytes:
            if data is None:
                return missing()
            content_type = mimetypes.guess_type(filename)[0] or "application/octet-stream"
            request.setResponseCode(200)
            request.setHeader(b"Content-Type", content_type.encode("ascii"))
            request.setHeader(b"Cache-Control", b"max-age=3600")
            return data

        def read_failed(failure: Failure) -> bytes:
            log.failure(
                "Could not read kernel spec resource {name}/{file}",
                failure,
                name=name,
                file=filename,
            )
            return missing()

        return self._kernels.specs().addCallbacks(found, self._specs_failed, errbackArgs=(request,))

    def _specs_failed(self, failure: Failure, request: IRequest) -> bytes:
        log.failure("Could not list kernelspecs", failure)
        return jupyter_error(request, 500, error_text(failure))

    # -- kernels ---------------------------------------------------------------------------------------

    @app.route("/api/kernels", methods=["GET"])
    @app.route("/api/kernels/", methods=["GET"])
    def kernels(self, request: IRequest) -> bytes:
        return json_body(request, 200, [self.model(kernel) for kernel in self._kernels.kernels()])

    @app.route("/api/kernels", methods=["POST"])
    @app.route("/api/kernels/", methods=["POST"])
    def start(self, request: IRequest) -> Deferred[bytes] | bytes:
        content = request.content.read() if request.content is not None else b""
        try:
            body = loads(content) if content.strip() else {}
        except JSONError as error:
            return jupyter_error(request, 400, f"Invalid JSON in the request body: {error}")
        if not isinstance(body, dict):
            return jupyter_error(
                request, 400, 'The body must be a JSON object like {"name": "python3"}'
            )
        try:
            env = self._env_policy.checked(body.get("env"))
        except BadEnvironment as error:
            return jupyter_error(request, 400, str(error))
        name = body.get("name")
        if name is not None and not isinstance(name, str):
            return jupyter_error(request, 400, '"name" must be a kernelspec name (a string)')

        def started(kernel: Kernel) -> bytes:
            location = f"{self.base_url}api/kernels/{quote(kernel.id)}"
            request.setHeader(b"Location", location.encode("ascii"))
            return json_body(request, 201, self.model(kernel))

        def failed(failure: Failure) -> bytes:
            if failure.check(UnknownKernelSpec):  # type: ignore[no-untyped-call]
                return jupyter_error(request, 404, error_text(failure))
            if failure.check(KernelspecNotAllowed):  # type: ignore[no-untyped-call]
                return jupyter_error(request, 403, error_text(failure))
            if failure.check(TooManyKernels, SpawnUnavailable):  # type: ignore[no-untyped-call]
                request.setHeader(b"Retry-After", b"10")
                return jupyter_error(request, 503, error_text(failure))
            return jupyter_error(request, 500, error_text(failure))

        return self.start_kernel(name, env).addCallbacks(started, failed)

    def start_kernel(self, name: str | None, env: dict[str, str] | None = None) -> Deferred[Kernel]:
        """
        A new kernel of kernelspec ``name`` (None: the default), within ``--max-kernels`` (the sessions API
        starts its kernels here too); fails with UnknownKernelSpec, KernelspecNotAllowed (``--allow-kernelspec``)
        or the spawner's errors.
        """

        def named(specs: list[KernelSpecInfo]) -> Deferred[Kernel]:
            chosen = name or self._default(specs)
            if chosen is not None and not self._spawner.allows(chosen):
                shown = chosen if len(chosen) <= 80 else f"{chosen[:77]}..."
                raise KernelspecNotAllowed(f"the kernelspec {shown!r} is not allowed on this relay")
            if chosen is None:
                raise UnknownKernelSpec("no kernelspec is installed")
            if all(spec.name != chosen for spec in specs):
                shown = chosen if len(chosen) <= 80 else f"{chosen[:77]}..."
                raise UnknownKernelSpec(f"No such kernel named {shown}")
            return self._spawner.spawn(chosen, env)

        return self._kernels.specs().addCallback(named)

    @app.route("/api/kernels/<kernel_id>", methods=["GET"])
    @kernel_found_first
    def kernel(self, request: IRequest, kernel_id: str) -> bytes:
        try:
            kernel = self._kernels.get(kernel_id)
        except UnknownKernel:
            return self._no_kernel(request, kernel_id)
        return json_body(request, 200, self.model(kernel))

    @app.route("/api/kernels/<kernel_id>", methods=["DELETE"])
    @kernel_found_first
    def shutdown(self, request: IRequest, kernel_id: str) -> Deferred[bytes] | bytes:
        if kernel_id not in self._kernels:
            return self._no_kernel(request, kernel_id)

        def stopped(_: object) -> bytes:
            request.setResponseCode(204)
            return b""

        return self._kernels.shutdown(kernel_id).addCallbacks(
            stopped, self._failed, errbackArgs=(request, kernel_id, "shut down")
        )

    @app.route("/api/kernels/<kernel_id>/interrupt", methods=["POST"])
    @kernel_found_first
    def interrupt(self, request: IRequest, kernel_id: str) -> Deferred[bytes]:
        """Interrupt the running cell: SIGINT or an ``interrupt_request``, as the kernelspec says."""

        def interrupted(_: object) -> bytes:
            request.setResponseCode(204)
            return b""

        return self._kernels.interrupt(kernel_id).addCallbacks(
            interrupted, self._failed, errbackArgs=(request, kernel_id, "interrupt")
        )

    @app.route("/api/kernels/<kernel_id>/restart", methods=["POST"])
    @kernel_found_first
    def restart(self, request: IRequest, kernel_id: str) -> Deferred[bytes]:
        """Restart in place and answer once the kernel is ready again; clients stay connected."""
        return self._kernels.restart(kernel_id).addCallbacks(
            lambda kernel: json_body(request, 200, self.model(kernel)),
            self._failed,
            errbackArgs=(request, kernel_id, "restart"),
        )

    def _no_kernel(self, request: IRequest, kernel_id: str) -> bytes:
        return jupyter_error(request, 404, f"Kernel does not exist: {kernel_id}")

    def _failed(self, failure: Failure, request: IRequest, kernel_id: str, action: str) -> bytes:
        """404 for an unknown kernel, 500 with the reason for anything else."""
        if failure.check(UnknownKernel):  # type: ignore[no-untyped-call]
            return self._no_kernel(request, kernel_id)
        log.warn(
            "Could not {action} kernel {kernel_id}: {error}",
            action=action,
            kernel_id=kernel_id,
            error=error_text(failure),
        )
        return jupyter_error(request, 500, error_text(failure))

    @app.handle_errors(HTTPException)
    def http_error(self, request: IRequest, failure: Failure) -> bytes:
        error = failure.value
        assert isinstance(error, HTTPException)
        code = error.code or 500
        if code == 405:
            allowed = sorted({*(getattr(error, "valid_methods", None) or ["GET"]), "OPTIONS"})
            request.setHeader(b"Allow", ", ".join(allowed).encode("ascii"))
        method = request.method.decode("ascii", "replace")
        path = request.path.decode("utf-8", "replace")
        return jupyter_error(request, code, f"{error.name}: {method} {path}")

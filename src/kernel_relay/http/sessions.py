# -*- test-case-name: tests.http.test_sessions -*-
"""
Jupyter Server's sessions API (Klein), in its shapes, over the kernels of :mod:`.jupyter_api`: clients that
start sessions rather than bare kernels (``@jupyterlab/services``' ``SessionManager``, thebe, notebook-style
web apps, Kernel Gateway users) use the relay unchanged.

- ``GET /api/sessions``: every session; ``GET /api/sessions/<id>``: one (404 if unknown).
- ``POST /api/sessions`` ``{"path", "type", "name"?, "kernel": {"name"} | {"id"}}``: 201, the model,
  ``Location``. A kernel named by the id of a running kernel is shared; else a kernel of the given (or the
  default) kernelspec starts, within ``--max-kernels`` (503 beyond). A POST for a path that has a session
  answers that session, as Jupyter Server does.
- ``PATCH /api/sessions/<id>``: changes ``path``, ``name``, ``type``, or the kernel (an existing id, 400 if
  unknown; or a name, which starts a new kernel); a kernel replaced that no other session uses is shut down.
- ``DELETE /api/sessions/<id>``: 204, and the session's kernel is shut down.

A session's model is ``{"id", "path", "name", "type", "kernel": <kernel model>}``, with the deprecated
``"notebook": {"path", "name"}`` for a notebook. A session whose kernel stopped is forgotten (listing it
would show a kernel that is gone). Sessions are kept by the relay that made them, in memory: in a fleet, their
kernels are everyone's but the session list is each relay's. Tokens are the REST routes' (the guards of
:mod:`.guards`); a kernel token, limited to its kernel's routes, cannot use sessions.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import quote

from klein import Klein
from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource
from werkzeug.exceptions import HTTPException

from ..kernels import Kernel, KernelRegistry, UnknownKernel, UnknownKernelSpec
from ..kernels.spawning import KernelspecNotAllowed, SpawnUnavailable, TooManyKernels, error_text
from .api import json_body
from .jupyter_api import JupyterAPI, jupyter_error
from .lookup import looked_up

log = Logger()

#: At most this many sessions are kept (each holds a few short strings).
MAX_SESSIONS: Final = 10_000
MAX_TEXT: Final = 4096


class BadSession(ValueError):
    """A POST or PATCH body that is not a session model Jupyter Server would take."""


@dataclass
class Session:
    """A session: a path (a notebook's, a console's), a name, a type, and the kernel it talks to."""

    id: str
    path: str
    name: str
    type: str
    kernel_id: str


def _text(body: dict[str, Any], key: str, default: str | None = None) -> str | None:
    value = body.get(key, default)
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > MAX_TEXT:
        raise BadSession(f'"{key}" must be a string of at most {MAX_TEXT} characters')
    return value


def _kernel_choice(body: dict[str, Any]) -> tuple[str | None, str | None]:
    """The kernel a body asks for: (an existing kernel's id, a kernelspec name); either may be None."""
    kernel = body.get("kernel")
    if kernel is None:
        return None, None
    if not isinstance(kernel, dict):
        raise BadSession(
            '"kernel" must be an object like {"name": "python3"} or {"id": "<kernel id>"}'
        )
    return _text(kernel, "id"), _text(kernel, "name")


def _body(request: IRequest) -> dict[str, Any]:
    content = request.content.read() if request.content is not None else b""
    try:
        body = json.loads(content) if content.strip() else {}
    except ValueError as error:
        raise BadSession(f"Invalid JSON in the request body: {error}") from None
    if not isinstance(body, dict):
        raise BadSession(
            'The body must be a session model like {"path": "a.ipynb", "type": "notebook"}'
        )
    return body


class SessionsAPI:
    """Jupyter Server's ``/api/sessions`` routes over ``kernels``, starting kernels through ``jupyter``."""

    app = Klein()

    def __init__(self, kernels: KernelRegistry, jupyter: JupyterAPI) -> None:
        self._kernels = kernels
        self._jupyter = jupyter
        self._sessions: dict[str, Session] = {}

    def resource(self) -> IResource:
        return self.app.resource()  # type: ignore[no-any-return]

    def _live(self) -> list[Session]:
        """The sessions whose kernel still runs (the others are forgotten)."""
        for session in list(self._sessions.values()):
            if session.kernel_id not in self._kernels:
                del self._sessions[session.id]
        return list(self._sessions.values())

    def model(self, session: Session) -> dict[str, Any]:
        model: dict[str, Any] = {
            "id": session.id,
            "path": session.path,
            "name": session.name,
            "type": session.type,
            "kernel": self._jupyter.model(self._kernels.get(session.kernel_id)),
        }
        if session.type == "notebook":
            model["notebook"] = {"path": session.path, "name": session.name}
        return model

    def _kernel_for(self, kernel_id: str | None, name: str | None) -> Deferred[Kernel]:
        """A running kernel by id (looked up first: see :mod:`.lookup`), else a new one of kernelspec ``name``."""

        def chosen() -> Deferred[Kernel]:
            if kernel_id is not None and kernel_id in self._kernels:
                return succeed(self._kernels.get(kernel_id))
            # Jupyter Server starts a new kernel for an id it does not know
            return self._jupyter.start_kernel(name)

        return looked_up(self._kernels, kernel_id).addCallback(lambda _: chosen())

    # -- routes ----------------------------------------------------------------------------------------

    @app.route("/api/sessions", methods=["GET"])
    @app.route("/api/sessions/", methods=["GET"])
    def sessions(self, request: IRequest) -> bytes:
        return json_body(request, 200, [self.model(session) for session in self._live()])

    @app.route("/api/sessions/<session_id>", methods=["GET"])
    def session(self, request: IRequest, session_id: str) -> bytes:
        self._live()
        session = self._sessions.get(session_id)
        if session is None:
            return self._no_session(request, session_id)
        return json_body(request, 200, self.model(session))

    @app.route("/api/sessions", methods=["POST"])
    @app.route("/api/sessions/", methods=["POST"])
    def create(self, request: IRequest) -> Deferred[bytes] | bytes:
        try:
            body = _body(request)
            notebook = body.get("notebook")
            path = _text(body, "path") or (
                _text(notebook, "path") if isinstance(notebook, dict) else None
            )
            if not path:
                raise BadSession('No path given: a session model has a "path"')
            kind = _text(body, "type") or ("notebook" if isinstance(notebook, dict) else None)
            if not kind:
                raise BadSession(
                    'No type given: a session model has a "type" (notebook, console, file)'
                )
            name = _text(body, "name", "") or ""
            kernel_id, kernel_name = _kernel_choice(body)
        except BadSession as error:
            return jupyter_error(request, 400, str(error))
        existing = next((s for s in self._live() if s.path == path), None)
        if existing is not None:
            return self._created(request, existing)
        if len(self._sessions) >= MAX_SESSIONS:
            return jupyter_error(request, 503, f"the relay keeps at most {MAX_SESSIONS} sessions")

        def started(kernel: Kernel) -> bytes:
            session = Session(uuid.uuid4().hex, path, name, kind, kernel.id)
            self._sessions[session.id] = session
            log.info(
                "Session {session} for {path!r} on kernel {kernel}",
                session=session.id,
                path=path,
                kernel=kernel.id,
            )
            return self._created(request, session)

        return self._kernel_for(kernel_id, kernel_name).addCallbacks(
            started, self._start_failed, errbackArgs=(request,)
        )

    @app.route("/api/sessions/<session_id>", methods=["PATCH"])
    def update(self, request: IRequest, session_id: str) -> Deferred[bytes] | bytes:
        self._live()
        session = self._sessions.get(session_id)
        if session is None:
            return self._no_session(request, session_id)
        try:
            body = _body(request)
            changes: dict[str, str | None] = {
                key: _text(body, key) for key in ("path", "name", "type") if key in body
            }
            kernel_id, kernel_name = _kernel_choice(body)
        except BadSession as error:
            return jupyter_error(request, 400, str(error))
        return looked_up(self._kernels, kernel_id).addCallback(
            lambda _: self._change(request, session, changes, kernel_id, kernel_name)
        )

    def _change(
        self,
        request: IRequest,
        session: Session,
        changes: Mapping[str, str | None],
        kernel_id: str | None,
        kernel_name: str | None,
    ) -> Deferred[bytes] | bytes:
        if kernel_id is not None and kernel_id not in self._kernels:
            return jupyter_error(request, 400, f"No such kernel: {kernel_id}")
        before = session.kernel_id

        def changed(kernel: Kernel | None) -> Deferred[bytes] | bytes:
            for key, value in changes.items():
                if value is not None:
                    setattr(session, key, value)
            if kernel is not None:
                session.kernel_id = kernel.id
            answer = json_body(request, 200, self.model(session))
            if session.kernel_id == before or any(
                other.kernel_id == before for other in self._sessions.values()
            ):
                return answer
            # Its old kernel is no session's any more: stopped, as Jupyter Server does.
            return self._stop(before).addCallback(lambda _: answer)

        if kernel_id is None and kernel_name is None:
            return changed(None)  # type: ignore[return-value]
        return self._kernel_for(kernel_id, kernel_name).addCallbacks(
            changed, self._start_failed, errbackArgs=(request,)
        )

    @app.route("/api/sessions/<session_id>", methods=["DELETE"])
    def delete(self, request: IRequest, session_id: str) -> Deferred[bytes] | bytes:
        self._live()
        session = self._sessions.pop(session_id, None)
        if session is None:
            return self._no_session(request, session_id)

        def stopped(_: object) -> bytes:
            request.setResponseCode(204)
            return b""

        return self._stop(session.kernel_id).addCallback(stopped)

    # -- helpers ---------------------------------------------------------------------------------------

    def _stop(self, kernel_id: str) -> Deferred[None]:
        """Shut a session's kernel down; one already gone is fine, a failure is logged."""

        def failed(failure: Failure) -> None:
            if not failure.check(UnknownKernel):  # type: ignore[no-untyped-call]
                log.warn(
                    "Could not shut down kernel {kernel_id} of a deleted session: {error}",
                    kernel_id=kernel_id,
                    error=error_text(failure),
                )

        if kernel_id not in self._kernels:
            return succeed(None)
        stopping: Deferred[Any] = self._kernels.shutdown(kernel_id)
        return stopping.addCallbacks(lambda _: None, failed)

    def _created(self, request: IRequest, session: Session) -> bytes:
        location = f"{self._jupyter.base_url}api/sessions/{quote(session.id)}"
        request.setHeader(b"Location", location.encode("ascii"))
        return json_body(request, 201, self.model(session))

    def _start_failed(self, failure: Failure, request: IRequest) -> bytes:
        if failure.check(UnknownKernelSpec):  # type: ignore[no-untyped-call]
            # Jupyter Server's answer to a kernel it cannot start for a session: 501.
            return jupyter_error(request, 501, error_text(failure), "kernel not found")
        if failure.check(KernelspecNotAllowed):  # type: ignore[no-untyped-call]
            return jupyter_error(request, 403, error_text(failure))
        if failure.check(TooManyKernels, SpawnUnavailable):  # type: ignore[no-untyped-call]
            request.setHeader(b"Retry-After", b"10")
            return jupyter_error(request, 503, error_text(failure))
        log.warn("Could not start a session's kernel: {error}", error=error_text(failure))
        return jupyter_error(request, 500, error_text(failure))

    def _no_session(self, request: IRequest, session_id: str) -> bytes:
        return jupyter_error(request, 404, f"Session not found: {session_id[:64]}")

    @app.handle_errors(HTTPException)
    def http_error(self, request: IRequest, failure: Failure) -> bytes:
        answer: bytes = self._jupyter.http_error(request, failure)
        return answer

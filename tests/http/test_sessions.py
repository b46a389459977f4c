"""Jupyter Server's sessions API in process (StubTreq), over a registry whose kernel processes are faked."""

from __future__ import annotations

import json
from typing import Any

from treq.testing import StubTreq
from twisted.internet.task import Clock

from kernel_relay.auth import TokenAuth
from kernel_relay.http.api import RelayAPI
from kernel_relay.http.guards import AuthGuard
from kernel_relay.http.jupyter_api import JupyterAPI
from kernel_relay.http.routes import KleinRoutes
from kernel_relay.http.sessions import SessionsAPI
from kernel_relay.kernels import KernelRegistry
from tests.fakes import FakeProcesses, result_of

URL = "http://127.0.0.1:3000"
NOTEBOOK = {"path": "a.ipynb", "type": "notebook", "name": "", "kernel": {"name": "python3"}}


class Sessions:
    """The REST routes with sessions, on fake kernel processes, behind the token guard."""

    def __init__(self, token: str | None = None, max_kernels: int | None = None) -> None:
        self.clock = Clock()
        self.processes = FakeProcesses([("python3", "Python 3 (ipykernel)", "python")])
        self.kernels = KernelRegistry(
            self.clock,
            processes=self.processes,  # type: ignore[arg-type]
            launch_timeout=30,
            shutdown_timeout=5,
        )
        auth = TokenAuth(token)
        api = RelayAPI(self.kernels, max_kernels=max_kernels, auth=auth)
        jupyter = JupyterAPI(
            self.kernels, api.spawner, lambda kernel_id: 0, clock=self.clock.seconds
        )
        sessions = SessionsAPI(self.kernels, jupyter)
        routes = KleinRoutes(
            [
                (jupyter.app, jupyter.resource()),
                (sessions.app, sessions.resource()),
                (api.app, api.resource()),
            ]
        )
        self.stub = StubTreq(AuthGuard(routes, auth))
        self.headers = {"Authorization": f"token {token}"} if token else {}

    def call(self, method: str, path: str, body: object = None) -> tuple[int, Any]:
        """One request; a kernel it launches or stops is faked done."""
        data = json.dumps(body).encode() if body is not None else None
        pending = self.stub.request(method, URL + path, data=data, headers=self.headers)
        while self.processes.waiting("launch"):
            manager = self.processes.launched()
            self.processes.connected[manager.kernel_id].become_ready()
            self.stub.flush()
        while self.processes.waiting("stop"):
            self.processes.answer("stop", None)
            self.stub.flush()
        response = result_of(pending)
        content = result_of(self.stub.content(response))
        return response.code, json.loads(content) if content else None


def test_a_session_starts_its_kernel_and_is_listed_in_jupyter_servers_shape() -> None:
    """POST /api/sessions starts a kernel and answers 201 with Jupyter Server's session model."""
    api = Sessions()
    code, model = api.call("POST", "/api/sessions", NOTEBOOK)
    assert code == 201
    assert set(model) == {"id", "path", "name", "type", "kernel", "notebook"}
    assert (model["path"], model["type"], model["kernel"]["name"]) == (
        "a.ipynb",
        "notebook",
        "python3",
    )
    assert model["notebook"] == {"path": "a.ipynb", "name": ""}
    assert api.call("GET", "/api/sessions") == (200, [model])
    assert api.call("GET", f"/api/sessions/{model['id']}") == (200, model)
    assert [k["id"] for k in api.call("GET", "/api/kernels")[1]] == [model["kernel"]["id"]]
    assert api.call("POST", "/api/sessions", NOTEBOOK) == (201, model)  # same path, same session


def test_a_session_can_share_a_running_kernel_by_id() -> None:
    """A session asked for an existing kernel id uses that kernel and starts none."""
    api = Sessions()
    _, kernel = api.call("POST", "/api/kernels", {"name": "python3"})
    code, model = api.call(
        "POST", "/api/sessions", {"path": "c", "type": "console", "kernel": {"id": kernel["id"]}}
    )
    assert code == 201 and model["kernel"]["id"] == kernel["id"] and "notebook" not in model
    assert len(api.processes.made("launch")) == 1


def test_deleting_a_session_stops_its_kernel() -> None:
    """DELETE /api/sessions/<id> answers 204 and its kernel is gone."""
    api = Sessions()
    _, model = api.call("POST", "/api/sessions", NOTEBOOK)
    assert api.call("DELETE", f"/api/sessions/{model['id']}") == (204, None)
    assert api.call("GET", "/api/kernels") == (200, [])
    assert api.call("GET", f"/api/sessions/{model['id']}")[0] == 404
    assert api.call("DELETE", f"/api/sessions/{model['id']}")[0] == 404


def test_patch_renames_and_changes_the_kernel() -> None:
    """PATCH changes the path, and a new kernel by name replaces (and stops) the old one."""
    api = Sessions()
    _, model = api.call("POST", "/api/sessions", NOTEBOOK)
    old = model["kernel"]["id"]
    code, patched = api.call("PATCH", f"/api/sessions/{model['id']}", {"path": "b.ipynb"})
    assert code == 200 and patched["path"] == "b.ipynb" and patched["kernel"]["id"] == old
    code, patched = api.call(
        "PATCH", f"/api/sessions/{model['id']}", {"kernel": {"name": "python3"}}
    )
    assert code == 200 and patched["kernel"]["id"] != old
    assert [k["id"] for k in api.call("GET", "/api/kernels")[1]] == [patched["kernel"]["id"]]
    code, body = api.call("PATCH", f"/api/sessions/{model['id']}", {"kernel": {"id": "nope"}})
    assert code == 400 and "nope" in body["message"]


def test_bad_bodies_unknown_kernelspecs_and_max_kernels_are_jupyter_errors() -> None:
    """Missing path or type is 400, an unknown kernelspec 501, --max-kernels 503, all as Jupyter errors."""
    api = Sessions(max_kernels=1)
    assert api.call("POST", "/api/sessions", {"type": "notebook"})[0] == 400
    assert api.call("POST", "/api/sessions", {"path": "x"})[0] == 400
    assert api.call("POST", "/api/sessions", {**NOTEBOOK, "kernel": "python3"})[0] == 400
    code, body = api.call("POST", "/api/sessions", {**NOTEBOOK, "kernel": {"name": "nope"}})
    assert code == 501 and "nope" in body["message"]
    assert api.call("POST", "/api/sessions", NOTEBOOK)[0] == 201
    code, body = api.call("POST", "/api/sessions", {**NOTEBOOK, "path": "other"})
    assert code == 503 and set(body) == {"message", "reason"}
    assert api.call("PUT", "/api/sessions")[0] == 405


def test_a_session_whose_kernel_stopped_is_forgotten() -> None:
    """A session's kernel shut down through /api/kernels takes the session with it."""
    api = Sessions()
    _, model = api.call("POST", "/api/sessions", NOTEBOOK)
    assert api.call("DELETE", f"/api/kernels/{model['kernel']['id']}")[0] == 204
    assert api.call("GET", "/api/sessions") == (200, [])


def test_sessions_need_the_token() -> None:
    """Without the relay's token the sessions API answers 401."""
    api = Sessions(token="secret")
    assert api.call("GET", "/api/sessions")[0] == 200
    api.headers = {}
    assert api.call("GET", "/api/sessions")[0] == 401
    assert api.call("POST", "/api/sessions", NOTEBOOK)[0] == 401

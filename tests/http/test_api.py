"""The REST API in process: Klein routes through StubTreq, over a real registry whose kernel processes are faked."""

from __future__ import annotations

import json
from typing import Any

from treq.testing import StubTreq
from twisted.internet.task import Clock

from kernel_relay.auth import TokenAuth
from kernel_relay.http.api import RelayAPI
from kernel_relay.http.guards import AuthGuard
from kernel_relay.http.jupyter_api import JupyterAPI
from kernel_relay.http.kernelspecs import ResourceReader
from kernel_relay.http.routes import KleinRoutes
from kernel_relay.kernels import KernelRegistry
from tests.fakes import FakeProcesses, result_of

URL = "http://127.0.0.1:3000"


class API:
    """RelayAPI on a registry of fake processes, behind the token guard when ``token`` is set."""

    def __init__(
        self,
        token: str | None = None,
        max_kernels: int | None = None,
        read_resource: ResourceReader | None = None,
        resource_dir: str = "",
    ) -> None:
        self.clock = Clock()
        spec = ("python3", "Python 3 (ipykernel)", "python")
        self.processes = FakeProcesses([(*spec, {}, resource_dir) if resource_dir else spec])
        self.kernels = KernelRegistry(
            self.clock,
            processes=self.processes,  # type: ignore[arg-type]
            launch_timeout=30,
            shutdown_timeout=5,
        )
        self.auth = TokenAuth(token)
        api = RelayAPI(self.kernels, max_kernels=max_kernels, auth=self.auth)
        jupyter = JupyterAPI(
            self.kernels,
            api.spawner,
            lambda kernel_id: 0,
            clock=self.clock.seconds,
            **({"read_resource": read_resource} if read_resource is not None else {}),
        )
        routes = KleinRoutes([(jupyter.app, jupyter.resource()), (api.app, api.resource())])
        self.stub = StubTreq(AuthGuard(routes, self.auth))

    def call(self, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
        response = result_of(self.stub.request(method, URL + path, **kwargs))
        body = result_of(self.stub.content(response))
        return response.code, json.loads(body) if body else None

    def spawned(self) -> str:
        """A kernel started through GET /spawn/python3, its process faked ready."""
        pending = self.stub.get(URL + "/spawn/python3")
        manager = self.processes.launched()
        self.processes.connected[manager.kernel_id].become_ready()
        self.stub.flush()
        response = result_of(pending)
        assert response.code == 200
        kernel_id: str = json.loads(result_of(self.stub.content(response)))["id"]
        return kernel_id


def test_spawn_answers_the_seeds_id_once_the_kernel_is_ready() -> None:
    """GET /spawn/<spec> answers 200 {"id"} once the kernel is ready, and the kernel is listed."""
    api = API()
    kernel_id = api.spawned()
    code, listing = api.call("GET", "/api/kernels")
    assert code == 200
    assert [(entry["id"], entry["name"], entry["connections"]) for entry in listing] == [
        (kernel_id, "python3", 0)
    ]


def test_unknown_kernelspec_is_the_seeds_500_error() -> None:
    """A spawn of a malformed kernelspec name answers 500 {"error"}, as the original did."""
    code, body = API().call("GET", "/spawn/..%2Fetc")
    assert code == 500 and "error" in body


def test_max_kernels_refuses_with_retry_after() -> None:
    """A spawn over max_kernels answers 500 naming the bound, with Retry-After, and launches nothing."""
    api = API(max_kernels=1)
    api.spawned()
    response = result_of(api.stub.get(URL + "/spawn/python3"))
    assert response.code == 500
    assert response.headers.getRawHeaders(b"retry-after") == [b"10"]
    assert len(api.processes.made("launch")) == 1


def test_shutdown_answers_both_ids() -> None:
    """GET /shutdown/<id> answers {"id", "kernelId"} once the kernel stopped; an unknown id is 500 {"error"}."""
    api = API()
    kernel_id = api.spawned()
    pending = api.stub.get(URL + f"/shutdown/{kernel_id}")
    api.processes.answer("stop")
    api.stub.flush()
    response = result_of(pending)
    assert response.code == 200
    assert json.loads(result_of(api.stub.content(response))) == {
        "id": kernel_id,
        "kernelId": kernel_id,
    }
    code, body = api.call("GET", "/shutdown/no-such-kernel")
    assert code == 500 and "error" in body


def test_interrupt_of_an_unknown_kernel_is_404() -> None:
    """POST /api/kernels/<id>/interrupt on an unknown kernel answers Jupyter Server's 404 {"message"}."""
    code, body = API().call("POST", "/api/kernels/nope/interrupt")
    assert code == 404 and body == {"message": "Kernel does not exist: nope", "reason": None}


def test_wrong_method_and_unknown_route_are_json() -> None:
    """A wrong method answers 405 and an unknown route 404, both with a JSON error; HEAD /spawn starts nothing."""
    api = API()
    assert api.call("POST", "/spawn/python3")[0] == 405
    assert api.call("GET", "/api/nothing-here")[0] == 404
    response = result_of(api.stub.head(URL + "/spawn/python3"))
    assert response.code == 405
    assert api.processes.made("launch") == []


def test_kernelspecs_are_listed_in_jupyter_servers_shape() -> None:
    """GET /api/kernelspecs: the default and each spec by name, with its kernel.json fields."""
    code, body = API().call("GET", "/api/kernelspecs")
    assert code == 200
    assert body == {
        "default": "python3",
        "kernelspecs": {
            "python3": {
                "name": "python3",
                "spec": {
                    "argv": [],
                    "display_name": "Python 3 (ipykernel)",
                    "language": "python",
                    "env": {},
                    "metadata": {},
                    "interrupt_mode": "signal",
                },
                "resources": {},
            }
        },
    }
    assert API().call("GET", "/api/kernelspecs/python3")[1] == body["kernelspecs"]["python3"]
    code, missing = API().call("GET", "/api/kernelspecs/nope")
    assert code == 404 and missing["message"] == "Kernel spec nope not found"


def test_token_guards_every_route_but_health() -> None:
    """With a token, routes answer 401 without it and serve with it; /api/health needs none."""
    api = API(token="secret")
    assert api.call("GET", "/api/kernels")[0] == 401
    assert api.call("GET", "/api/kernels", headers={"Authorization": "Bearer secret"})[0] == 200
    assert api.call("GET", "/api/kernels?token=secret")[0] == 200
    code, health = api.call("GET", "/api/health")
    assert code == 200 and health["status"] == "ok"


def test_kernel_tokens_are_issued_for_running_kernels_only() -> None:
    """POST /api/kernels/<id>/tokens issues a scoped token (201) for a running kernel, 404 for another."""
    api = API(token="secret")
    headers = {"Authorization": "Bearer secret"}
    pending = api.stub.get(URL + "/spawn/python3", headers=headers)
    manager = api.processes.launched()
    api.processes.connected[manager.kernel_id].become_ready()
    api.stub.flush()
    kernel_id = json.loads(result_of(api.stub.content(result_of(pending))))["id"]
    code, issued = api.call(
        "POST", f"/api/kernels/{kernel_id}/tokens", json={"access": "read-only"}, headers=headers
    )
    assert code == 201 and issued["access"] == "read-only" and issued["kernel_id"] == kernel_id
    assert api.call("POST", "/api/kernels/nope/tokens", headers=headers)[0] == 404


def test_health_tells_a_caller_without_the_relays_token_only_that_it_is_up() -> None:
    """Without the relay's token /api/health is {"status": "ok"}; with it, the version, kernels and fleet too."""
    kernels = KernelRegistry(Clock(), processes=FakeProcesses([]))  # type: ignore[arg-type]
    api = RelayAPI(kernels, auth=TokenAuth("secret"), fleet=lambda: {"relay": "fleet-id-1"})
    stub = StubTreq(api.resource())

    def health(**kwargs: Any) -> Any:
        response = result_of(stub.get(URL + "/api/health", **kwargs))
        return json.loads(result_of(stub.content(response)))

    assert health() == {"status": "ok"}
    assert health(headers={"Authorization": "Bearer wrong"}) == {"status": "ok"}
    for full in (
        health(headers={"Authorization": "Bearer secret"}),
        health(params={"token": "secret"}),
    ):
        assert full["fleet"] == {"relay": "fleet-id-1"} and "version" in full

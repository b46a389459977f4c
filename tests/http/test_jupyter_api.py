"""Jupyter Server's kernel REST API in process (StubTreq), over a registry whose kernel processes are faked."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred, succeed

from kernel_relay.http.jupyter_api import BadEnvironment, EnvPolicy
from kernel_relay.http.kernelspecs import read_resource_file
from tests.fakes import result_of
from tests.http.test_api import API, URL


def started(api: API, body: object) -> tuple[int, dict[str, str], Any]:
    """POST /api/kernels with ``body``; the launch it makes (if any) is faked ready."""
    pending = api.stub.post(URL + "/api/kernels", data=json.dumps(body).encode())
    if api.processes.waiting("launch"):
        manager = api.processes.launched()
        api.processes.connected[manager.kernel_id].become_ready()
        api.stub.flush()
    response = result_of(pending)
    headers = {k.decode(): v[0].decode() for k, v in response.headers.getAllRawHeaders()}
    content = result_of(api.stub.content(response))
    return response.code, headers, json.loads(content) if content else None


def test_post_starts_a_kernel_and_answers_201_with_its_model_and_location() -> None:
    """201, Location /api/kernels/<id>, and the model Jupyter clients validate."""
    api = API()
    code, headers, model = started(api, {"name": "python3"})
    assert code == 201
    assert headers["Location"] == f"/api/kernels/{model['id']}"
    assert set(model) >= {"id", "name", "last_activity", "execution_state", "connections"}
    assert model["name"] == "python3" and model["connections"] == 0
    assert model["last_activity"].endswith("Z")
    assert api.call("GET", f"/api/kernels/{model['id']}") == (200, model)
    assert api.call("GET", "/api/kernels")[1] == [model]


def test_post_without_a_name_starts_the_default_kernelspec() -> None:
    api = API()
    code, _, model = started(api, {})
    assert (code, model["name"]) == (201, "python3")


def test_post_passes_kernel_variables_and_refuses_others_with_400() -> None:
    """KERNEL_* reach the launch; LD_PRELOAD or PATH are refused before anything starts."""
    api = API()
    code, _, model = started(api, {"name": "python3", "env": {"KERNEL_USERNAME": "ada"}})
    assert code == 201 and api.processes.envs[model["id"]] == {"KERNEL_USERNAME": "ada"}
    for env in ({"LD_PRELOAD": "/tmp/x.so"}, {"PATH": "/tmp"}, ["KERNEL_X"], {"KERNEL_X": 1}):
        code, _, body = started(api, {"name": "python3", "env": env})
        assert code == 400 and body["message"].startswith('"env"'), env
    assert len(api.processes.made("launch")) == 1


def test_bad_bodies_and_unknown_kernelspecs_are_jupyter_errors() -> None:
    api = API()
    response = result_of(api.stub.post(URL + "/api/kernels", data=b"{nope"))
    assert response.code == 400
    code, _, body = started(api, {"name": "no-such-spec"})
    assert code == 404 and "no-such-spec" in body["message"] and "reason" in body
    assert started(api, {"name": 7})[0] == 400


def test_delete_answers_204_and_the_kernel_is_gone() -> None:
    api = API()
    _, _, model = started(api, {"name": "python3"})
    pending = api.stub.delete(URL + f"/api/kernels/{model['id']}")
    api.processes.answer("stop", None)
    api.stub.flush()
    response = result_of(pending)
    assert response.code == 204 and result_of(api.stub.content(response)) == b""
    assert api.call("GET", f"/api/kernels/{model['id']}")[0] == 404
    assert api.call("DELETE", f"/api/kernels/{model['id']}")[0] == 404


def test_wrong_methods_are_405_in_jupyter_servers_shape() -> None:
    api = API()
    code, body = api.call("PUT", "/api/kernels")
    assert code == 405 and set(body) == {"message", "reason"}
    assert api.call("GET", "/api/kernels/x/interrupt")[0] == 405


def test_status_and_version_answer() -> None:
    api = API()
    code, status = api.call("GET", "/api/status")
    assert code == 200 and status["kernels"] == 0 and status["started"].endswith("Z")
    assert api.call("GET", "/api")[1]["version"]


def test_the_env_policy_allows_named_variables_only() -> None:
    policy = EnvPolicy.from_option("LANG, TZ")
    assert policy.checked({"LANG": "C", "KERNEL_A": "b"}) == {"LANG": "C", "KERNEL_A": "b"}
    for bad in ({"LC_ALL": "C"}, {"KERNEL_": "x"}, {"KERNEL_A": "a\x00"}):
        try:
            policy.checked(bad)
        except BadEnvironment as error:
            assert "env" in str(error)
        else:
            raise AssertionError(f"{bad} was allowed")


def test_times_always_carry_microseconds_as_the_gateway_client_parses_them() -> None:
    from datetime import UTC, datetime

    from kernel_relay.kernels import iso_date as iso

    for stamp in (0.0, 1796219234.0, 1796219234.5):
        parsed = datetime.strptime(iso(stamp), "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
        assert parsed.timestamp() == stamp
    assert iso(0.0) == "1970-01-01T00:00:00.000000Z"


def resource_dir(tmp_path: Path) -> Path:
    """A kernelspec directory with a logo, a symlink out of it, a FIFO and a file over the size bound."""
    directory = tmp_path / "spec"
    directory.mkdir()
    (directory / "logo-64x64.png").write_bytes(b"\x89PNG logo")
    (tmp_path / "secret").write_text("root:x:0:0")
    (directory / "kernel.js").symlink_to(tmp_path / "secret")
    os.mkfifo(directory / "kernel.css")
    (directory / "logo-svg.svg").write_bytes(b"x" * 101)
    return directory


def test_only_regular_files_inside_the_kernelspec_directory_are_read(tmp_path: Path) -> None:
    """A symlink out of the directory, a FIFO (never opened for a writer) and an oversized file read as None."""
    directory = str(resource_dir(tmp_path))
    assert read_resource_file(directory, "logo-64x64.png", limit=100) == b"\x89PNG logo"
    assert read_resource_file(directory, "kernel.js", limit=100) is None
    assert read_resource_file(directory, "kernel.css", limit=100) is None
    assert read_resource_file(directory, "logo-svg.svg", limit=100) is None
    assert read_resource_file(directory, "logo-svg.svg", limit=101) == b"x" * 101
    assert read_resource_file(directory, "absent.png", limit=100) is None


def test_resource_route_answers_404_for_what_is_not_served(tmp_path: Path) -> None:
    """GET /kernelspecs/<name>/<file> serves the logo and answers 404 for the symlink and the FIFO."""
    directory = str(resource_dir(tmp_path))
    reads: list[str] = []

    def reader(where: str, filename: str) -> Deferred[bytes | None]:
        reads.append(filename)
        return succeed(read_resource_file(where, filename))

    api = API(read_resource=reader, resource_dir=directory)
    assert api.call("GET", "/kernelspecs/python3/kernel.js")[0] == 404
    assert api.call("GET", "/kernelspecs/python3/kernel.css")[0] == 404
    response = result_of(api.stub.get(URL + "/kernelspecs/python3/logo-64x64.png"))
    assert response.code == 200
    assert result_of(api.stub.content(response)) == b"\x89PNG logo"
    assert reads == ["kernel.js", "kernel.css", "logo-64x64.png"]
    _, listing = api.call("GET", "/api/kernelspecs/python3")
    assert set(listing["resources"]) == {"logo-64x64", "logo-svg"}


def test_a_body_nested_past_the_bound_is_a_400_not_a_500() -> None:
    """JSON nested deeper than Python's recursion limit in a POST body is a clear 400 Jupyter error."""
    api = API()
    response = result_of(api.stub.post(URL + "/api/kernels", data=b"[" * 100_000 + b"]" * 100_000))
    body = json.loads(result_of(api.stub.content(response)))
    assert response.code == 400 and "nested more than 256 levels deep" in body["message"]
    assert not api.processes.made("launch")

"""/api/health is liveness (ok or degraded), /api/health/ready readiness (200 or 503 with the reasons)."""

from __future__ import annotations

import json
from typing import Any

from treq.testing import StubTreq
from twisted.internet.task import Clock

from kernel_relay.auth import TokenAuth
from kernel_relay.http.api import RelayAPI
from kernel_relay.kernels import KernelRegistry
from tests.fakes import FakeProcesses, result_of

URL = "http://127.0.0.1:3000"
TOKEN = {"Authorization": "Bearer secret"}


def _get(api: RelayAPI, path: str, **kwargs: Any) -> tuple[int, Any]:
    stub = StubTreq(api.resource())
    response = result_of(stub.get(URL + path, **kwargs))
    return response.code, json.loads(result_of(stub.content(response)))


def _api(fleet: dict[str, Any] | None = None) -> tuple[RelayAPI, KernelRegistry]:
    kernels = KernelRegistry(Clock(), processes=FakeProcesses([]))  # type: ignore[arg-type]
    view = None if fleet is None else (lambda: fleet)
    return RelayAPI(kernels, auth=TokenAuth("secret"), fleet=view), kernels


def test_a_fleet_relay_without_redis_is_alive_but_not_ready() -> None:
    """Redis down: /api/health 200, /api/health/ready 503 (the reason for the token's holder); then 200."""
    fleet = {"relay": "r1", "redis_up": False}
    api, _ = _api(fleet)
    assert _get(api, "/api/health") == (200, {"status": "ok", "ready": False})
    assert _get(api, "/api/health/ready") == (503, {"ready": False})
    code, body = _get(api, "/api/health/ready", headers=TOKEN)
    assert code == 503 and "Redis is unreachable" in body["reasons"][0]
    assert _get(api, "/api/health", headers=TOKEN)[1]["ready"] is False
    fleet["redis_up"] = True
    assert _get(api, "/api/health/ready") == (200, {"ready": True})
    assert _get(api, "/api/health") == (200, {"status": "ok"})


def test_a_relay_without_a_fleet_is_ready() -> None:
    """Nothing to wait for: ready at once."""
    api, _ = _api()
    assert _get(api, "/api/health/ready") == (200, {"ready": True})


def test_a_pool_that_keeps_failing_makes_the_relay_degraded() -> None:
    """A warm pool failing again and again: /api/health says degraded (why, to the token's holder), still 200."""
    api, kernels = _api()
    kernels.failing_pools = lambda: {"python3": 4}  # type: ignore[method-assign]
    assert _get(api, "/api/health") == (200, {"status": "degraded"})
    code, body = _get(api, "/api/health", headers=TOKEN)
    assert code == 200 and body["reasons"] == [
        "the warm pool of 'python3' failed to start a kernel 4 times in a row"
    ]
    assert _get(api, "/api/health/ready")[0] == 200

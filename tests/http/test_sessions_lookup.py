"""
Sessions naming a kernel this relay does not know (in a fleet, one another relay started a moment ago): the id
is looked up first, so the session shares that kernel instead of starting a new one (POST) or refusing (PATCH).
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from twisted.internet.defer import Deferred

from tests.fakes import result_of

from .test_sessions import NOTEBOOK, URL, Sessions

ELSEWHERE = "0d1e2f30-4a5b-4c6d-8e7f-8091a2b3c4d5"


def looking_up(api: Sessions) -> dict[str, Deferred[None]]:
    """The look-ups the relay asks for, by kernel id, each to be fired by the test."""
    asked: dict[str, Deferred[None]] = {}
    api.kernels.lookup = lambda kernel_id: asked.setdefault(kernel_id, Deferred())
    return asked


def found(api: Sessions, monkeypatch: pytest.MonkeyPatch, asked: dict[str, Deferred[None]]) -> None:
    """The kernel started elsewhere is found: it runs here now (started under its id), and the look-up ends."""
    with monkeypatch.context() as patch:
        patch.setattr(uuid, "uuid4", lambda: uuid.UUID(ELSEWHERE))
        code, _ = api.call("POST", "/api/kernels", {"name": "python3"})
    assert code == 201
    asked[ELSEWHERE].callback(None)
    api.stub.flush()
    while api.processes.waiting("stop"):
        api.processes.answer("stop", None)
        api.stub.flush()


def request(api: Sessions, method: str, path: str, body: object) -> Deferred[Any]:
    return api.stub.request(method, URL + path, data=json.dumps(body).encode(), headers=api.headers)


def answered(pending: Deferred[Any]) -> bool:
    """Whether the request has its response yet."""
    outcome: list[object] = []
    pending.addBoth(lambda result: (outcome.append(result), result)[1])
    return bool(outcome)


def answer(api: Sessions, pending: Deferred[Any]) -> tuple[int, Any]:
    response = result_of(pending)
    return response.code, json.loads(result_of(api.stub.content(response)))


def test_a_new_session_shares_a_kernel_found_by_the_look_up(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """POST /api/sessions naming an unknown kernel id waits for the look-up, then shares that kernel (none started)."""
    api = Sessions()
    asked = looking_up(api)
    pending = request(api, "POST", "/api/sessions", {**NOTEBOOK, "kernel": {"id": ELSEWHERE}})
    assert set(asked) == {ELSEWHERE} and not answered(pending)
    found(api, monkeypatch, asked)
    code, model = answer(api, pending)
    assert code == 201 and model["kernel"]["id"] == ELSEWHERE
    assert [k["id"] for k in api.call("GET", "/api/kernels")[1]] == [ELSEWHERE]


def test_a_session_moved_to_a_kernel_found_by_the_look_up_is_not_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """PATCH /api/sessions/<id> to an unknown kernel id waits for the look-up, then moves the session to it."""
    api = Sessions()
    _, session = api.call("POST", "/api/sessions", NOTEBOOK)
    asked = looking_up(api)
    path = f"/api/sessions/{session['id']}"
    pending = request(api, "PATCH", path, {"kernel": {"id": ELSEWHERE}})
    assert set(asked) == {ELSEWHERE} and not answered(pending)
    found(api, monkeypatch, asked)
    code, model = answer(api, pending)
    assert code == 200 and model["kernel"]["id"] == ELSEWHERE


def test_a_session_naming_a_kernel_the_look_up_did_not_find_is_as_before() -> None:
    """Not found: PATCH is refused with 400, as without a fleet."""
    api = Sessions()
    _, session = api.call("POST", "/api/sessions", NOTEBOOK)
    asked = looking_up(api)
    pending = request(api, "PATCH", f"/api/sessions/{session['id']}", {"kernel": {"id": "nope"}})
    asked["nope"].callback(None)
    api.stub.flush()
    code, model = answer(api, pending)
    assert code == 400 and "No such kernel" in model["message"]

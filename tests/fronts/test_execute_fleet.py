"""The execute API's answers for requests read from the fleet, in process: found, none, Redis away, a client gone."""

from __future__ import annotations

import json
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.python.failure import Failure
from twisted.web.test.requesthelper import DummyRequest

from kernel_relay.fleet.connection import FleetUnavailable
from kernel_relay.fronts.execute import RestClient
from kernel_relay.fronts.execute_fleet import answer_from_fleet, list_with_fleet
from kernel_relay.relay.execution import Execution


def request_of(msg_id: str, live: bool = False, submitted: float = 0.0) -> Execution:
    found = Execution("k1", msg_id, "", {}, submitted)
    if not live:
        found.state = "complete"
    return found


def answer(request: Any, found: Execution) -> bytes:
    request.setResponseCode(200)
    return found.msg_id.encode()


def missing(request: Any) -> bytes:
    request.setResponseCode(404)
    return b"not kept"


def settled(d: Deferred[bytes] | bytes) -> bytes:
    """What the answer wrote (it must be there already)."""
    results: list[bytes] = []
    if isinstance(d, bytes):
        results.append(d)
    else:
        d.addCallback(results.append)
    return results[0]


def test_one_request_found_none_or_redis_away() -> None:
    """Found: the answer; none: the 404; Redis away: a 503 that says so (never an unhandled failure)."""
    for reading, code, body in [
        (succeed(request_of("r1")), 200, b"r1"),
        (succeed(None), 404, b"not kept"),
        (fail(FleetUnavailable("Redis at x cannot be reached")), 503, None),
    ]:
        request = DummyRequest([b""])
        written = settled(answer_from_fleet(request, reading, answer, lambda r=request: missing(r)))
        assert request.responseCode == code
        assert written == body if body is not None else b"cannot be reached" in written


def test_a_client_that_goes_cancels_the_read() -> None:
    """The client's going cancels the fleet's read (and its wait): nothing is answered."""
    request = DummyRequest([b""])
    cancelled: list[Deferred[Any]] = []
    reading: Deferred[Execution | None] = Deferred(cancelled.append)
    results: list[Any] = []
    answer_from_fleet(request, reading, answer, lambda: missing(request)).addCallback(
        results.append
    )
    request.processingFailed(Failure(ConnectionError("gone")))
    assert cancelled == [reading] and results == []


def model(found: Execution) -> dict[str, Any]:
    return {"request_id": found.msg_id}


def test_lists_merge_this_relays_requests_and_the_fleets_oldest_first() -> None:
    """Both kinds in the order they were sent; live only if asked; Redis away: this relay's, and why."""
    here = [request_of("h1", submitted=1.0), request_of("h2", live=True, submitted=3.0)]
    elsewhere = [request_of("e1", live=True, submitted=2.0)]
    for live_only, expected in [(False, ["h1", "e1", "h2"]), (True, ["e1", "h2"])]:
        request = DummyRequest([b""])
        body = settled(list_with_fleet(request, "k1", here, succeed(elsewhere), model, live_only))
        assert [r["request_id"] for r in json.loads(body)["requests"]] == expected
    request = DummyRequest([b""])
    away: Deferred[list[Execution]] = fail(FleetUnavailable("Redis at x cannot be reached"))
    body = settled(list_with_fleet(request, "k1", here, away, model, False))
    listed = json.loads(body)
    assert [r["request_id"] for r in listed["requests"]] == ["h1", "h2"]
    assert "cannot be reached" in listed["fleet_error"] and request.responseCode == 200
    body = settled(list_with_fleet(DummyRequest([b""]), "k1", here, None, model, False))
    assert "fleet_error" not in json.loads(body)


def test_each_rest_client_of_a_kernel_has_an_identity_of_its_own() -> None:
    """Two relays' REST clients of one kernel (or one relay's next) never share a ZMQ identity."""
    ids = {RestClient(None, "k1").client_id for _ in range(3)}  # type: ignore[arg-type]
    assert len(ids) == 3 and all(i.startswith("rest:") and i.endswith(":k1") for i in ids)

"""
In process: a kernel a client names that the relay does not know is looked up (in a fleet, in Redis) before
the client is refused, on both fronts and the REST routes that name a kernel; without a fleet nothing waits.
"""

from __future__ import annotations

import json

import pytest
from twisted.internet.defer import Deferred

from tests.fakes import kernel_message, result_of
from tests.inproc import FRONTS, PORT, InProcessRelay, Peer, PeerFactory, SocketIOPeer

fronts = pytest.mark.parametrize("front", list(FRONTS.values()), ids=list(FRONTS))


def looking_up(relay: InProcessRelay) -> dict[str, Deferred[None]]:
    """The look-ups the relay asks for, by kernel id, each to be fired by the test."""
    asked: dict[str, Deferred[None]] = {}

    def lookup(kernel_id: str) -> Deferred[None]:
        return asked.setdefault(kernel_id, Deferred())

    relay.registry.lookup = lookup
    return asked


def settled(d: Deferred[object]) -> bool:
    """Whether ``d`` has a result yet (one it goes on holding)."""
    outcome: list[object] = []
    d.addBoth(lambda result: (outcome.append(result), result)[1])
    return bool(outcome)


def answered(peer: Peer) -> bool:
    """Whether the relay has admitted or refused the client yet."""
    if isinstance(peer, SocketIOPeer):
        return bool(peer.client.refused or peer.client.joined)
    return peer.client.status is not None


def joined(peer: Peer) -> bool:
    if isinstance(peer, SocketIOPeer):
        return not peer.client.refused and bool(peer.client.joined)
    return peer.client.status == 101


@fronts
def test_a_client_of_a_kernel_found_by_the_lookup_is_served(front: PeerFactory) -> None:
    """The client waits for the look-up, neither refused nor served; once it found the kernel, it is served."""
    relay = InProcessRelay(kernels=())
    asked = looking_up(relay)
    peer = front(relay, "k9")
    assert set(asked) == {"k9"} and not answered(peer)
    relay.start_kernel("k9")
    asked["k9"].callback(None)
    relay.flush()
    assert joined(peer)
    relay.kernel("k9").publish(kernel_message("stream", "iopub", content={"text": "hi"}))
    relay.flush()
    assert [m["content"]["text"] for m in peer.got("iopub")] == ["hi"]  # type: ignore[index]


@fronts
def test_a_client_of_a_kernel_the_lookup_did_not_find_is_refused_as_before(
    front: PeerFactory,
) -> None:
    """A kernel the look-up did not find is refused as an unknown kernel is without a fleet."""
    relay = InProcessRelay(kernels=())
    asked = looking_up(relay)
    peer = front(relay, "k9")
    asked["k9"].callback(None)
    relay.flush()
    assert peer.refusal is not None and "No running kernel" in peer.refusal


@fronts
def test_without_a_fleet_an_unknown_kernel_is_refused_at_once(front: PeerFactory) -> None:
    """With nothing to look up in, an unknown kernel is refused at once, as it always was."""
    relay = InProcessRelay(kernels=())
    peer = front(relay, "k9")
    assert peer.refusal is not None and "No running kernel" in peer.refusal


@pytest.mark.parametrize(
    ("method", "path", "code"),
    [
        ("get", "/api/kernels/k9", 200),
        ("delete", "/api/kernels/k9", 204),
        ("get", "/shutdown/k9", 200),
    ],
)
def test_the_rest_routes_on_a_kernel_answer_once_it_is_looked_up(
    method: str, path: str, code: int
) -> None:
    """A route naming a kernel the relay does not know answers once the look-up is over: found, as usual."""
    relay = InProcessRelay(kernels=())
    asked = looking_up(relay)
    stub = relay.http()
    answer = getattr(stub, method)(f"http://127.0.0.1:{PORT}{path}")
    assert not settled(answer) and set(asked) == {"k9"}
    relay.start_kernel("k9")
    asked["k9"].callback(None)
    stub.flush()
    assert result_of(answer).code == code


def test_a_rest_route_on_a_kernel_the_lookup_did_not_find_is_404() -> None:
    """Not found by the look-up: the same 404 as without a fleet."""
    relay = InProcessRelay(kernels=())
    asked = looking_up(relay)
    stub = relay.http()
    answer = stub.get(f"http://127.0.0.1:{PORT}/api/kernels/k9")
    asked["k9"].callback(None)
    stub.flush()
    response = result_of(answer)
    assert response.code == 404
    assert "Kernel does not exist" in json.loads(result_of(stub.content(response)))["message"]

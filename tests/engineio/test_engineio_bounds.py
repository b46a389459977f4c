"""Engine.IO's bounds across sessions: how many sessions, from where, and what waits for all of them."""

from __future__ import annotations

import json
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport

from kernel_relay.engineio.server import MAX_SESSIONS_ON_PROBATION, SESSION_PROBATION
from tests.engineio.test_engineio_polling import Harness, Request


def handshake_from(h: Harness, host: str) -> Request:
    request = Request(query={"EIO": "4", "transport": "polling"})
    request.client = IPv4Address("TCP", host, 5555)
    h.render(request)
    return request


def sid_of(request: Request) -> str:
    body = request.body().decode()
    assert body.startswith("0"), body
    sid: str = json.loads(body[1:])["sid"]
    return sid


def test_a_session_over_its_addresss_bound_that_joins_replaces_the_oldest_unvouched_one() -> None:
    """At max_sessions_per_address a newcomer waits on probation; vouched for, it replaces the address's oldest unvouched session, never a vouched one nor another address's."""
    h = Harness(max_sessions_per_address=3)
    events: list[str] = []
    h.server.on_event = events.append
    other = sid_of(handshake_from(h, "10.0.0.2"))
    first, second, third = (sid_of(handshake_from(h, "10.0.0.1")) for _ in range(3))
    h.server.sessions[first].vouch()
    fourth = sid_of(handshake_from(h, "10.0.0.1"))
    assert set(h.server.sessions) == {other, first, second, third, fourth}
    h.server.sessions[fourth].vouch()
    assert set(h.server.sessions) == {other, first, third, fourth}
    assert events == ["session_evicted"]
    assert h.server.sessions_from("10.0.0.1") == 3
    h.clock.advance(SESSION_PROBATION)
    assert fourth in h.server.sessions


def test_a_session_over_its_addresss_bound_that_never_joins_is_closed() -> None:
    """A session on probation that is not vouched for within 5 s is closed and the address's others stay; at most 16 wait at once."""
    h = Harness(max_sessions_per_address=2)
    events: list[str] = []
    h.server.on_event = events.append
    kept = [sid_of(handshake_from(h, "10.0.0.1")) for _ in range(2)]
    waiting = [sid_of(handshake_from(h, "10.0.0.1")) for _ in range(MAX_SESSIONS_ON_PROBATION + 1)]
    assert waiting[0] not in h.server.sessions  # the oldest on probation made room for the newest
    h.clock.advance(SESSION_PROBATION)
    assert set(h.server.sessions) == set(kept)
    assert events == ["session_refused"] * (MAX_SESSIONS_ON_PROBATION + 1)


def test_sessions_per_address_are_bounded() -> None:
    """A handshake beyond max_sessions_per_address, all of them vouched for, is refused with 503; other addresses still get one."""
    h = Harness(max_sessions_per_address=2)
    events: list[str] = []
    h.server.on_event = events.append
    for _ in range(2):
        sid = sid_of(handshake_from(h, "10.0.0.1"))
        h.server.sessions[sid].vouch()
    refused = handshake_from(h, "10.0.0.1")
    assert refused.responseCode == 503
    assert refused.header("retry-after") == "10"
    assert "2 sessions from this address" in json.loads(refused.body())["message"]
    assert events == ["session_refused"]
    sid_of(handshake_from(h, "10.0.0.2"))
    assert h.server.sessions_from("10.0.0.1") == 2


def test_a_closed_session_frees_its_address_slot() -> None:
    """Once a session is gone its address may open another."""
    h = Harness(max_sessions_per_address=1)
    sid = sid_of(handshake_from(h, "10.0.0.1"))
    h.server.sessions[sid].abort("test")
    assert h.server.sessions_from("10.0.0.1") == 0
    sid_of(handshake_from(h, "10.0.0.1"))


def test_full_server_lets_the_oldest_unvouched_session_go() -> None:
    """At max_sessions the oldest session nobody vouched for is closed for the newcomer; vouched ones stay."""
    h = Harness(max_sessions=3)
    events: list[str] = []
    h.server.on_event = events.append
    first, second, third = (sid_of(handshake_from(h, f"10.0.0.{n}")) for n in (1, 2, 3))
    h.server.sessions[first].vouch()
    fourth = sid_of(handshake_from(h, "10.0.0.4"))
    assert set(h.server.sessions) == {first, third, fourth} and second not in h.server.sessions
    assert ("closed", "server full") in h.log
    assert events == ["session_evicted"]


def test_full_server_of_vouched_sessions_refuses() -> None:
    """When every session is vouched for, a new handshake is refused instead."""
    h = Harness(max_sessions=2)
    for n in (1, 2):
        sid = sid_of(handshake_from(h, f"10.0.0.{n}"))
        h.server.sessions[sid].vouch()
    refused = handshake_from(h, "10.0.0.3")
    assert refused.responseCode == 503
    assert len(h.server.sessions) == 2


def test_vouched_session_reports_its_connections() -> None:
    """A vouched session's polls tell on_vouched_connection which connection carries them."""
    h = Harness()
    seen: list[Any] = []
    h.server.on_vouched_connection = seen.append
    sid = sid_of(handshake_from(h, "10.0.0.1"))
    waiting = Request(query={"EIO": "4", "transport": "polling", "sid": sid})
    waiting.transport = StringTransport()
    h.render(waiting)  # held open: nothing to send, and nothing vouched yet
    assert seen == []
    h.server.sessions[sid].vouch()
    assert seen == [waiting.transport]
    h.server.sessions[sid].send("x")  # answers the held poll
    post = Request(b"POST", {"EIO": "4", "transport": "polling", "sid": sid}, b"4hi")
    post.transport = StringTransport()
    h.render(post)
    assert seen[-1] is post.transport


def test_total_backlog_over_the_bound_drops_the_largest() -> None:
    """Over max_total_buffered_bytes the sessions with the most waiting are closed as slow clients."""
    h = Harness(max_total_buffered_bytes=10_000)
    small, large, other = (sid_of(handshake_from(h, f"10.0.0.{n}")) for n in (1, 2, 3))
    sessions = h.server.sessions
    sessions[small].send("s" * 1_000)
    sessions[large].send("l" * 6_000)
    sessions[other].send("o" * 2_500)
    assert h.server.buffered_bytes == 9_500
    sessions[small].send("s" * 1_000)  # 10,500 in all: the largest goes
    assert set(h.server.sessions) == {small, other}
    assert h.server.buffered_bytes == 4_500
    assert ("closed", "slow client") in h.log


def test_backlog_that_drained_is_not_counted() -> None:
    """What a session delivered no longer counts: the total is counted again before anyone is dropped."""
    h = Harness(max_total_buffered_bytes=10_000)
    first, second = (sid_of(handshake_from(h, f"10.0.0.{n}")) for n in (1, 2))
    sessions = h.server.sessions
    sessions[first].send("a" * 8_000)
    h.get(first)  # delivered: nothing waits for it any more
    sessions[second].send("b" * 5_000)
    assert set(h.server.sessions) == {first, second}
    assert h.server.buffered_bytes == 5_000

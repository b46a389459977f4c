"""
A Redis writer without the fleet's secret, against real relays, kernels and a real redis-server: what it
injects into a kernel's output stream is not replayed, a reservation it forges blocks no spawn, an owner it
writes demotes no relay; and a Jupyter session that comes back while Redis, restarted empty, has not been
given the marks again is told that output may be missing instead of being taken for new.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests

from kernel_relay.fleet.numbering import pack
from kernel_relay.fronts.jupyter_connection import UNREAD_SECONDS
from kernel_relay.relay.payload import Outgoing
from tests.conftest import Relay
from tests.e2e.test_fleet import (
    AUTH,
    TOKEN,
    fleet_relay,
    health,
    ids,
    log_lines,
    no_kernel_left,
    show,
)
from tests.e2e.test_fleet_faults import joined, owned, relay
from tests.e2e.test_fleet_trust import FORGERY, redis, relay_id
from tests.e2e.test_jupyter_close_marks import told_gap
from tests.e2e.test_relay_resume import IopubWatcher, wait
from tests.jupyter_ws import JupyterWS
from tests.kernel_client import RelayKernelClient
from tests.redis_server import RedisServer, redis_command, redis_server, require_redis

pytestmark = pytest.mark.timeout(180)

__all__ = ["no_kernel_left", "redis_server"]


def forged_stream_message(text: str) -> bytes:
    """A kernel's ``stream`` message as the fleet's stream keeps one, written without the fleet's secret."""
    header = {
        "msg_id": "forged-1",
        "msg_type": "stream",
        "session": "s",
        "username": "u",
        "version": "5.3",
    }
    parts = [
        json.dumps(part).encode() for part in (header, {}, {}, {"name": "stdout", "text": text})
    ]
    return pack(Outgoing((parts[0], parts[1], parts[2], parts[3]), [], "iopub"))


def printed(watcher: IopubWatcher) -> str:
    return "".join(
        m["content"]["text"] for m in watcher.received() if m["header"]["msg_type"] == "stream"
    )


def test_an_entry_injected_into_the_stream_is_not_replayed_and_is_told(
    redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """A message XADDed into a kernel's stream by a Redis writer never reaches a client resuming on another
    relay from the stream; the client is told of a gap at its number, and gets the real output around it."""
    db = 9
    redis(redis_server, db, "FLUSHDB")
    url = redis_server.database(db)
    a = fleet_relay(tmp_path_factory.mktemp("a"), url)
    b = None
    watcher = resumed = None
    try:
        kernel_id = a.spawn()
        watcher = IopubWatcher(a.url, kernel_id, auth={"token": TOKEN})
        runner = RelayKernelClient(a.url, kernel_id, channels=("shell",), auth={"token": TOKEN})
        first = runner.send("shell", "execute_request", {"code": "print('before', flush=True)"})
        wait(lambda: "before\n" in watcher.printed(first), 30, "the first cell on A")
        before = next(m for m in watcher.received() if m["header"]["msg_type"] == "stream")
        since = int(before["metadata"]["relay_seq"]) - 1
        assert since >= 1  # older than anything B keeps: B replays from the fleet's stream
        stream = f"kernel-relay:journal:{kernel_id}"
        assert "before" not in redis(redis_server, db, "XRANGE", stream, "-", "+")  # sealed
        last = int(redis(redis_server, db, "GET", f"kernel-relay:seq:{kernel_id}"))
        injected = forged_stream_message("injected by a Redis writer\n")
        stamp = f"{time.time():.3f}"
        entry = ("m", injected, "t", stamp, "i", "forged-1")
        redis_command(redis_server.port, db, "XADD", stream, f"0-{last + 1}", *entry)
        redis(redis_server, db, "SET", f"kernel-relay:seq:{kernel_id}", str(last + 1))
        second = runner.send("shell", "execute_request", {"code": "print('after', flush=True)"})
        wait(lambda: "after\n" in watcher.printed(second), 30, "the second cell on A")
        runner.close()
        b = fleet_relay(tmp_path_factory.mktemp("b"), url)
        wait(lambda: kernel_id in ids(b), 15, "B to serve A's kernel")
        resumed = IopubWatcher(b.url, kernel_id, auth={"token": TOKEN, "since": since})
        wait(
            lambda: "after\n" in resumed.printed(second),
            30,
            "the rest on B, from the fleet's stream",
        )
        assert "injected" not in printed(resumed)
        assert "before\n" in resumed.printed(first)
        told = [(gap.get("from"), gap.get("to")) for gap in resumed.gaps]
        assert (last + 1, last + 1) in told, resumed.gaps
        assert any(FORGERY in line for line in log_lines(b))
        assert a.shutdown(kernel_id).status_code == 200
    finally:
        for client in (watcher, resumed):
            if client is not None:
                client.close()
        a.stop()
        show("A", a)
        if b is not None:
            b.stop()
            show("B", b)


#: The database of the tests of a relay with one kernel place (``--max-kernels 1``).
ONE_PLACE_DB = 10


@contextmanager
def one_place_relay(
    server: RedisServer, db: int, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Relay]:
    """A fleet relay with ``--max-kernels 1`` alone on an emptied database, once it has joined."""
    redis(server, db, "FLUSHDB")
    a = fleet_relay(tmp_path_factory.mktemp("a"), server.database(db), "--max-kernels", "1")
    try:
        wait(lambda: health(a)["fleet"]["redis_up"], 15, "A to join")  # type: ignore[index]
        yield a
    finally:
        a.stop()
        show("A", a)


def test_a_forged_reservation_blocks_no_spawn(
    redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """With --max-kernels 1, a reservation HSET into ``pending`` by a Redis writer does not refuse a spawn."""
    with one_place_relay(redis_server, ONE_PLACE_DB, tmp_path_factory) as a:
        far = str(int(time.time() * 1000) + 10**9)
        redis(redis_server, ONE_PLACE_DB, "HSET", "kernel-relay:pending", "forged", far)
        kernel_id = a.spawn()
        assert any(FORGERY in line for line in log_lines(a))
        assert a.shutdown(kernel_id).status_code == 200


def test_forged_kernel_ids_block_no_spawn_and_are_not_served(
    redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """With --max-kernels 1, kernel ids SADDed into ``kernels`` by a Redis writer refuse no spawn, are not
    served, and are removed (so no relay reads them at each sync)."""
    with one_place_relay(redis_server, ONE_PLACE_DB, tmp_path_factory) as a:
        forged = ("forged-1", "forged-2 " + "0" * 32)
        redis(redis_server, ONE_PLACE_DB, "SADD", "kernel-relay:kernels", *forged)
        kernel_id = a.spawn()
        assert ids(a) == {kernel_id}
        members = redis(redis_server, ONE_PLACE_DB, "SMEMBERS", "kernel-relay:kernels").split()
        assert members[0] == kernel_id and len(members) == 2, members  # its own, tagged
        assert any(FORGERY in line for line in log_lines(a))
        assert a.shutdown(kernel_id).status_code == 200


def test_a_forged_owner_demotes_no_relay(
    redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """An ``owner`` rewritten to B by a Redis writer makes neither A step down nor B adopt, and A names
    itself again."""
    db = 11
    redis(redis_server, db, "FLUSHDB")
    url = redis_server.database(db)
    a = fleet_relay(tmp_path_factory.mktemp("a"), url)
    b = fleet_relay(tmp_path_factory.mktemp("b"), url)
    try:
        wait(lambda: health(a)["fleet"]["relays"] == 2, 15, "A and B to join")  # type: ignore[index]
        kernel_id = a.spawn()
        wait(lambda: kernel_id in ids(b), 15, "B to serve A's kernel")
        record = f"kernel-relay:kernel:{kernel_id}"
        redis(redis_server, db, "HSET", record, "owner", relay_id(b))
        time.sleep(4)  # two leases: syncs on both relays
        assert not any("took kernel" in line for line in log_lines(a))
        assert not any("adopting its kernel" in line for line in log_lines(b))
        assert owned(a) == 1 and owned(b) == 0
        assert redis(redis_server, db, "HGET", record, "owner").startswith(relay_id(a) + " ")
        assert any(FORGERY in line for line in log_lines(a))
        assert a.shutdown(kernel_id).status_code == 200
    finally:
        a.stop()
        b.stop()
        show("A", a)
        show("B", b)


def test_a_forged_mark_skips_no_output_silently(
    redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """A session's mark rewritten by a Redis writer to the kernel's latest number: the session, back on
    another relay, gets what it missed or is told that output may be missing, never silently less."""
    db = 12
    redis(redis_server, db, "FLUSHDB")
    url = redis_server.database(db)
    a = fleet_relay(tmp_path_factory.mktemp("a"), url)
    b = fleet_relay(tmp_path_factory.mktemp("b"), url)
    try:
        wait(lambda: health(a)["fleet"]["relays"] == 2, 15, "A and B to join")  # type: ignore[index]
        kernel_id = a.spawn()
        wait(lambda: kernel_id in ids(b), 15, "B to serve A's kernel")
        client = JupyterWS(a.url, kernel_id, token=TOKEN, session_id="the-session")
        read = client.execute("print('read', flush=True)")[0]
        time.sleep(2 * UNREAD_SECONDS)
        client.close()
        other = JupyterWS(a.url, kernel_id, token=TOKEN)
        missed = other.execute("print('while away', flush=True)")[0]
        other.close()
        time.sleep(1)
        pattern = f"kernel-relay:mark:{kernel_id}:*/the-session"
        [mark] = redis(redis_server, db, "--scan", "--pattern", pattern).split()
        assert read not in redis(redis_server, db, "GET", mark)  # its parent msg_id is sealed
        latest = redis(redis_server, db, "GET", f"kernel-relay:seq:{kernel_id}").strip()
        redis(redis_server, db, "SET", mark, f"{latest} ")
        back = JupyterWS(b.url, kernel_id, token=TOKEN, session_id="the-session")
        try:
            while back.recv(2) is not None:
                pass
            got = "".join(
                m["content"]["text"]
                for m in back.received
                if m["parent_header"].get("msg_id") == missed
                and m["header"]["msg_type"] == "stream"
            )
            assert got == "while away\n" or told_gap(back), "what it missed was skipped silently"
        finally:
            back.close()
        assert any(FORGERY in line for line in log_lines(b))
        assert a.shutdown(kernel_id).status_code == 200
    finally:
        a.stop()
        b.stop()
        show("A", a)
        show("B", b)


def test_a_session_back_before_the_marks_are_saved_again_after_a_redis_restart_is_told(
    tmp_path: Path,
) -> None:
    """A session reads on A and leaves; output comes; A freezes and Redis restarts empty, so nobody has saved
    the session's mark again when it comes back on B: it is told output may be missing, not taken for new."""
    require_redis()
    server = RedisServer(tmp_path / "redis")
    a = relay(tmp_path / "a", server.url, "6")
    b = relay(tmp_path / "b", server.url, "6")
    try:
        joined(a, b)
        kernel_id = a.spawn()
        wait(lambda: kernel_id in ids(b), 10, "B to serve A's kernel")
        client = JupyterWS(a.url, kernel_id, token=TOKEN, session_id="the-session")
        client.execute("print('read', flush=True)")
        time.sleep(2 * UNREAD_SECONDS)
        client.close()
        other = JupyterWS(a.url, kernel_id, token=TOKEN)
        missed = other.execute("print('while away', flush=True)")[0]
        other.close()
        time.sleep(1)  # the mark is in Redis
        lease_of_b = f"kernel-relay:relay:{relay_id(b)}"
        os.kill(a.process.pid, signal.SIGSTOP)
        try:
            server = server.restart()
            # B has renewed its lease in the new Redis: it reaches it (A, frozen, saves no mark again).
            wait(
                lambda: redis(server.port, 0, "EXISTS", lease_of_b).strip() == "1", 20, "B's lease"
            )
            back = JupyterWS(b.url, kernel_id, token=TOKEN, session_id="the-session")
            try:
                while back.recv(2) is not None:
                    pass
                got = "".join(
                    m["content"]["text"]
                    for m in back.received
                    if m["parent_header"].get("msg_id") == missed
                    and m["header"]["msg_type"] == "stream"
                )
                assert got == "while away\n" or told_gap(back), (
                    "what it missed was lost without notice"
                )
            finally:
                back.close()
        finally:
            os.kill(a.process.pid, signal.SIGCONT)
        joined(a, b)
        assert (
            requests.delete(
                f"{a.url}/api/kernels/{kernel_id}", headers=AUTH, timeout=60
            ).status_code
            == 204
        )
    finally:
        a.stop()
        b.stop()
        server.stop()
        show("A", a)
        show("B", b)

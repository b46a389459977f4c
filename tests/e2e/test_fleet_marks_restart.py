"""
A Jupyter session's position across a Redis restart, with real relays, a kernel and a real redis-server: the
relay that saves an older mark of the session again first does not resume it from there while the relay that
holds its fresher mark is yet to save it again (chaos seed 6's 19 s Jupyter repeat).
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
import requests

from kernel_relay.fronts.jupyter_connection import UNREAD_SECONDS
from tests.e2e.test_fleet import AUTH, TOKEN, ids, show
from tests.e2e.test_fleet_faults import joined, relay
from tests.e2e.test_fleet_trust import redis
from tests.e2e.test_jupyter_close_marks import told_gap
from tests.e2e.test_relay_resume import wait
from tests.jupyter_ws import JupyterWS
from tests.redis_server import RedisServer, require_redis

pytestmark = pytest.mark.timeout(180)

SESSION = "the-session"


def read_and_leave(url: str, kernel_id: str, code: str) -> str:
    """The session runs ``code`` on the relay at ``url``, reads its output, and closes: the msg_id it ran."""
    client = JupyterWS(url, kernel_id, token=TOKEN, session_id=SESSION)
    try:
        msg_id = client.execute(code)[0]
        time.sleep(2 * UNREAD_SECONDS)  # read, as far as the relay can tell
        return msg_id
    finally:
        client.close()


def marks_in(server: RedisServer) -> bool:
    return bool(redis(server.port, 0, "KEYS", "kernel-relay:mark:*").strip())


def test_a_session_back_on_a_relay_with_its_older_mark_after_redis_restarts_resumes_from_the_fresher(
    tmp_path: Path,
) -> None:
    """The session read on A, then on B; Redis restarts empty while B is frozen; A saves its older mark again
    first, and the session comes back on A: it is resumed from B's mark once B is back, not sent again what it
    read on B."""
    require_redis()
    server = RedisServer(tmp_path / "redis")
    a = relay(tmp_path / "a", server.url, "6")
    b = relay(tmp_path / "b", server.url, "6")
    try:
        joined(a, b)
        kernel_id = a.spawn()
        wait(lambda: kernel_id in ids(b), 10, "B to serve A's kernel")
        read_and_leave(a.url, kernel_id, "print('on A', flush=True)")
        read_on_b = read_and_leave(b.url, kernel_id, "print('on B', flush=True)")
        time.sleep(1)  # B's mark is in Redis
        os.kill(b.process.pid, signal.SIGSTOP)
        try:
            server = server.restart()
            # A saved the session's (older) mark again; B, frozen, has not.
            wait(lambda: marks_in(server), 20, "A's marks")
            back = JupyterWS(a.url, kernel_id, token=TOKEN, session_id=SESSION)
            try:
                time.sleep(0.5)
                os.kill(b.process.pid, signal.SIGCONT)
                while back.recv(3) is not None:
                    pass
                again = [
                    m
                    for m in back.received
                    if m["parent_header"].get("msg_id") == read_on_b
                    and m["header"]["msg_type"] == "stream"
                ]
                assert again == [], "sent again what it had read on B"
                assert not told_gap(back)
            finally:
                back.close()
        finally:
            os.kill(b.process.pid, signal.SIGCONT)
        joined(a, b)
        deleted = requests.delete(f"{a.url}/api/kernels/{kernel_id}", headers=AUTH, timeout=60)
        assert deleted.status_code == 204
    finally:
        a.stop()
        b.stop()
        server.stop()
        show("A", a)
        show("B", b)

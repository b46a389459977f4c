"""
Requests of the execute API across a fleet (#33 point 3), with two real relays on one real Redis: a request
accepted by one relay is read on the other, whole, while its relay lives and after it was SIGKILLed mid-cell;
a restart ends a running request with a clear status on every relay.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import requests

from tests.conftest import Relay
from tests.e2e.test_fleet import (
    AUTH,
    fleet_relay,
    health,
    ids,
    kernel_processes,
    no_kernel_left,
    show,
)
from tests.e2e.test_relay_resume import wait
from tests.redis_server import RedisServer, redis_server

pytestmark = pytest.mark.timeout(240)

__all__ = ["no_kernel_left", "redis_server"]

LINES = 40


def submit(base: str, kernel_id: str, code: str) -> str:
    """POST the code to the relay at ``base``; the request's path from ``Location``."""
    response = requests.post(
        f"{base}/api/kernels/{kernel_id}/execute", json={"code": code}, headers=AUTH, timeout=30
    )
    assert response.status_code == 202, response.text
    location: str = response.headers["Location"]
    return location


def read(base: str, location: str, wait_for: float = 0) -> tuple[int, dict[str, Any]]:
    """One GET of a request (long-polling ``wait_for`` seconds); its status code and body."""
    response = requests.get(
        f"{base}{location}", params={"wait": wait_for}, headers=AUTH, timeout=wait_for + 30
    )
    return response.status_code, response.json()


def read_until_done(base: str, location: str, timeout: float = 90) -> tuple[int, dict[str, Any]]:
    """Long-poll the request until it is no longer pending."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, body = read(base, location, 10)
        if status != 202:
            return status, body
    raise AssertionError(f"{location} still pending after {timeout} s")


def printed(body: dict[str, Any]) -> str:
    """The text of the request's stdout, and that it came as one output."""
    outputs = json.loads(body["outputs"])
    assert [o["output_type"] for o in outputs] == ["stream"], outputs
    text: str = outputs[0]["text"]
    return text


def so_far(base: str, location: str) -> str:
    """What the request printed so far, read at ``base``."""
    outputs = json.loads(read(base, location)[1].get("outputs") or "[]")
    return "".join(o.get("text", "") for o in outputs)


def counting(lines: int, pause: float) -> str:
    return (
        f"import time\nfor i in range({lines}):\n    print(i, flush=True)\n    time.sleep({pause})"
    )


@contextmanager
def two_relays(
    url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Relay, Relay, str]]:
    """Relays A and B of the fleet at ``url``, and a kernel started on A that B serves; both stopped after."""
    a = fleet_relay(tmp_path_factory.mktemp("a"), url)
    b = fleet_relay(tmp_path_factory.mktemp("b"), url)
    try:
        kernel_id = a.spawn()
        wait(lambda: kernel_id in ids(b), 10, "B to list A's kernel")
        yield a, b, kernel_id
    finally:
        a.stop()
        b.stop()
        show("A", a)
        show("B", b)


def stop_kernel(relay: Relay, kernel_id: str) -> None:
    stopped = requests.delete(f"{relay.url}/api/kernels/{kernel_id}", headers=AUTH, timeout=60)
    assert stopped.status_code == 204, stopped.text
    wait(lambda: not kernel_processes(kernel_id), 15, "the kernel process to exit")


def test_a_request_survives_the_relay_that_accepted_it_sigkilled_mid_cell(
    redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """A cell sent over REST to A prints numbered lines; A is SIGKILLed mid-cell; read on B with ?wait=, the
    request ends ok with its execution_count and every line once, in order."""
    with two_relays(redis_server.database(5), tmp_path_factory) as (a, b, kernel_id):
        [process] = kernel_processes(kernel_id)
        location = submit(a.url, kernel_id, counting(LINES, 0.1))
        wait(lambda: "5\n" in so_far(a.url, location), 30, "A to print")
        os.kill(a.process.pid, signal.SIGKILL)
        a.process.wait()
        assert process.is_running(), "the kernel died with its relay"

        status, body = read_until_done(b.url, location)
        assert status == 200, body
        assert body["status"] == "ok" and body["pending"] is False
        assert isinstance(body["execution_count"], int) and body["execution_count"] >= 1
        assert printed(body) == "".join(f"{i}\n" for i in range(LINES))
        assert body["outputs_dropped"] == 0
        wait(lambda: health(b)["fleet"]["owned_kernels"] == 1, 15, "B to adopt the kernel")  # type: ignore[index]
        stop_kernel(b, kernel_id)


def test_a_request_is_read_on_another_relay_and_a_restart_ends_it_there_too(
    redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """While A lives, B answers for A's requests as A does (long-poll, the list, input() answered on B); a
    restart asked on B ends A's running request with 500 "kernel restarting" on both relays."""
    with two_relays(redis_server.database(6), tmp_path_factory) as (a, b, kernel_id):
        location = submit(a.url, kernel_id, counting(5, 0.3) + "\n6 * 7")
        status, on_b = read_until_done(b.url, location)
        assert status == 200, on_b
        status, on_a = read(a.url, location)
        assert status == 200, on_a
        assert on_b["status"] == on_a["status"] == "ok"
        assert on_b["execution_count"] == on_a["execution_count"]
        assert json.loads(on_b["outputs"]) == json.loads(on_a["outputs"])
        assert json.loads(on_b["outputs"])[-1]["data"] == {"text/plain": "42"}
        listed = requests.get(f"{b.url}/api/kernels/{kernel_id}/requests", headers=AUTH, timeout=10)
        assert [r["request_id"] for r in listed.json()["requests"]][-1:] == [
            location.split("/")[-1]
        ]
        missing = requests.get(
            f"{b.url}/api/kernels/{kernel_id}/requests/nope", headers=AUTH, timeout=10
        )
        assert missing.status_code == 404

        asking = submit(a.url, kernel_id, "print('hi ' + input('who? '))")
        status, body = read(b.url, asking, 30)
        assert status == 300 and body["input_request"]["prompt"] == "who? ", body
        answered = requests.post(
            f"{b.url}{body['request_url'].rsplit('/requests/', 1)[0]}/input",
            json={"input": "ada"},
            headers=AUTH,
            timeout=10,
        )
        assert answered.status_code == 201, answered.text
        wait(lambda: read(b.url, asking, 5)[0] == 200, 30, "the answered request to end on B")
        status, body = read(a.url, asking)
        assert status == 200 and printed(body) == "hi ada\n", body

        sleeping = submit(a.url, kernel_id, "import time; time.sleep(60)")
        try:
            wait(lambda: read(b.url, sleeping)[1].get("request_status") == "running", 30, "it runs")
        except AssertionError:
            print("DEBUG A", read(a.url, sleeping), "B", read(b.url, sleeping))
            raise
        restarted = requests.post(
            f"{b.url}/api/kernels/{kernel_id}/restart", headers=AUTH, timeout=90
        )
        assert restarted.status_code == 200, restarted.text
        for relay in (b, a):
            status, body = read_until_done(relay.url, sleeping, 30)
            assert status == 500 and body["error"] == "kernel restarting", [relay.url, body]
            assert body["pending"] is False
        stop_kernel(a, kernel_id)


def test_delete_on_another_relay_interrupts_a_running_request_and_refuses_a_queued_one(
    redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """DELETE on B of A's requests: a queued one is 409 (only A sees it start); a running one is interrupted
    through the fleet (204) and ends with KeyboardInterrupt on both relays."""
    with two_relays(redis_server.database(7), tmp_path_factory) as (a, b, kernel_id):
        sleeping = submit(
            a.url, kernel_id, "print('asleep', flush=True)\nimport time; time.sleep(60)"
        )
        queued = submit(a.url, kernel_id, "print('after')")
        # Once it printed, its code runs: an interrupt before that may be swallowed by ipykernel.
        wait(lambda: "asleep" in so_far(b.url, sleeping), 30, "B to see the cell run")
        refused = requests.delete(f"{b.url}{queued}", headers=AUTH, timeout=30)
        assert refused.status_code == 409 and "queued" in refused.json()["message"], refused.text
        stopped = requests.delete(f"{b.url}{sleeping}", headers=AUTH, timeout=30)
        assert stopped.status_code == 204, stopped.text
        for relay in (b, a):
            status, body = read_until_done(relay.url, sleeping, 30)
            assert status == 200 and body["status"] == "error", [relay.url, body]
            assert "KeyboardInterrupt" in body["outputs"]
        assert read_until_done(a.url, queued, 30)[1]["pending"] is False
        stop_kernel(a, kernel_id)


def test_a_restart_on_the_kernels_relay_ends_a_request_another_relay_accepted(
    redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """B accepted a cell for A's kernel; A restarts the kernel (no idle comes for it): B's GET and list end it."""
    with two_relays(redis_server.database(8), tmp_path_factory) as (a, b, kernel_id):
        # A cell that ignores interrupts: the restart kills its process, no error and no idle come for it.
        deaf = "import signal, time\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\n"
        sleeping = submit(b.url, kernel_id, deaf + "print('asleep', flush=True)\ntime.sleep(60)")
        wait(lambda: "asleep" in so_far(b.url, sleeping), 30, "the cell to run")
        restarted = requests.post(
            f"{a.url}/api/kernels/{kernel_id}/restart", headers=AUTH, timeout=90
        )
        assert restarted.status_code == 200, restarted.text
        status, body = read_until_done(b.url, sleeping, 30)
        assert status == 500 and body["error"] == "kernel restarting", json.dumps(body)[:2000]
        live = requests.get(f"{b.url}/api/kernels/{kernel_id}/execute", headers=AUTH, timeout=10)
        assert live.status_code == 200 and live.json()["requests"] == [], live.text
        stop_kernel(a, kernel_id)

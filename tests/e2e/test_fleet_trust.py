"""
Only relays that hold the fleet's secret are the fleet: what else writes to its Redis (a relay with another
secret, a forged message or record) is refused or ignored, and what Redis holds gives away no kernel key.
Real relays, real kernels, a real redis-server (Debian's, on loopback).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import requests
import websocket

from kernel_relay.kernels.adoption import start_time, this_host
from tests.conftest import TWIST, Relay
from tests.e2e.test_fleet import (
    AUTH,
    TOKEN,
    fleet_relay,
    health,
    ids,
    kernel_processes,
    log_lines,
    no_kernel_left,
    show,
)
from tests.e2e.test_relay_resume import wait
from tests.jupyter_ws import JupyterWS
from tests.redis_server import REDIS_SERVER, RedisServer, redis_server
from tests.support import ServerProcess, free_port

pytestmark = pytest.mark.timeout(180)

__all__ = ["no_kernel_left", "redis_server"]

FORGERY = "Ignored what Redis holds without the fleet's secret"


def redis(server: RedisServer | int, db: int, *command: str) -> str:
    """One command through redis-cli, its reply as text."""
    port = server if isinstance(server, int) else server.port
    done = subprocess.run(
        ["redis-cli", "-p", str(port), "-n", str(db), *command],
        capture_output=True,
        text=True,
        errors="replace",
        timeout=10,
        check=True,
    )
    return done.stdout


def dump(server: RedisServer, db: int) -> str:
    """Every key of a database and every value it holds, as text."""
    reads = {
        "string": ("GET",),
        "hash": ("HGETALL",),
        "list": ("LRANGE", "0", "-1"),
        "set": ("SMEMBERS",),
        "zset": ("ZRANGE", "0", "-1", "WITHSCORES"),
        "stream": ("XRANGE", "-", "+"),
    }
    out = []
    for key in redis(server, db, "--scan").split():
        kind = redis(server, db, "TYPE", key).strip()
        read = reads.get(kind, ("TYPE",))
        out.append(f"{key}: {redis(server, db, read[0], key, *read[1:])}")
    return "\n".join(out)


def relay_id(relay: Relay) -> str:
    return str(health(relay)["fleet"]["relay"])  # type: ignore[index]


def test_a_relay_with_another_secret_or_none_is_refused(
    redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """A relay started with another token (on the fleet's Redis) exits at start, saying why; one with no
    secret at all does not start."""
    url = redis_server.database(5)
    redis(redis_server, 5, "FLUSHDB")
    a = fleet_relay(tmp_path_factory.mktemp("a"), url)
    try:
        wait(lambda: health(a)["fleet"]["redis_up"], 15, "A to join")  # type: ignore[index]
        for token in ("another-token-0123456789abcdef", None):
            args = [*TWIST, "--port", str(free_port()), "--redis", url]
            if token:
                args += ["--token", token]
            runtime = tmp_path_factory.mktemp("other")
            rogue = subprocess.Popen(
                args,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                env={**os.environ, "JUPYTER_RUNTIME_DIR": str(runtime), "KERNEL_RELAY_TOKEN": ""},
            )
            try:
                output, _ = rogue.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                rogue.kill()
                output, _ = rogue.communicate()
                raise AssertionError(
                    f"a relay with secret {token!r} kept running: {output.decode()[-2000:]}"
                ) from None
            text = output.decode(errors="replace")
            assert rogue.returncode != 0, text
            if token:
                assert "Refusing to join the fleet" in text, text
            else:
                assert "needs a secret" in text, text
        # The fleet's own relay is untouched.
        assert health(a)["fleet"]["relays"] == 1  # type: ignore[index]
    finally:
        a.stop()


def test_forged_mailbox_messages_are_ignored(
    redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """A token and a shutdown written straight into a relay's mailbox admit no token and stop no kernel."""
    db = 6
    redis(redis_server, db, "FLUSHDB")
    a = fleet_relay(tmp_path_factory.mktemp("a"), redis_server.database(db))
    try:
        wait(lambda: health(a)["fleet"]["redis_up"], 15, "A to join")  # type: ignore[index]
        kernel_id = a.spawn()
        box = f"kernel-relay:mailbox:{relay_id(a)}"
        forged_token = "forged-token-of-the-attacker-000"
        digest = hashlib.sha256(forged_token.encode()).hexdigest()
        token = {"type": "token", "id": kernel_id, "digest": digest, "access": "full"}
        redis(redis_server, db, "RPUSH", box, json.dumps(token))
        time.sleep(2)
        with pytest.raises(websocket.WebSocketBadStatusException):
            JupyterWS(a.url, kernel_id, token=forged_token).close()
        command = {"type": "command", "op": "shutdown", "id": kernel_id, "request": "r1"}
        redis(redis_server, db, "RPUSH", box, json.dumps({**command, "from": "evil"}))
        time.sleep(3)
        assert kernel_id in ids(a)
        assert kernel_processes(kernel_id)
        assert any(FORGERY in line for line in log_lines(a))
        assert a.shutdown(kernel_id).status_code == 200
    finally:
        a.stop()
        show("A", a)


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    """A process that is no kernel (a ``sleep``), in a process group of its own."""
    process = subprocess.Popen(["sleep", "300"], start_new_session=True)
    try:
        yield process
    finally:
        process.kill()
        process.wait()


def test_a_forged_or_moved_record_is_ignored(
    redis_server: RedisServer,
    tmp_path_factory: pytest.TempPathFactory,
    sleeper: subprocess.Popen[bytes],
) -> None:
    """A record naming a ``sleep`` process as an orphaned kernel, and a real record copied to another id,
    are not served nor adopted: the ``sleep`` survives the relay's stop."""
    db = 7
    redis(redis_server, db, "FLUSHDB")
    a = fleet_relay(tmp_path_factory.mktemp("a"), redis_server.database(db))
    try:
        wait(lambda: health(a)["fleet"]["redis_up"], 15, "A to join")  # type: ignore[index]
        kernel_id = a.spawn()
        ports = {
            f"{name}_port": free_port() for name in ("shell", "iopub", "stdin", "control", "hb")
        }
        forged = str(uuid.uuid4())
        connection = {
            **ports,
            "ip": "127.0.0.1",
            "transport": "tcp",
            "key": "forged",
            "signature_scheme": "hmac-sha256",
        }
        provisioner = {"kernel_id": forged, "connection_info": connection, "ip": "127.0.0.1"}
        about = {
            "connection": connection,
            "provisioner": {**provisioner, "pid": sleeper.pid, "pgid": sleeper.pid},
            "host": this_host(),
            "started": start_time(sleeper.pid),
        }
        record = [
            "spec",
            "python3",
            "owner",
            "gone-relay",
            "created",
            "x",
            "about",
            json.dumps(about),
        ]
        redis(redis_server, db, "HSET", f"kernel-relay:kernel:{forged}", *record)
        moved = str(uuid.uuid4())
        real = redis(redis_server, db, "HGETALL", f"kernel-relay:kernel:{kernel_id}").splitlines()
        redis(redis_server, db, "HSET", f"kernel-relay:kernel:{moved}", *real)
        redis(redis_server, db, "SADD", "kernel-relay:kernels", forged, moved)
        time.sleep(4)  # more than two leases: time to learn and to adopt
        served, adopted = ids(a), health(a)["fleet"]["adopted"]  # type: ignore[index]
        assert a.shutdown(kernel_id).status_code == 200
    finally:
        a.stop()
        show("A", a)
    # The relay stopped last: it shuts down every kernel it manages, so an adopted sleep would be killed.
    assert sleeper.poll() is None, "the relay killed a process that is no kernel"
    assert served == {kernel_id}
    assert adopted == 0
    assert any(FORGERY in line for line in log_lines(a))


def test_redis_holds_no_kernel_key_env_value_nor_token(
    redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Every key and value in Redis, with a kernel running (with env) and a kernel token shared between
    two relays, holds none of the kernel's keys, the env value, the tokens nor their digests."""
    db = 8
    redis(redis_server, db, "FLUSHDB")
    url = redis_server.database(db)
    a = fleet_relay(tmp_path_factory.mktemp("a"), url, "--kernel-encryption", "auto")
    b = fleet_relay(tmp_path_factory.mktemp("b"), url, "--kernel-encryption", "auto")
    try:
        wait(lambda: health(a)["fleet"]["relays"] == 2, 15, "A and B to join")  # type: ignore[index]
        started = requests.post(
            f"{a.url}/api/kernels",
            json={"name": "python3", "env": {"KERNEL_TRUST_MARK": "env-value-3f9a1c"}},
            headers=AUTH,
            timeout=90,
        )
        assert started.status_code == 201, started.text
        kernel_id = started.json()["id"]
        issued = requests.post(
            f"{a.url}/api/kernels/{kernel_id}/tokens",
            json={"access": "read-only"},
            headers=AUTH,
            timeout=10,
        )
        assert issued.status_code in (200, 201), issued.text
        kernel_token = issued.json()["token"]
        wait(lambda: kernel_id in ids(b), 10, "B to serve A's kernel")
        [connection_file] = a.connection_files()
        info = json.loads(connection_file.read_text())
        secrets = {
            name: value
            for name, value in info.items()
            if isinstance(value, str) and value and ("key" in name or "secret" in name)
        }
        secrets |= {
            "env value": "env-value-3f9a1c",
            "admin token": TOKEN,
            "kernel token": kernel_token,
            "kernel token digest": hashlib.sha256(kernel_token.encode()).hexdigest(),
        }
        assert "key" in secrets
        time.sleep(1)
        everything = dump(redis_server, db)
        assert kernel_id in everything  # the dump is of the fleet's keys
        found = [name for name, value in secrets.items() if value in everything]
        assert not found, f"Redis holds in clear: {found}"
        # Yet the fleet works: B serves the kernel with the token made on A.
        wait(lambda: _opens(b, kernel_id, kernel_token), 10, "B to honour A's kernel token")
        assert a.shutdown(kernel_id).status_code == 200
    finally:
        a.stop()
        b.stop()
        show("A", a)
        show("B", b)


def _opens(relay: Relay, kernel_id: str, token: str) -> bool:
    try:
        JupyterWS(relay.url, kernel_id, token=token).close()
    except websocket.WebSocketBadStatusException:
        return False
    return True


class PasswordRedis(ServerProcess):
    """A redis-server that requires a password."""

    def __init__(self, directory: Path, password: str) -> None:
        port = free_port()
        directory.mkdir(parents=True, exist_ok=True)
        argv = [REDIS_SERVER, "--bind", "127.0.0.1", "--port", str(port), "--save", ""]
        argv += ["--appendonly", "no", "--dir", str(directory), "--requirepass", password]
        super().__init__(argv, port)


def test_the_redis_password_from_a_file_or_the_environment(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """A Redis that requires a password is joined with it from --redis-password-file or from
    $KERNEL_RELAY_REDIS_PASSWORD, and the password is not on the relay's command line."""
    password = "redis-password-7d2e9b"
    base = tmp_path_factory.mktemp("password")
    server = PasswordRedis(base / "redis", password)
    try:
        url = f"redis://127.0.0.1:{server.port}/0"
        secret_file = base / "redis-password"
        secret_file.write_text(password + "\n")
        secret_file.chmod(0o600)
        for args, env in (
            (("--redis-password-file", str(secret_file)), None),
            ((), {"KERNEL_RELAY_REDIS_PASSWORD": password}),
        ):
            relay = fleet_relay(base / uuid.uuid4().hex, url, *args, env=env)
            try:
                wait(lambda r=relay: health(r)["fleet"]["redis_up"], 15, "the relay to join")  # type: ignore[index,misc]
                assert password not in " ".join(psutil.Process(relay.process.pid).cmdline())
                kernel_id = relay.spawn()
                assert relay.shutdown(kernel_id).status_code == 200
            finally:
                relay.stop()
                show("relay", relay)
    finally:
        server.stop()

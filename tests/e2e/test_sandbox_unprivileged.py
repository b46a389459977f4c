"""
The sandbox of a relay that is not root (``nobody``, through ``setpriv``): each kernel is in a user namespace
of its own, with the relay's uid outside, and the probes of ``test_sandbox`` fail from inside it as they do
under a root relay. The relay's Python lives in root's home here (and under tox in a ``.tox`` that only root
may enter), so the relay runs in a mount namespace where each such directory is an empty tmpfs that shows only
the installation on the way through it (as Python would be installed elsewhere on a real machine).
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.conftest import Relay
from tests.e2e.test_sandbox import (
    CLIENT,
    CONNECT,
    FIND_KEY,
    FORK,
    LIMITS,
    READ_PROC,
    TOKEN,
    Pair,
    probe,
    run,
    still_working,
)

NOBODY = 65534
AS_NOBODY = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "--"]


def _user_namespaces() -> str | None:
    """Why nobody cannot make a user namespace with bwrap here (None: it can)."""
    if os.geteuid() != 0 or not shutil.which("bwrap"):
        return "needs root (to become nobody) and bubblewrap"
    argv = [*AS_NOBODY, "bwrap", "--unshare-user", "--ro-bind", "/", "/", "true"]
    done = subprocess.run(argv, capture_output=True, timeout=30, check=False)
    return None if done.returncode == 0 else done.stderr.decode(errors="replace")


pytestmark = [
    pytest.mark.timeout(240),
    pytest.mark.skipif(_user_namespaces() is not None, reason="no unprivileged user namespaces"),
]


def _closed_on_the_way(paths: list[str]) -> dict[str, set[str]]:
    """Each directory on the way to ``paths`` that others may not enter, with its children on the way."""
    closed: dict[str, set[str]] = {}
    for path in paths:
        parts = Path(path).parts
        for depth in range(1, len(parts) - 1):
            directory = os.path.join(*parts[: depth + 1])
            if not os.stat(directory).st_mode & 0o001:
                closed.setdefault(directory, set()).add(os.path.join(directory, parts[depth + 1]))
    return closed


def show_python(home: Path) -> str:
    """A shell script that covers each closed directory on the way to this Python with a tmpfs (mode 0755)
    showing only what is on the way, outermost first, then runs its arguments."""
    paths = {sys.prefix, sys.base_prefix, os.path.dirname(os.path.realpath(sys.executable))}
    steps = []
    for directory, children in sorted(
        _closed_on_the_way(sorted(paths)).items(), key=lambda item: len(item[0])
    ):
        kept = [(child, str(home / f"kept{index}")) for index, child in enumerate(sorted(children))]
        steps += [
            f"mkdir -p {shlex.quote(aside)} && mount --bind {shlex.quote(child)} {shlex.quote(aside)}"
            for child, aside in kept
        ]
        steps.append(f"mount -t tmpfs -o mode=0755 tmpfs {shlex.quote(directory)}")
        steps += [
            f"mkdir -p {shlex.quote(child)} && mount --move {shlex.quote(aside)} {shlex.quote(child)}"
            for child, aside in kept
        ]
    return " && ".join([*steps, 'exec "$@"'])


@pytest.fixture(scope="module")
def nobody_relay() -> Iterator[Relay]:
    home = Path(tempfile.mkdtemp(prefix="kr-nobody-"))
    runtime = home / "runtime"
    runtime.mkdir()
    for path in (home, runtime):
        os.chown(path, NOBODY, NOBODY)
    wrapper = [
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        show_python(home),
        "sh",
        *AS_NOBODY,
    ]
    env = {"HOME": str(home), "XDG_RUNTIME_DIR": str(home), "KERNEL_RELAY_TOKEN": TOKEN}
    # Where the interpreter or the project is out of nobody's reach (tox's fresh clone in CI), no relay
    # can run as nobody at all: say so rather than fail every test at set-up.
    probe = subprocess.run(
        [*wrapper, sys.executable, "-c", "import kernel_relay.tap"],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=60,
    )
    if probe.returncode != 0:
        pytest.skip(f"this interpreter cannot import the project as nobody: {probe.stderr[-300:]}")
    try:
        relay = Relay(runtime, "--kernel-limits", LIMITS, token=TOKEN, env=env, wrapper=wrapper)
        try:
            yield relay
        finally:
            relay.stop()
    finally:
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def pair(nobody_relay: Relay) -> Iterator[Pair]:
    kernels = Pair(nobody_relay)
    try:
        yield kernels
    finally:
        kernels.stop()


USER = """
import json, os
print(json.dumps([os.getuid(), open("/proc/self/uid_map").read().split(), os.getcwd()]))
"""


def test_kernels_of_a_relay_run_as_nobody_are_sandboxed_in_user_namespaces(pair: Pair) -> None:
    """Sandboxed: nobody's uid in a user namespace that maps it alone, in /home/kernel, B still works."""
    relay = pair.relay
    assert os.stat(f"/proc/{relay.process.pid}").st_uid == NOBODY
    assert pair.a["sandboxed"] is True
    uid, uid_map, cwd = probe(relay, pair.a["id"], USER)
    # One uid mapped (the initial namespace maps 4294967295); bwrap nests a namespace to set up /dev.
    assert (uid, uid_map[0], uid_map[2], cwd) == (NOBODY, str(NOBODY), "1", "/home/kernel")
    still_working(pair)


def test_the_probes_fail_inside_a_user_namespace(pair: Pair) -> None:
    """From A: no key of B anywhere, no relay process or token, no code in B, no loopback TCP."""
    relay = pair.relay
    info = pair.connection_info(pair.b)
    roots = [(str(relay.runtime_dir.parent), 8), ("/home", 4), ("/run", 4), ("/tmp", 3)]
    assert probe(relay, pair.a["id"], FIND_KEY.format(key=info["key"][::-1], roots=roots)) == []
    seen = probe(relay, pair.a["id"], READ_PROC.format(token=TOKEN, relay=relay.process.pid))
    assert seen == {"token": [], "relay": False, "env": False}
    info.pop("sandboxed", None)
    assert probe(relay, pair.a["id"], CLIENT.format(info=info)) == "TimeoutError"
    results = probe(relay, pair.a["id"], CONNECT.format(ports=[relay.port]))
    assert set(results.values()) == {"ConnectionRefusedError"}, results
    still_working(pair)


def test_the_process_limit_holds_and_files_survive_a_restart(pair: Pair) -> None:
    """150 processes against 96 are refused; a file survives a restart; the log says the home is unbounded."""
    relay = pair.relay
    outcome = probe(relay, pair.a["id"], FORK)
    assert outcome["error"] == "BlockingIOError" and outcome["started"] < 96, outcome
    out, reply = run(relay, pair.a["id"], "open('kept', 'w').write('yes'); print('ok')")
    assert (reply["status"], out) == ("ok", "ok\n")
    restarted = requests.post(
        f"{relay.url}/api/kernels/{pair.a['id']}/restart", headers=relay.headers, timeout=90
    )
    assert restarted.status_code == 200, restarted.text
    out, reply = run(relay, pair.a["id"], "print(open('kept').read())")
    assert (reply["status"], out) == ("ok", "yes\n")
    assert "working directories are not bounded in size" in relay.output()
    still_working(pair)

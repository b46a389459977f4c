"""
A sandboxed kernel's working directory is bounded in size (``home_size`` of ``--kernel-limits``, a tmpfs of its
own mounted by the relay as root): a kernel that fills it gets ENOSPC and fails alone, its files survive a
restart, and the mount goes with the kernel, even one whose relay was killed.
"""

from __future__ import annotations

import errno
import os
import shutil
import signal
import time
from pathlib import Path

import pytest
import requests

from tests.conftest import Relay, relay_fixture
from tests.e2e.test_sandbox import TOKEN, probe, run, start

pytestmark = [
    pytest.mark.timeout(240),
    pytest.mark.skipif(not shutil.which("bwrap"), reason="bubblewrap (bwrap) is not installed"),
    pytest.mark.skipif(os.geteuid() != 0, reason="only a root relay mounts working directories"),
]

defaults = relay_fixture(token=TOKEN)
small = relay_fixture("--kernel-limits", "home_size=64M", token=TOKEN)

#: Writes ``total`` MiB in files of 100 MiB into ``here`` (each MiB at once), then removes them; prints
#: [MiB written, errno of the failure or null].
FILL = """
import json, os
here, total, written, failure = {here!r}, {total}, 0, None
try:
    for number in range(total // 100):
        with open(os.path.join(here, f"fill-{{number}}"), "wb") as file:
            for _ in range(100):
                file.write(bytes(1 << 20))
                file.flush()
                written += 1
except OSError as error:
    failure = error.errno
for name in os.listdir(here):
    if name.startswith("fill-"):
        os.remove(os.path.join(here, name))
print(json.dumps([written, failure]))
"""


def mounted(path: Path) -> bool:
    """Whether ``path`` is a mount point in this (the relays') mount namespace."""
    return any(
        line.split()[4] == str(path)
        for line in Path("/proc/self/mountinfo").read_text().splitlines()
    )


def home_of(kernel_id: str) -> Path:
    return Path("/run/kernel-relay") / kernel_id.split("-", 1)[0] / "home"


def delete(relay: Relay, kernel_id: str) -> None:
    requests.delete(f"{relay.url}/api/kernels/{kernel_id}", headers=relay.headers, timeout=60)


def test_a_kernel_filling_its_working_directory_gets_enospc_alone(defaults: Relay) -> None:
    """2 GiB in 100 MiB files fills the default 1 GiB bound with ENOSPC; the kernel, B and the relay carry on."""
    a, b = start(defaults)["id"], start(defaults)["id"]
    try:
        written, failure = probe(defaults, a, FILL.format(here=".", total=2048))
        assert failure == errno.ENOSPC
        assert 900 <= written <= 1024
        for kernel_id in (a, b):
            out, reply = run(defaults, kernel_id, "open('after', 'w').write('x'); print(6 * 7)")
            assert (reply["status"], out) == ("ok", "42\n")
        assert {a, b} <= {k["id"] for k in defaults.kernels()}
    finally:
        delete(defaults, a)
        delete(defaults, b)


def test_the_bound_is_an_option_kept_across_a_restart_and_unmounted_at_the_end(
    small: Relay,
) -> None:
    """With home_size=64M: 40 MiB kept over a restart, 40 more refused, and no mount left after the kernel."""
    kernel_id = start(small)["id"]
    home = home_of(kernel_id)
    try:
        assert mounted(home)
        assert probe(small, kernel_id, "open('kept', 'wb').write(bytes(40 << 20)); print(1)") == 1
        restarted = requests.post(
            f"{small.url}/api/kernels/{kernel_id}/restart", headers=small.headers, timeout=90
        )
        assert restarted.status_code == 200, restarted.text
        assert probe(small, kernel_id, "import os; print(os.path.getsize('kept'))") == 40 << 20
        written, failure = probe(small, kernel_id, FILL.format(here=".", total=100))
        assert (failure, written < 40) == (errno.ENOSPC, True)
    finally:
        delete(small, kernel_id)
    assert not mounted(home)
    assert not home.parent.exists()


def test_the_mount_of_a_killed_relays_kernel_is_removed_by_the_next_relay(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """A SIGKILLed relay's kernel dies with it; the next relay to start unmounts and removes its box."""
    first = Relay(tmp_path_factory.mktemp("first"), token=TOKEN)
    try:
        kernel_id = start(first)["id"]
        home = home_of(kernel_id)
        assert mounted(home)
        os.kill(first.process.pid, signal.SIGKILL)
        first.process.wait()
        deadline = time.monotonic() + 30
        while (home.parent / "pid").exists() and time.monotonic() < deadline:
            pid = int((home.parent / "pid").read_text().strip("[]").split(",")[0])
            if not Path(f"/proc/{pid}").exists():
                break
            time.sleep(0.2)
    finally:
        first.stop()
    second = Relay(tmp_path_factory.mktemp("second"), token=TOKEN)
    try:
        assert not mounted(home)
        assert not home.parent.exists()
    finally:
        second.stop()

"""A kernel's process group ended whole: real processes, in their own session, signalled and watched."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Iterator

import pytest

from kernel_relay.kernels._process_group import end_group, live_members, own_group

# A leader that starts a child in its group, then waits: both ignore SIGTERM.
_FAMILY = (
    "import signal, subprocess, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    "subprocess.Popen([sys.executable, '-c', 'import signal, time; "
    "signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)']); print('ready', flush=True); "
    "time.sleep(60)"
)


@pytest.fixture
def family() -> Iterator[subprocess.Popen[bytes]]:
    leader = subprocess.Popen(
        [sys.executable, "-c", _FAMILY], start_new_session=True, stdout=subprocess.PIPE
    )
    assert leader.stdout is not None and leader.stdout.readline() == b"ready\n"
    try:
        yield leader
    finally:
        try:
            os.killpg(leader.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        leader.wait()


def test_live_members_are_the_group_s_running_processes(family: subprocess.Popen[bytes]) -> None:
    members = live_members(family.pid)
    assert family.pid in members and len(members) == 2
    assert os.getpid() not in members


def test_a_group_that_ignores_sigterm_and_is_frozen_is_ended(
    family: subprocess.Popen[bytes],
) -> None:
    os.killpg(family.pid, signal.SIGSTOP)
    assert asyncio.run(end_group(family.pid, grace=10)) is True
    family.wait(
        timeout=10
    )  # our child: reaped here; its own child went with it (a zombie, not live)
    assert live_members(family.pid) == []


def test_an_empty_group_is_gone_at_once() -> None:
    assert asyncio.run(end_group(2**22 + 7, grace=0)) is True  # past any pid_max: no such group


@pytest.mark.parametrize("pgid", [None, 0, 1, -5, True, "12"])
def test_nonsense_groups_are_never_signalled(pgid: object) -> None:
    assert own_group(pgid, pgid if isinstance(pgid, int) else None, True) is None


def test_the_relay_s_own_group_is_never_signalled() -> None:
    assert own_group(os.getpgrp(), os.getpgrp(), True) is None


def test_only_a_group_its_running_leader_made_is_signalled(family: subprocess.Popen[bytes]) -> None:
    """A group whose leader was reaped may be empty, its number reused; one led by another pid is not ours."""
    assert own_group(family.pid, family.pid, True) == family.pid
    assert own_group(family.pid, family.pid, False) is None
    assert own_group(family.pid, family.pid + 1, True) is None

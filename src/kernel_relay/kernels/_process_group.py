# -*- test-case-name: tests.kernels.test_process_group -*-
"""
A local kernel's process group, ended whole when the kernel stops.

jupyter_client judges a kernel gone when the process it started is: for a sandboxed kernel that is bwrap's
outer process, which SIGTERM ends at once. The kernel inside can outlive it: frozen (SIGSTOP), or, for a
fleet's kernel, which runs without ``--die-with-parent`` so that it outlives its relay, until the machine
stops. So once jupyter_client is done, whatever is left of the group (bwrap's init, the kernel, what the
kernel started in its group) is sent SIGKILL; killing the sandbox's init ends every process of its PID
namespace, even one that left the group.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from typing import Final

from twisted.logger import Logger

_log = Logger()

#: Seconds a group sent SIGKILL has to be gone before the stop is reported failed.
GROUP_GRACE: Final = 5.0
_POLL: Final = 0.05


def stat_fields(pid: int | str) -> list[str] | None:
    """
    The fields of ``/proc/<pid>/stat`` after the command (state, ppid, pgrp, ...), None when there is no such
    process, or it has exited (a zombie: only its parent has not reaped it).
    """
    try:
        with open(f"/proc/{pid}/stat") as stat_file:
            stat = stat_file.read()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2 :].split()
    return None if not fields or fields[0] in ("Z", "X") else fields


def live_members(pgid: int) -> list[int]:
    """The processes of group ``pgid`` that have not exited, from /proc."""
    wanted = str(pgid)
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            fields = stat_fields(entry.name)
            if fields is not None and len(fields) > 2 and fields[2] == wanted:
                found.append(int(entry.name))
    return found


def own_group(pgid: object, leader: int | None, leader_runs: bool) -> int | None:
    """
    ``pgid`` if it is a kernel's group the relay may end: the group its launch made (led by the process it
    started, ``leader``, which still ``runs``: a group whose leader is gone may be empty and its number
    reused), and never the relay's own, init's or nonsense.
    """
    if not isinstance(pgid, int) or isinstance(pgid, bool) or pgid <= 1:
        return None
    if pgid != leader or not leader_runs:
        return None
    return None if pgid == os.getpgrp() else pgid


async def end_group(pgid: int, grace: float = GROUP_GRACE) -> bool:
    """SIGKILL what is left of group ``pgid`` until none of it runs (for up to ``grace``): True once gone."""
    deadline = time.monotonic() + grace
    while members := live_members(pgid):
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            return True
        except PermissionError:
            _log.warn(
                "cannot signal what is left of a kernel's process group {pgid}: {members}",
                pgid=pgid,
                members=members,
            )
            return False
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(_POLL)
    return True


__all__ = ["GROUP_GRACE", "end_group", "live_members", "own_group", "stat_fields"]

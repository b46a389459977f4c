"""
Where the relay keeps its kernels' connection files (which hold their keys), and the clean-up of the files a
relay killed without a chance to stop left behind.

Each relay process writes into its own directory, ``$JUPYTER_RUNTIME_DIR/kernel-relay-<pid>/`` (mode 0700),
which nothing else looks into. A relay killed with SIGKILL cannot remove its files, though its kernels exit
within seconds (ipykernel exits with its parent); the next relay to start removes every such directory whose
process is gone. It touches nothing else: not other programs' files, not the directory of a relay that runs.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Final

from jupyter_core.paths import jupyter_runtime_dir
from twisted.logger import Logger

from ._boxes import box_alive, boxes_dir, remove_box
from ._errors import KernelLaunchError

_log = Logger()

_OWN_DIR: Final = re.compile(r"kernel-relay-(?P<pid>[0-9]{1,10})")
_BOX: Final = re.compile(r"[0-9a-f]{8}")
#: A connection file, a kernel's captured output (``kernel-<id>.log``), or a UNIX socket of a kernel on the ipc
#: transport (``<id's first block>-<port>``).
_OWN_FILE: Final = re.compile(r"kernel-[0-9a-f-]{36}\.(?:json|log)|[0-9a-f]{8}-[0-9]{1,5}")


def connection_dir(pid: int | None = None) -> Path:
    """This relay's private directory of connection files, made (0700) if missing."""
    path = Path(jupyter_runtime_dir()) / f"kernel-relay-{os.getpid() if pid is None else pid}"
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.chmod(0o700)  # whatever the umask made of it
    return path


def remove_own() -> None:
    """Remove this relay's directory once its kernels are gone (it stays if anything is left in it)."""
    path = Path(jupyter_runtime_dir()) / f"kernel-relay-{os.getpid()}"
    try:
        path.rmdir()
    except OSError:
        pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process: not ours to judge
    return True


def _remove_stale_boxes() -> list[Path]:
    """Sandbox directories (see ``_sandbox.Box``) whose sandbox no longer runs: its relay was killed."""
    removed: list[Path] = []
    try:
        entries = list(boxes_dir().iterdir())
    except (OSError, KernelLaunchError):
        return removed
    for entry in entries:
        if _BOX.fullmatch(entry.name) and entry.is_dir() and not entry.is_symlink():
            if not box_alive(entry):
                remove_box(entry)
                removed.append(entry)
                _log.info(
                    "Removed {path}, the sandbox directory of a kernel that is gone",
                    path=str(entry),
                )
    return removed


def remove_stale() -> list[Path]:
    """
    Remove the directories of relays that are gone (with only connection files in them), and the sandbox
    directories of kernels that are gone; return them. A relay's directory with anything else in it is left
    as it is, and said so.
    """
    runtime = Path(jupyter_runtime_dir())
    removed: list[Path] = _remove_stale_boxes()
    try:
        entries = list(runtime.iterdir())
    except OSError:
        return removed
    for entry in entries:
        match = _OWN_DIR.fullmatch(entry.name)
        if match is None or not entry.is_dir() or entry.is_symlink():
            continue
        pid = int(match.group("pid"))
        if pid == os.getpid() or _alive(pid):
            continue
        try:
            names = [child.name for child in entry.iterdir()]
        except OSError:
            continue
        if not all(_OWN_FILE.fullmatch(name) for name in names):
            _log.warn(
                "Left {path} alone: its relay is gone but it holds files the relay did not write",
                path=str(entry),
            )
            continue
        shutil.rmtree(entry, ignore_errors=True)
        removed.append(entry)
        _log.info(
            "Removed {count} connection file(s) that relay {pid}, no longer running, left in {path}",
            count=len(names),
            pid=pid,
            path=str(entry),
        )
    return removed

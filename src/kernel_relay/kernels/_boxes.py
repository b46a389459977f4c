# -*- test-case-name: tests.kernels.test_sandbox -*-
"""
Each sandboxed kernel's *box*: a directory of the relay's user, ``<boxes_dir()>/<first block of its id>/``, that
holds the kernel's UNIX sockets and its working directory, its uid (when the relay is root), and how a later
relay tells a box of a dead kernel from one in use.

As root, the working directory is a tmpfs of its own, mounted by the relay (``home_size`` of ``--kernel-limits``):
it bounds the bytes a kernel keeps there (a full one gives the kernel ENOSPC, and nothing else), survives the
kernel's restarts and its relay's death (the mount is the machine's, so an adopter finds the files), and is
unmounted when the box is removed. Without root the relay cannot mount, and only each file's size is bounded.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import pwd
import re
import shutil
import stat
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from twisted.logger import Logger

from ._errors import KernelLaunchError

_log = Logger()

#: Kernel uids are taken from [UID_BASE, UID_BASE + UID_SPAN): far above distributions' users, systemd's
#: dynamic users and the usual subordinate-uid ranges.
UID_BASE: Final = 1 << 30
UID_SPAN: Final = 1 << 30
#: A box without a pid file is taken for one being launched (by any relay of the user) for this long.
LAUNCH_GRACE: Final = 300.0

_MS_NOSUID: Final = 2
_MS_NODEV: Final = 4
_MNT_DETACH: Final = 2
_libc: Any = None
_warned: list[bool] = []


def boxes_dir() -> Path:
    """
    The directory of kernels' boxes (0700, the relay's user's), made if missing. Not in the Jupyter runtime
    directory: a UNIX socket's path holds 107 bytes, so it is short — ``/run/kernel-relay`` for root,
    ``$XDG_RUNTIME_DIR/kernel-relay`` or ``/tmp/kernel-relay-<uid>`` otherwise — and shared by the relays of
    one user (each box is one kernel's; see ``box_alive``).
    """
    uid = os.geteuid()
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if uid == 0 and os.access("/run", os.W_OK):
        path = Path("/run/kernel-relay")
    elif uid != 0 and runtime and os.path.isdir(runtime):
        path = Path(runtime) / "kernel-relay"
    else:
        path = Path(f"/tmp/kernel-relay-{uid}")
    try:
        path.mkdir(mode=0o700)
    except FileExistsError:
        pass
    found = path.lstat()
    if not stat.S_ISDIR(found.st_mode) or found.st_uid != uid:
        raise KernelLaunchError(f"{path} is not a directory of the relay's user: remove it")
    path.chmod(0o700)
    return path


def _uid_in_use(uid: int) -> bool:
    try:
        pwd.getpwuid(uid)
        return True
    except KeyError:
        pass
    wanted = f"Uid:\t{uid}\t"
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if wanted in (entry / "status").read_text():
                    return True
            except OSError:
                continue
    return False


def kernel_uid(kernel_id: str) -> int:
    """A uid for a kernel: derived from its id, and used by no account and no running process."""
    digits = re.sub(r"[^0-9a-f]", "", kernel_id.lower()) or "0"
    start = int(digits, 16) % UID_SPAN
    for step in range(64):
        uid = UID_BASE + (start + step) % UID_SPAN
        if not _uid_in_use(uid):
            return uid
    raise KernelLaunchError("no free uid for a sandboxed kernel")


def _syscall(name: str, *args: Any) -> None:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    if getattr(_libc, name)(*args) != 0:
        number = ctypes.get_errno()
        raise OSError(number, os.strerror(number))


def mount_home(home: Path, size: int | None, uid: int | None) -> None:
    """
    A tmpfs of ``size`` bytes on ``home`` for a kernel of ``uid`` (as root; once: a restart or an adopter
    finds it mounted). Without root, or without a size, the directory stays as it is.
    """
    if size is None or os.path.ismount(home):
        return
    if os.geteuid() != 0 or uid is None:
        if not _warned:
            _warned.append(True)
            _log.warn(
                "kernels' working directories are not bounded in size (only each file is): the relay "
                "mounts a tmpfs for each only when it runs as root"
            )
        return
    options = f"size={size},mode=0700,uid={uid},gid={uid}".encode()
    try:
        _syscall("mount", b"tmpfs", bytes(home), b"tmpfs", _MS_NOSUID | _MS_NODEV, options)
    except OSError as error:
        raise KernelLaunchError(
            f"cannot mount the kernel's working directory {home}: {error}"
        ) from None


def remove_box(root: Path) -> None:
    """A box and all in it, its working directory unmounted first (or the mount would outlive it)."""
    home = root / "home"
    if os.path.ismount(home):
        try:
            _syscall("umount2", bytes(home), _MNT_DETACH)
        except OSError as error:
            _log.warn("could not unmount {home}: {error}", home=str(home), error=str(error))
    shutil.rmtree(root, ignore_errors=True)


@dataclass(frozen=True)
class Box:
    """
    A kernel's directory (the relay's): ``channels/`` (the kernel's, shared with the relay: its UNIX sockets
    and its copy of its connection file), ``home/`` (the kernel's working directory) and ``pid`` (the
    sandbox's process, so a later relay can tell a box of a dead kernel).
    """

    root: Path
    uid: int | None
    """The kernel's own uid when the relay is root; None: the relay's (in a user namespace)."""

    @classmethod
    def make(cls, kernel_id: str) -> Box:
        root = boxes_dir() / kernel_id.split("-", 1)[0]
        try:
            root.mkdir(mode=0o700)
        except FileExistsError:
            raise KernelLaunchError(f"a sandbox directory {root} exists already") from None
        uid = kernel_uid(kernel_id) if os.geteuid() == 0 else None
        box = cls(root, uid)
        for path in (box.channels, box.home):
            path.mkdir(mode=0o700)
            if uid is not None:
                os.chown(path, uid, uid)
        return box

    @property
    def channels(self) -> Path:
        return self.root / "channels"

    @property
    def home(self) -> Path:
        return self.root / "home"

    def connection_file(self, relays: str) -> Path:
        """The kernel's copy of the relay's connection file ``relays``: same name, in its channels directory."""
        return self.channels / Path(relays).name

    @property
    def ipc_prefix(self) -> str:
        """The ``ip`` of the kernel's connection info on the ipc transport."""
        return str(self.channels / "k")

    def to_record(self) -> dict[str, Any]:
        return {"root": str(self.root), "uid": self.uid}

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Box:
        uid = record.get("uid")
        return cls(Path(str(record["root"])), uid if isinstance(uid, int) else None)

    def copy_connection_file(self, source: str) -> None:
        """
        The kernel's own copy of its connection file (the relay's is 0600, the relay's), in its channels
        directory: ipykernel rewrites it as it likes. Written through one descriptor, never following a
        link the kernel may have left in its place.
        """
        data = Path(source).read_bytes()
        target = self.connection_file(source)
        target.unlink(missing_ok=True)
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "wb") as file:
            if self.uid is not None:
                os.fchown(file.fileno(), self.uid, self.uid)
            file.write(data)

    def write_pid(self, pid: int) -> None:
        """The sandbox's process (and its start time), for ``box_alive``."""
        # adoption builds kernels of ours: imported here, not at the top
        from .adoption import start_time

        (self.root / "pid").write_text(json.dumps([pid, start_time(pid)]))

    def launching(self) -> None:
        """
        Taken for a box being launched (``box_alive``) until the next ``write_pid``: a restart's gap, when the
        old kernel has exited, is no stale box for another relay that starts.
        """
        (self.root / "pid").unlink(missing_ok=True)
        os.utime(self.root)

    def remove(self) -> None:
        remove_box(self.root)


def box_alive(root: Path) -> bool:
    """
    Whether a box's sandbox still runs (its pid file names a live process started when it says), or is
    being started.
    """
    from .adoption import start_time

    try:
        pid, started = json.loads((root / "pid").read_text())
    except FileNotFoundError:
        try:
            return time.time() - root.stat().st_mtime < LAUNCH_GRACE
        except OSError:
            return False
    except (OSError, ValueError, TypeError):
        return False
    return isinstance(pid, int) and start_time(pid) is not None and start_time(pid) == started


__all__ = [
    "LAUNCH_GRACE",
    "Box",
    "box_alive",
    "boxes_dir",
    "kernel_uid",
    "mount_home",
    "remove_box",
]

"""
Kernelspecs as Jupyter Server shows them: the model ``GET /api/kernelspecs`` lists, and the files of a
kernelspec's directory (logos, ``kernel.js``) a client may fetch — regular files of that directory only,
never a symlink out of it or a FIFO, read in a thread and bounded in size.

Apart from :mod:`.jupyter_api` because reading a kernelspec's directory safely is file-system work with
its own threats, where the API module is routes and their answers.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Callable
from typing import Any, Final
from urllib.parse import quote

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorThreads
from twisted.internet.threads import deferToThreadPool

from ..kernels import KernelSpecInfo

#: The files of a kernelspec's directory a client may fetch, as Jupyter Server lists them in ``resources``.
RESOURCE_FILE: Final = re.compile(
    r"(?:logo-[0-9]+x[0-9]+\.png|logo-svg\.svg|kernel\.js|kernel\.css)"
)

#: The largest kernelspec resource file served, in bytes (logos are a few kB, a ``kernel.js`` rarely 1 MB).
MAX_RESOURCE_BYTES: Final = 8 * 1024 * 1024

#: Reads a kernelspec resource: ``(directory, filename)`` to its bytes, or None where it is not served.
ResourceReader = Callable[[str, str], Deferred[bytes | None]]


def read_resource_file(
    directory: str, filename: str, limit: int = MAX_RESOURCE_BYTES
) -> bytes | None:
    """
    The bytes of the kernelspec resource ``filename`` (one path segment) in ``directory``, or None unless it
    is a regular file of at most ``limit`` bytes inside it: a symlink (``kernel.js`` -> ``/etc/passwd``), a
    FIFO (whose opening would wait for a writer), a device or a directory is not served. Blocking: run it
    in a thread.
    """
    root = os.path.realpath(directory)
    path = os.path.join(root, filename)
    if os.path.dirname(os.path.realpath(path)) != root or not _is_regular(path):
        return None
    try:
        # O_NOFOLLOW and O_NONBLOCK: what was checked may have been swapped for a symlink or a FIFO since.
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as file:
        status = os.fstat(fd)
        if not stat.S_ISREG(status.st_mode) or status.st_size > limit:
            return None
        data = file.read(limit + 1)
    return data if len(data) <= limit else None


def _is_regular(path: str) -> bool:
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def threaded_resource_reader(reactor: IReactorThreads) -> ResourceReader:
    """A :data:`ResourceReader` that runs :func:`read_resource_file` in ``reactor``'s thread pool."""

    def read(directory: str, filename: str) -> Deferred[bytes | None]:
        pool = reactor.getThreadPool()  # looked up per call: the pool starts with the reactor
        return deferToThreadPool(reactor, pool, read_resource_file, directory, filename)  # type: ignore[arg-type]

    return read


def read_here(directory: str, filename: str) -> Deferred[bytes | None]:
    return succeed(read_resource_file(directory, filename))


def _resources(spec: KernelSpecInfo, root: str = "/") -> dict[str, str]:
    """The URLs of a kernelspec's logos and files, by Jupyter Server's resource names."""
    if not spec.resource_dir:
        return {}
    try:
        names = sorted(os.listdir(spec.resource_dir))
    except OSError:
        return {}
    base = f"{root}kernelspecs/{quote(spec.name)}/"
    return {
        name.rsplit(".", 1)[0] if name.startswith("logo-") else name: base + quote(name)
        for name in names
        if RESOURCE_FILE.fullmatch(name) and _is_regular(os.path.join(spec.resource_dir, name))
    }


def spec_model(spec: KernelSpecInfo, root: str = "/") -> dict[str, Any]:
    """A kernelspec as ``GET /api/kernelspecs`` lists it."""
    kernel_json = dict(spec.spec)
    body: dict[str, Any] = {
        "argv": list(kernel_json.get("argv", [])),
        "display_name": spec.display_name,
        "language": spec.language,
        "env": dict(kernel_json.get("env", {})),
        "metadata": dict(kernel_json.get("metadata", {})),
        "interrupt_mode": kernel_json.get("interrupt_mode", "signal"),
    }
    return {"name": spec.name, "spec": body, "resources": _resources(spec, root)}

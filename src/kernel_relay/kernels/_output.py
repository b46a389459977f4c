# -*- test-case-name: tests.kernels.test_output -*-
"""
A local kernel's own output (its stdout and stderr: ipykernel's banners, a crash's traceback) read from
pipes and logged line by line as that kernel's, never written raw into the relay's log stream. A kernel
that outlives the relay (a fleet's) writes to a file beside its connection file instead: a pipe would
break when the relay goes.
"""

from __future__ import annotations

import subprocess
import threading
from typing import IO, Any

from twisted.logger import Logger

_log = Logger()

#: The longest line logged as one; a longer one is logged in pieces of this size.
MAX_LINE = 16 * 1024


def pipes() -> dict[str, Any]:
    """The launch arguments (``Popen``'s) that give a kernel's stdout and stderr to the relay."""
    return {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE}


def capture(kernel_id: str, process: object) -> None:
    """Log each line ``process`` (a ``Popen`` started with :func:`pipes`) writes, until it closes them."""
    for stream in ("stdout", "stderr"):
        pipe = getattr(process, stream, None)
        if pipe is not None:
            threading.Thread(
                target=_drain,
                args=(kernel_id, stream, pipe),
                name=f"kernel-{stream}-{kernel_id[:8]}",
                daemon=True,
            ).start()


def _drain(kernel_id: str, stream: str, pipe: IO[bytes]) -> None:
    try:
        with pipe:
            for raw in iter(lambda: pipe.readline(MAX_LINE), b""):
                line = raw.decode("utf-8", "replace").rstrip("\r\n")
                _log.info(
                    "kernel {kernel_id} {stream}: {line}",
                    kernel_id=kernel_id,
                    stream=stream,
                    line=line,
                )
    except (OSError, ValueError):
        pass  # the pipe closed under us: the kernel is gone


__all__ = ["MAX_LINE", "capture", "pipes"]

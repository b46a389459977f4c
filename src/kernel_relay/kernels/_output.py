# -*- test-case-name: tests.kernels.test_output -*-
"""
A local kernel's own output (its stdout and stderr: ipykernel's banners, a crash's traceback) read from
pipes and logged line by line as that kernel's, never written raw into the relay's log stream. A kernel
that outlives the relay (a fleet's) writes to a file beside its connection file instead: a pipe would
break when the relay goes.

One thread reads the pipes of every kernel (a selector over all of them), so a kernel costs two file
descriptors here and no thread: the relay's cost per kernel stays flat however many it runs. Pipes are
handed to that thread through a queue and a wake-up pipe, since a selector is not shared between threads.
"""

from __future__ import annotations

import os
import selectors
import subprocess
import threading
from typing import IO, Any

from twisted.logger import Logger

_log = Logger()

#: The longest line logged as one; a longer one is logged in pieces of this size.
MAX_LINE = 16 * 1024
#: The most read from one pipe at a time.
_READ_SIZE = 64 * 1024


def pipes() -> dict[str, Any]:
    """The launch arguments (``Popen``'s) that give a kernel's stdout and stderr to the relay."""
    return {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE}


class _Stream:
    """One pipe of one kernel, and the start of a line not yet ended."""

    def __init__(self, kernel_id: str, name: str, pipe: IO[bytes]) -> None:
        self.kernel_id = kernel_id
        self.name = name
        self.pipe = pipe
        self.partial = b""

    def lines(self, data: bytes) -> list[bytes]:
        """The whole lines (or :data:`MAX_LINE` pieces) that ``data`` completes; keeps the rest."""
        buffered = self.partial + data
        done: list[bytes] = []
        start = 0
        while True:
            end = buffered.find(b"\n", start, start + MAX_LINE)
            if end >= 0:
                done.append(buffered[start:end])
                start = end + 1
            elif len(buffered) - start >= MAX_LINE:
                done.append(buffered[start : start + MAX_LINE])
                start += MAX_LINE
            else:
                break
        self.partial = buffered[start:]
        return done

    def log(self, raw: bytes) -> None:
        _log.info(
            "kernel {kernel_id} {stream}: {line}",
            kernel_id=self.kernel_id,
            stream=self.name,
            line=raw.decode("utf-8", "replace").rstrip("\r"),
        )


class _OutputReader:
    """The thread that reads every kernel's pipes; started with the first of them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiting: list[_Stream] = []
        self._wake: tuple[int, int] | None = None

    def add(self, stream: _Stream) -> None:
        with self._lock:
            self._waiting.append(stream)
            if self._wake is None:
                self._wake = os.pipe()
                os.set_blocking(self._wake[1], False)
                threading.Thread(
                    target=self._run, args=(self._wake[0],), name="kernel-output", daemon=True
                ).start()
            wake = self._wake[1]
        try:
            os.write(wake, b"\0")
        except BlockingIOError:
            pass  # the thread has wake-ups enough waiting

    def _run(self, wake: int) -> None:
        selector = selectors.DefaultSelector()
        selector.register(wake, selectors.EVENT_READ, None)
        while True:
            for key, _ in selector.select():
                try:
                    self._ready(selector, wake, key.data)
                except Exception:
                    _log.failure("reading a kernel's output failed")
                    if key.data is not None:
                        selector.unregister(key.fileobj)

    def _ready(self, selector: selectors.BaseSelector, wake: int, stream: _Stream | None) -> None:
        """Read what one ready pipe has: the wake-up pipe's new streams, or a kernel's output."""
        if stream is None:
            os.read(wake, 4096)
            with self._lock:
                waiting, self._waiting = self._waiting, []
            for new in waiting:
                os.set_blocking(new.pipe.fileno(), False)
                selector.register(new.pipe, selectors.EVENT_READ, new)
            return
        try:
            data = os.read(stream.pipe.fileno(), _READ_SIZE)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data:
            for line in stream.lines(data):
                stream.log(line)
            return
        # The kernel closed it (it is gone): what is left of a line, then let the pipe go.
        if stream.partial:
            stream.log(stream.partial)
        selector.unregister(stream.pipe)
        stream.pipe.close()


_reader = _OutputReader()


def capture(kernel_id: str, process: object) -> None:
    """
    Log each line ``process`` (a ``Popen`` started with :func:`pipes`) writes, until it closes them. The
    reader owns the pipes from then on (``process`` no longer holds them): jupyter_client's provisioner closes
    a process's pipes when it reaps it, in another thread, which could close one as the reader reads it.
    """
    for name in ("stdout", "stderr"):
        pipe = getattr(process, name, None)
        if pipe is not None:
            setattr(process, name, None)
            _reader.add(_Stream(kernel_id, name, pipe))


__all__ = ["MAX_LINE", "capture", "pipes"]

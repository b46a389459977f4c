"""A kernel's own stdout and stderr, logged line by line as that kernel's."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from typing import Any

from twisted.logger import LogEvent, globalLogPublisher

from kernel_relay.kernels._output import MAX_LINE, capture, pipes


def test_each_line_of_each_stream_is_an_event_of_its_kernel() -> None:
    """Lines on stdout and stderr become events carrying the kernel's id and the stream; a long line is cut."""
    events: list[LogEvent] = []
    globalLogPublisher.addObserver(events.append)
    script = (
        "import sys; print('hello'); sys.stdout.flush(); "
        "sys.stderr.write('Traceback (most recent call last):\\nRuntimeError: boom\\n'); "
        f"print('x' * {MAX_LINE + 10})"
    )
    process: Any = subprocess.Popen([sys.executable, "-c", script], **pipes())
    try:
        capture("k-1", process)
        # The reader owns the pipes: jupyter_client's provisioner, reaping the process in another thread,
        # closed them under it ("I/O operation on closed file" in a relay's log as it stopped).
        assert process.stdout is None and process.stderr is None
        process.wait(30)
        deadline = time.monotonic() + 10
        while len([e for e in events if e.get("kernel_id") == "k-1"]) < 5:
            assert time.monotonic() < deadline, events
            time.sleep(0.02)
    finally:
        globalLogPublisher.removeObserver(events.append)
    ours = [(e["stream"], e["line"]) for e in events if e.get("kernel_id") == "k-1"]
    assert ("stdout", "hello") in ours
    assert [line for stream, line in ours if stream == "stderr"] == [
        "Traceback (most recent call last):",
        "RuntimeError: boom",
    ]
    assert ("stdout", "x" * MAX_LINE) in ours and ("stdout", "x" * 10) in ours


def test_one_thread_reads_the_output_of_every_kernel() -> None:
    """However many kernels print, their output is read by one thread: a kernel costs the relay no thread."""
    events: list[LogEvent] = []
    globalLogPublisher.addObserver(events.append)
    processes: list[Any] = []
    try:
        for n in range(6):
            process: Any = subprocess.Popen([sys.executable, "-c", f"print('line {n}')"], **pipes())
            capture(f"many-{n}", process)
            processes.append(process)
        for process in processes:
            process.wait(30)
        deadline = time.monotonic() + 10
        while len([e for e in events if str(e.get("kernel_id", "")).startswith("many-")]) < 6:
            assert time.monotonic() < deadline, events
            time.sleep(0.02)
    finally:
        globalLogPublisher.removeObserver(events.append)
    readers = [t for t in threading.enumerate() if t.name.startswith("kernel-")]
    assert [t.name for t in readers] == ["kernel-output"]
    lines = sorted(e["line"] for e in events if str(e.get("kernel_id", "")).startswith("many-"))
    assert lines == [f"line {n}" for n in range(6)]

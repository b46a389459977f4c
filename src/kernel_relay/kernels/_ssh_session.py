# -*- test-case-name: tests.e2e.test_ssh_provisioner -*-
"""
The ssh processes of the SSH provisioner: short commands (``run_remote``) and the long-lived session that
runs a kernel on the host (``KernelSession``). Blocking calls only, made in the provisioner's worker threads;
nothing here is bound to an event loop, so any thread may use a session that another one started.

Every ssh process is started in its own session (so a signal to the relay's process group does not end it)
and is waited for: a command that overruns its timeout is killed, a session closed is killed and reaped.
"""

from __future__ import annotations

import os
import selectors
import subprocess
import threading
import time
from collections import deque
from collections.abc import Sequence
from typing import IO

from twisted.logger import Logger

from ._ssh_commands import SSHTarget, failure_message, parse_pid

_log = Logger()

#: Lines of a session's stderr kept for error messages (everything is logged as it comes).
STDERR_TAIL = 20
#: Seconds a remote command may take once connected (the connection has its own ConnectTimeout).
COMMAND_SLACK = 20.0
#: Seconds a session whose stdin was closed has to end by itself before its ssh process is killed.
CLOSE_GRACE = 3.0


class SSHCommandError(RuntimeError):
    """An ssh command failed; the message says on which host, doing what, and why (it reaches users)."""


def run_remote(
    target: SSHTarget, doing: str, script: str, *arguments: str, stdin: bytes = b""
) -> str:
    """Run ``script`` on the host and return its stdout; SSHCommandError when ssh or the script fails."""
    argv, program = target.command(script, *arguments)
    try:
        completed = subprocess.run(
            argv,
            input=program + stdin,
            capture_output=True,
            timeout=target.connect_timeout + COMMAND_SLACK,
            start_new_session=True,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        stderr = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else ""
        raise SSHCommandError(failure_message(target, doing, None, stderr)) from None
    except OSError as exc:
        raise SSHCommandError(
            f"could not {doing} on {target.name}: cannot run {target.ssh!r}: {exc}"
        ) from None
    stderr = completed.stderr.decode(errors="replace")
    if completed.returncode != 0:
        raise SSHCommandError(failure_message(target, doing, completed.returncode, stderr))
    return completed.stdout.decode(errors="replace")


class KernelSession:
    """
    The ssh process whose remote command became the kernel: it runs as long as the kernel does, and its
    exit status is the kernel's (255 when ssh failed or the kernel was killed by a signal). Its stderr (the
    kernel's stdout and stderr) is logged line by line from a reader thread. Its stdin stays open while the
    session lasts: the remote watcher of LAUNCH_SCRIPT ends the kernel when it closes (when this process
    exits, however it exits, too).
    """

    def __init__(
        self, target: SSHTarget, kernel_id: str, process: subprocess.Popen[bytes], tied: bool
    ) -> None:
        self.target = target
        self.kernel_id = kernel_id
        self.tied = tied
        """Whether the remote kernel ends with the session (LAUNCH_SCRIPT's watcher)."""
        self._process = process
        self._tail: deque[str] = deque(maxlen=STDERR_TAIL)
        assert process.stderr is not None
        self._reader = threading.Thread(
            target=self._drain,
            args=(process.stderr,),
            name=f"ssh-stderr-{kernel_id[:8]}",
            daemon=True,
        )
        self._reader.start()

    @classmethod
    def start(
        cls,
        target: SSHTarget,
        kernel_id: str,
        script: str,
        arguments: Sequence[str],
        stdin: bytes,
        tied: bool,
        label: str = "sh",
    ) -> tuple[KernelSession, int]:
        """
        Start the session and wait for the remote pid it prints; SSHCommandError (and nothing left running
        here) when ssh fails or no pid comes within the connect timeout and COMMAND_SLACK. ``label``
        names the remote ``sh`` in ``ps`` (see :meth:`SSHTarget.command`).
        """
        argv, program = target.command(script, *arguments, label=label)
        try:
            process = subprocess.Popen(
                argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
            )
        except OSError as exc:
            raise SSHCommandError(
                f"could not start the kernel on {target.name}: cannot run {target.ssh!r}: {exc}"
            ) from None
        session = cls(target, kernel_id, process, tied)
        assert process.stdin is not None and process.stdout is not None
        try:
            process.stdin.write(program + stdin)
            process.stdin.flush()
        except OSError:
            pass  # ssh is gone already; its exit says why
        pid = _read_pid(process.stdout, target.connect_timeout + COMMAND_SLACK)
        if pid is None:
            timed_out = process.poll() is None
            code = session.close()
            raise SSHCommandError(
                failure_message(
                    target, "start the kernel", None if timed_out else code, session.stderr_tail()
                )
            )
        return session, pid

    @property
    def returncode(self) -> int | None:
        """The ssh process's exit status, None while it runs."""
        return self._process.poll()

    def stderr_tail(self) -> str:
        return "\n".join(self._tail)

    def close(self) -> int | None:
        """
        End the session and reap the ssh process; its exit status. Its stdin is closed first (a tied
        kernel's watcher then kills it, and ssh ends with it); an ssh that does not end soon (or at once, when
        the kernel is not tied to it) is killed.
        """
        process = self._process
        if process.stdin is not None and not process.stdin.closed:
            try:
                process.stdin.close()
            except OSError:
                pass
        try:
            code: int | None = process.wait(timeout=CLOSE_GRACE if self.tied else 0.1)
        except subprocess.TimeoutExpired:
            process.kill()
            try:
                code = process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                code = None
        self._reader.join(timeout=5)
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()
        return code

    def _drain(self, stderr: IO[bytes]) -> None:
        try:
            for raw in iter(stderr.readline, b""):
                line = raw.decode(errors="replace").rstrip()
                self._tail.append(line)
                _log.info(
                    "kernel {kernel_id} on {host}: {line}",
                    kernel_id=self.kernel_id,
                    host=self.target.name,
                    line=line,
                )
        except (OSError, ValueError):
            pass  # closed under us by close()


def _read_pid(stdout: IO[bytes], timeout: float) -> int | None:
    """The pid marker's value from the session's stdout, None at EOF or after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    buffered = b""
    fd = stdout.fileno()
    with selectors.DefaultSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        while (left := deadline - time.monotonic()) > 0:
            if not selector.select(left):
                continue
            chunk = os.read(fd, 4096)
            if not chunk:
                return None
            buffered += chunk
            *lines, buffered = buffered.split(b"\n")
            for line in lines:
                pid = parse_pid(line.decode(errors="replace"))
                if pid is not None:
                    return pid
            if len(buffered) > 65536:
                return None
    return None


__all__ = ["KernelSession", "SSHCommandError", "run_remote"]

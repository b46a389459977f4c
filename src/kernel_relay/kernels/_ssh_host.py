# -*- test-case-name: tests.e2e.test_ssh_provisioner -*-
"""
The SSH provisioner's short errands on the kernel's host, one function each: resolve its address, prepare
the kernel's directory and ports, ask whether the kernel lives (signalling it on the way), remove its
connection file. Blocking (each is one ssh process): run them in worker threads, as jupyter_client does
its provisioner's calls.

Apart from :mod:`.ssh` because these are the host's side, values in and values out, where the provisioner
is jupyter_client's interface and the state of one kernel.
"""

from __future__ import annotations

import socket

from ._ssh_commands import (
    CLEANUP_SCRIPT,
    FREE_PORTS_PY,
    PREPARE_SCRIPT,
    SIGNAL_SCRIPT,
    SSHTarget,
    parse_prepared,
    parse_state,
)
from ._ssh_session import SSHCommandError, run_remote


def resolve(target: SSHTarget) -> str:
    """The host's address, as this machine resolves it (IPv4 first: the relay's sockets speak IPv4)."""
    try:
        found = socket.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise SSHCommandError(f"could not resolve the kernel host {target.host!r}: {exc}") from None
    found.sort(key=lambda entry: entry[0] != socket.AF_INET)
    return str(found[0][4][0])


def prepare(target: SSHTarget, remote_dir: str, python: str, address: str) -> tuple[str, list[int]]:
    """Make the kernel's directory on the host and pick five free ports there: the directory, the ports."""
    output = run_remote(
        target,
        "prepare the kernel's directory and ports",
        PREPARE_SCRIPT,
        remote_dir,
        python,
        address,
        FREE_PORTS_PY,
    )
    try:
        return parse_prepared(output)
    except ValueError as exc:
        raise SSHCommandError(f"could not prepare the kernel on {target.name}: {exc}") from None


def ask(target: SSHTarget, doing: str, pid: int, connection_file: str, signal_name: str) -> bool:
    """Is the kernel ``pid`` of ``connection_file`` alive (after the signal, if one is named)?"""
    output = run_remote(target, doing, SIGNAL_SCRIPT, str(pid), connection_file, signal_name)
    state = parse_state(output)
    if state is None:
        raise SSHCommandError(
            f"could not {doing} on {target.name}: unexpected answer {output[-200:]!r}"
        )
    return state


def remove_connection_file(target: SSHTarget, connection_file: str, directory: str) -> None:
    """Remove the kernel's connection file on the host (and ``directory``, once nothing else is in it)."""
    run_remote(
        target, "remove the kernel's connection file", CLEANUP_SCRIPT, connection_file, directory
    )

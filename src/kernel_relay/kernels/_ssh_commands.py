# -*- test-case-name: tests.e2e.test_ssh_provisioner -*-
"""
What the SSH provisioner asks of ``ssh`` and of the remote host, as values: the client's command lines, the
small POSIX ``sh`` scripts run on the host, the parsing of what they print, and the messages for what went
wrong. No I/O here; :mod:`kernel_relay.kernels.ssh` runs these.

The remote command line never carries a value: it is always ``exec sh -c 'eval "$(dd bs=1 count=N
2>/dev/null)"'``, text that every login shell family (POSIX shells, bash, zsh, fish, csh/tcsh) reads the
same, since its quoted part holds no backslash, quote, ``!`` or newline. The script and its arguments go on
ssh's stdin, first: exactly N bytes of POSIX ``sh`` (``set -- 'value'...`` then the fixed script), read by
``dd`` one byte at a time so that whatever follows on stdin is left to the script, and quoted for ``sh``
alone. Values never pass through the login shell, whose quoting rules differ (fish reads ``\'`` inside
single quotes as a quote, where POSIX shells end the quoted part at it).
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

#: The exit status of ssh itself failing (connection, authentication); a remote command's own status is
#: passed through, and a remote command killed by a signal also ends ssh with 255.
SSH_FAILED: Final = 255

#: The exit status the launch and preparation scripts give when they cannot write their files.
SCRIPT_FAILED: Final = 125

#: The line the launch script prints before it becomes the kernel: ``$$`` is the kernel's pid after exec.
PID_MARKER: Final = "kernel-relay-ssh pid "

#: Names of environment variables the kernel gets besides its kernelspec's ``env``: Jupyter's launch
#: parameters (``KERNEL_*``, what the relay lets clients set) and the session name Jupyter Server passes,
#: but not the relay's own settings (``KERNEL_RELAY_*``: its token, say).
FORWARDED_ENV: Final = re.compile(r"(?!KERNEL_RELAY_)KERNEL_[A-Za-z0-9_]+|JPY_SESSION_NAME")
_ENV_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
#: Words every login shell reads as themselves.
_LABEL: Final = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")

#: Makes the remote directory (private), prints its absolute path, then five free TCP ports of the kernel's
#: address, found by the remote Python. Arguments: directory, python, address, the Python code.
PREPARE_SCRIPT: Final = """\
umask 077
mkdir -p -- "$1" && chmod 700 -- "$1" && cd -- "$1" && pwd -P || exit 125
exec "$2" -c "$4" "$3"
"""

#: The remote Python of PREPARE_SCRIPT: bind five sockets at once (so the ports differ), print the ports.
FREE_PORTS_PY: Final = """\
import socket, sys
family, kind, proto, _, address = socket.getaddrinfo(sys.argv[1], 0, type=socket.SOCK_STREAM)[0]
sockets = [socket.socket(family, kind, proto) for _ in range(5)]
for s in sockets:
    s.bind(address)
print(*[s.getsockname()[1] for s in sockets])
"""

#: Writes the connection file (one line of JSON, the first line of stdin) as 0600 in the private directory,
#: prints the pid marker and becomes the kernel through ``env`` (same pid), with stdin from /dev/null. With
#: "yes" as third argument the kernel is tied to the session: its stdout goes to stderr (so the marker is all
#: that stdout carries, and the kernel's output reaches the relay's log), and a watcher stays in the
#: background reading the rest of stdin, which the relay keeps open: once it ends (the relay or its ssh gone,
#: the connection lost, or the session over) the watcher kills the kernel's process group, itself included.
#: It is forked twice so that it is not the kernel's child (ipykernel waits for its children to go before it
#: exits), and ipykernel is told its parent is the ssh session (``JPY_PARENT_PID``: it exits when that goes).
#: With "no" the kernel's output goes to ``<connection file>.log`` beside it, since it outlives the session.
#: Arguments: directory, connection file, yes/no, then ``NAME=value``... and the kernel's argv.
LAUNCH_SCRIPT: Final = """\
umask 077
mkdir -p -- "$1" && chmod 700 -- "$1" || exit 125
IFS= read -r info && printf '%s\\n' "$info" > "$2" && chmod 600 -- "$2" || exit 125
file=$2 tied=$3
shift 3
unset JPY_PARENT_PID
if [ "$tied" = yes ]; then
  exec 3<&0
  ( (trap '' INT; cat <&3; kill -s KILL -- "-$$") >/dev/null 2>&1 & )
  exec 3<&-
  JPY_PARENT_PID=$PPID; export JPY_PARENT_PID
  echo "kernel-relay-ssh pid $$"
  exec env "$@" </dev/null 1>&2
fi
echo "kernel-relay-ssh pid $$"
exec env "$@" </dev/null >>"$file.log" 2>&1
"""

#: Whether pid $1 is still the kernel of connection file $2 (its command line names the file, so a reused
#: pid is not taken for it), and if so sends it signal $3 (a name; none: only look), to its process group
#: first (the kernel leads one: sshd starts sessions with setsid). Prints "alive" or "gone".
SIGNAL_SCRIPT: Final = """\
if [ -r "/proc/$1/cmdline" ]; then
  grep -qaF -- "$2" "/proc/$1/cmdline" || { echo gone; exit 0; }
elif ! kill -0 "$1" 2>/dev/null; then
  echo gone; exit 0
fi
if [ -n "$3" ]; then
  kill -s "$3" -- "-$1" 2>/dev/null || kill -s "$3" "$1" 2>/dev/null || { echo gone; exit 0; }
fi
echo alive
"""

#: Removes the connection file $1 (and the log of an untied kernel), and its directory $2 if nothing else
#: is left in it.
CLEANUP_SCRIPT: Final = """\
rm -f -- "$1" "$1.log"
rmdir -- "$2" 2>/dev/null
echo removed
"""


@dataclass(frozen=True)
class SSHTarget:
    """The remote host as the ssh client reaches it, and the client's options (the provisioner's config)."""

    host: str
    port: int = 22
    user: str = ""
    identity_file: str = ""
    known_hosts_file: str = ""
    connect_timeout: float = 10.0
    ssh: str = "ssh"

    def __post_init__(self) -> None:
        if not self.host or self.host.startswith("-") or any(c.isspace() for c in self.host):
            raise ValueError(f"the ssh provisioner's host {self.host!r} is not a host name")
        if self.user.startswith("-") or any(c.isspace() or c == "@" for c in self.user):
            raise ValueError(f"the ssh provisioner's user {self.user!r} is not a user name")
        if not 0 < self.port < 65536:
            raise ValueError(f"the ssh provisioner's port {self.port} is not a TCP port")
        if self.connect_timeout <= 0:
            raise ValueError("the ssh provisioner's connect_timeout must be positive")

    @property
    def name(self) -> str:
        """``user@host:port`` (``host:port`` without a user), for messages."""
        return f"{self.user + '@' if self.user else ''}{self.host}:{self.port}"

    def options(self) -> list[str]:
        """
        The client's options: no prompts, only the configured key and known hosts, a host key that must be
        known, bounded connecting, a dead connection noticed, no multiplexing (every connection is one ssh
        process, gone when it ends) and no forwarding.
        """
        timeout = max(1, round(self.connect_timeout))
        options = {
            "BatchMode": "yes",
            "StrictHostKeyChecking": "yes",
            "UpdateHostKeys": "no",
            "ConnectTimeout": str(timeout),
            "ServerAliveInterval": str(timeout),
            "ServerAliveCountMax": "3",
            "ControlMaster": "no",
            "ControlPath": "none",
            "ClearAllForwardings": "yes",
            "ForwardAgent": "no",
            "ForwardX11": "no",
            "RequestTTY": "no",
            "LogLevel": "ERROR",
        }
        if self.known_hosts_file:
            options["UserKnownHostsFile"] = self.known_hosts_file
        if self.identity_file:
            options["IdentityFile"] = self.identity_file
            options["IdentitiesOnly"] = "yes"
        argv = ["-p", str(self.port)]
        if self.user:
            argv += ["-l", self.user]
        for name, value in options.items():
            argv += ["-o", f"{name}={value}"]
        return argv

    def command(self, script: str, *arguments: str, label: str = "sh") -> tuple[list[str], bytes]:
        """
        The ssh command line that runs ``script`` with these positional arguments on the host, and the
        bytes to write first on its stdin (see the module's docstring); the script's own stdin follows.
        ``label`` is the remote ``sh``'s ``$0``, seen in ``ps`` on both hosts (a kernel's connection file
        name, say); one outside ``[A-Za-z0-9._-]`` is replaced by ``sh``.
        """
        program = remote_program(script, arguments)
        name = label if _LABEL.fullmatch(label) else "sh"
        remote = f"exec sh -c 'eval \"$(dd bs=1 count={len(program)} 2>/dev/null)\"' {name}"
        return [self.ssh, *self.options(), "-T", "-e", "none", self.host, remote], program


def remote_program(script: str, arguments: Sequence[str]) -> bytes:
    """
    ``script`` with its positional ``arguments``, as the POSIX ``sh`` text the remote command evaluates:
    each value quoted for ``sh`` (single quotes), so it is data, whatever bytes it holds but NUL.
    """
    if any("\x00" in argument for argument in arguments):
        raise ValueError("a remote command's argument cannot contain NUL")
    return f"set -- {shlex.join(arguments)}\n{script}".encode("utf-8", "surrogateescape")


def remote_environment(env: Mapping[str, str], spec_env: Sequence[str]) -> dict[str, str]:
    """
    What of a launch's environment goes to the remote kernel: its kernelspec's ``env`` entries (as
    jupyter_client substituted them) and the FORWARDED_ENV names, never the relay's own environment.
    """
    chosen = {
        name: value
        for name, value in env.items()
        if (name in spec_env or FORWARDED_ENV.fullmatch(name)) and _ENV_NAME.fullmatch(name)
    }
    return {name: value for name, value in sorted(chosen.items()) if "\x00" not in value}


def remote_argv(argv: Sequence[str], connection_file: str, python: str) -> list[str]:
    """
    The kernelspec's argv for the host: ``{connection_file}`` is the remote file, ``{python}`` and a bare
    ``python``/``python3`` first word are the configured remote Python (jupyter_client would put the relay's
    own interpreter there). Other ``{...}`` fields name local paths and are left alone.
    """
    if not argv:
        raise ValueError("the kernelspec's argv is empty")
    names = {"connection_file": connection_file, "python": python}
    formatted = [
        re.sub(r"\{([A-Za-z0-9_]+)\}", lambda m: names.get(m.group(1), m.group(0)), arg)
        for arg in argv
    ]
    if formatted[0] in ("python", "python3"):
        formatted[0] = python
    if "=" in formatted[0]:
        raise ValueError(f"the kernel's command {formatted[0]!r} cannot contain '='")
    return formatted


def launch_arguments(
    remote_dir: str,
    connection_file: str,
    exit_with_connection: bool,
    env: Mapping[str, str],
    argv: Sequence[str],
) -> list[str]:
    """LAUNCH_SCRIPT's positional arguments."""
    assignments = [f"{name}={value}" for name, value in env.items()]
    return [
        remote_dir,
        connection_file,
        "yes" if exit_with_connection else "no",
        *assignments,
        *argv,
    ]


def parse_prepared(output: str) -> tuple[str, list[int]]:
    """PREPARE_SCRIPT's output: the remote directory and five ports (lines printed by login files before
    them are skipped)."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    if len(lines) < 2:
        raise ValueError(f"unexpected output {output[-200:]!r}")
    directory, ports_line = lines[-2], lines[-1]
    try:
        ports = [int(word) for word in ports_line.split()]
    except ValueError:
        raise ValueError(f"unexpected output {output[-200:]!r}") from None
    if len(ports) != 5 or not directory.startswith("/") or not all(0 < p < 65536 for p in ports):
        raise ValueError(f"unexpected output {output[-200:]!r}")
    return directory, ports


def parse_pid(line: str) -> int | None:
    """The kernel's pid from LAUNCH_SCRIPT's marker line, or None for any other line."""
    if not line.startswith(PID_MARKER):
        return None
    rest = line[len(PID_MARKER) :].strip()
    return int(rest) if rest.isdigit() and int(rest) > 0 else None


def parse_state(output: str) -> bool | None:
    """SIGNAL_SCRIPT's answer: True (alive), False (gone), None (no answer)."""
    words = output.split()
    if words and words[-1] == "alive":
        return True
    if words and words[-1] == "gone":
        return False
    return None


def failure_message(target: SSHTarget, doing: str, returncode: int | None, stderr: str) -> str:
    """
    A readable error for an ssh command that failed: what was being done, on which host, why (ssh's own
    words), and what it usually means.
    """
    detail = " ".join(line.strip() for line in stderr.strip().splitlines()[-3:] if line.strip())
    lowered = detail.lower()
    hint = ""
    if "permission denied" in lowered:
        key = f" {target.identity_file}" if target.identity_file else ""
        hint = f"the host refused the key{key}"
    elif "host key verification failed" in lowered or "host key for" in lowered:
        known = target.known_hosts_file or "the known_hosts file"
        hint = f"the host's key is not the one {known} has for it"
    elif any(
        words in lowered
        for words in ("connection refused", "timed out", "no route to host", "could not resolve")
    ):
        hint = "the host cannot be reached"
    elif returncode == SCRIPT_FAILED:
        hint = "the remote directory or connection file could not be written"
    elif returncode is None:
        hint = "ssh did not answer in time"
    status = "" if returncode is None else f" (ssh exit status {returncode})"
    reason = "; ".join(part for part in (hint, detail) if part) or "no message"
    return f"could not {doing} on {target.name} over ssh{status}: {reason}"


__all__ = [
    "CLEANUP_SCRIPT",
    "FREE_PORTS_PY",
    "LAUNCH_SCRIPT",
    "PREPARE_SCRIPT",
    "SIGNAL_SCRIPT",
    "SSHTarget",
    "failure_message",
    "launch_arguments",
    "parse_pid",
    "parse_prepared",
    "parse_state",
    "remote_argv",
    "remote_environment",
    "remote_program",
]

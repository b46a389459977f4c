"""
The ssh provisioner's remote commands under every login shell: values full of quotes, backslashes, ``$()``,
backticks, newlines and fish's own escapes reach the remote script byte-exact and run nothing. Each case runs
the command as sshd does (``<login shell> -c <command>``, the bytes on stdin) for POSIX sh, bash and fish,
then through a real sshd (tests/sshd.py) as root (bash) and as a user whose login shell is fish.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from kernel_relay.kernels._ssh_commands import SSHTarget
from kernel_relay.kernels._ssh_session import run_remote
from tests.sshd import SSHServer, start_sshd

pytestmark = pytest.mark.timeout(120)

#: Values that break out of one shell's quoting or another's (the review's payload first).
NASTY = [
    "\\'$(touch {canary})\"\\",
    "it\\'s",
    "'; touch {canary}; '",
    '"; touch {canary}; "',
    "`touch {canary}`",
    "$(touch {canary})",
    "\\\\'\\\\",
    "a\nb\n\ntouch {canary}\n",
    "fish: (touch {canary}) \\x41 \\n {{a,b}} * ~ % $HOME",
    "csh: !! !$ \\!",
    "tab\tand\\ttrailing\\",
    "",
    " leading and trailing spaces ",
    "ünïcödé ✓",
]

#: Prints each positional argument as its bytes in hex, one a line: what the script was given exactly.
ECHO_SCRIPT = """\
for value in "$@"; do
  printf '%s' "$value" | od -An -v -tx1 | tr -d ' \\n'
  echo
done
"""


def values(canary: Path) -> list[str]:
    return [value.format(canary=canary) for value in NASTY]


def decoded(output: str) -> list[str]:
    return [bytes.fromhex(line).decode() for line in output.splitlines()[-len(NASTY) :]]


def shells() -> list[str]:
    return [
        shell for shell in ("/bin/sh", "/bin/bash", "/usr/bin/fish") if os.access(shell, os.X_OK)
    ]


@pytest.mark.parametrize("shell", shells())
def test_values_reach_the_script_byte_exact_under_each_login_shell(
    shell: str, tmp_path: Path
) -> None:
    """Run as ``<shell> -c <command>`` the way sshd runs it, the nasty values arrive unchanged and run nothing."""
    canary = tmp_path / "canary"
    target = SSHTarget(host="example.invalid")
    argv, stdin = target.command(ECHO_SCRIPT, *values(canary))
    remote_command = argv[-1]  # what ssh sends: sshd gives it to the login shell's -c
    completed = subprocess.run(
        [shell, "-c", remote_command],
        input=stdin,
        capture_output=True,
        timeout=30,
        check=False,
        cwd=tmp_path,
    )
    assert completed.returncode == 0, completed.stderr.decode(errors="replace")
    assert decoded(completed.stdout.decode()) == values(canary)
    assert not canary.exists()


@pytest.fixture(scope="module")
def sshd() -> Iterator[SSHServer]:
    # sshd reads authorized_keys as the user logging in: the directory must be open to the fish user
    # (pytest's own temporary directories are root's alone).
    directory = Path(tempfile.mkdtemp(prefix="kernel-relay-sshd-"))
    directory.chmod(0o755)
    server = start_sshd(directory / "sshd")
    (directory / "sshd").chmod(0o755)
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)


FISH_USER = "krfishtest"


@pytest.fixture(scope="module")
def fish_user() -> Iterator[str]:
    """A user whose login shell is fish (created for these tests, removed after)."""
    if not os.access("/usr/bin/fish", os.X_OK):
        pytest.skip("fish is not installed: apt-get install fish")
    if os.geteuid() != 0 or not shutil.which("useradd"):
        pytest.skip("creating a user with a fish login shell needs root and useradd")
    try:
        pwd.getpwnam(FISH_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--create-home", "--password", "*", "--shell", "/usr/bin/fish", FISH_USER],
            check=True,
            timeout=30,
        )
    try:
        yield FISH_USER
    finally:
        subprocess.run(["userdel", "--remove", FISH_USER], check=False, timeout=30)


def run_through_sshd(server: SSHServer, user: str, canary: Path) -> list[str]:
    target = SSHTarget(
        host=server.host,
        port=server.port,
        user=user,
        identity_file=str(server.identity_file),
        known_hosts_file=str(server.known_hosts_file),
        connect_timeout=5,
    )
    return decoded(run_remote(target, "echo values", ECHO_SCRIPT, *values(canary)))


def test_values_are_byte_exact_through_sshd_under_bash(sshd: SSHServer, tmp_path: Path) -> None:
    """Through a real sshd, as a user whose login shell is bash, the values arrive unchanged."""
    if pwd.getpwnam(sshd.user).pw_shell != "/bin/bash":
        pytest.skip(f"{sshd.user}'s login shell is not bash")
    canary = tmp_path / "canary"
    assert run_through_sshd(sshd, sshd.user, canary) == values(canary)
    assert not canary.exists()


def test_values_are_byte_exact_through_sshd_under_fish(sshd: SSHServer, fish_user: str) -> None:
    """Through a real sshd, as a user whose login shell is fish, the values arrive unchanged and run nothing."""
    # The canary's directory must be writable by the fish user, were anything to run.
    directory = Path(tempfile.mkdtemp(prefix="kernel-relay-canary-"))
    directory.chmod(0o777)
    canary = directory / "canary"
    try:
        assert run_through_sshd(sshd, fish_user, canary) == values(canary)
        assert not canary.exists()
    finally:
        shutil.rmtree(directory, ignore_errors=True)

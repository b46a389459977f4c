"""
A real OpenSSH server for tests, on 127.0.0.2 (loopback, but not the relay's address, so the host looks
remote): its own config, host key, client key, authorized_keys and known_hosts in a temporary directory,
run in the foreground (``sshd -D -e``) and stopped by the test fixture that started it.
"""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests import support
from tests.support import starts_processes

HOST = "127.0.0.2"
SSHD = shutil.which("sshd") or "/usr/sbin/sshd"
SSH_KEYGEN = shutil.which("ssh-keygen") or "/usr/bin/ssh-keygen"
#: Debian's packages of the server and the client (CI installs them).
PACKAGES = "openssh-server openssh-client"


def require_openssh() -> None:
    """Skip when sshd or ssh is missing, with the reason; in CI (``CI`` set) that is a failure instead."""
    missing = [
        name
        for name, path in (("sshd", SSHD), ("ssh-keygen", SSH_KEYGEN), ("ssh", shutil.which("ssh")))
        if not path or not os.access(path, os.X_OK)
    ]
    if not missing:
        return
    reason = f"OpenSSH is not installed ({', '.join(missing)} missing): apt-get install {PACKAGES}"
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


def free_port(host: str = HOST) -> int:
    """A free port on ``host`` (127.0.0.2 by default), from this test worker's own block of ports."""
    return support.free_port(host)


def keygen(path: Path) -> str:
    """A new ed25519 key pair at ``path`` (and ``path``.pub); the public key's ``type base64`` part."""
    subprocess.run(
        [SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "", "-C", "kernel-relay-test", "-f", str(path)],
        check=True,
        timeout=30,
    )
    kind, key, *_ = path.with_name(path.name + ".pub").read_text().split()
    return f"{kind} {key}"


@dataclass
@starts_processes
class SSHServer:
    """A running sshd, the files a client needs to log in, and a key it does not accept."""

    directory: Path
    port: int
    process: subprocess.Popen[bytes]
    identity_file: Path
    known_hosts_file: Path
    refused_identity_file: Path
    user: str
    host: str = HOST

    def provisioner_config(self, **overrides: Any) -> dict[str, Any]:
        """The ``kernel-relay-ssh`` provisioner's config for logging in to this server."""
        return {
            "host": self.host,
            "port": self.port,
            "user": self.user,
            "identity_file": str(self.identity_file),
            "known_hosts_file": str(self.known_hosts_file),
            "connect_timeout": 5,
            **overrides,
        }

    def log(self) -> str:
        return (self.directory / "sshd.log").read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _config(directory: Path, port: int, host_key: Path, extra: list[str]) -> str:
    return "\n".join(
        [
            f"ListenAddress {HOST}",
            f"Port {port}",
            f"HostKey {host_key}",
            f"AuthorizedKeysFile {directory / 'authorized_keys'}",
            f"PidFile {directory / 'sshd.pid'}",
            "StrictModes no",
            "UsePAM no",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "PermitRootLogin prohibit-password",
            "UseDNS no",
            "PrintMotd no",
            "PrintLastLog no",
            "X11Forwarding no",
            "AllowTcpForwarding no",
            "MaxStartups 100",
            "LogLevel INFO",
            *extra,
            "",
        ]
    )


@starts_processes
def start_sshd(directory: Path) -> SSHServer:
    """Generate the keys and config in ``directory`` and start sshd; it listens when this returns."""
    require_openssh()
    directory.mkdir(parents=True, exist_ok=True)
    # sshd's privilege separation directory (Debian's service creates it at boot; a container may lack it).
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    host_key = directory / "host_key"
    host_public = keygen(host_key)
    client_public = keygen(directory / "client_key")
    keygen(directory / "refused_key")
    (directory / "authorized_keys").write_text(client_public + "\n")
    port = free_port()
    (directory / "known_hosts").write_text(f"[{HOST}]:{port} {host_public}\n")
    config = directory / "sshd_config"
    # OpenSSH 9.8+ penalizes a source address for failed logins, which would turn the refused-key test
    # into refusals of every later connection from loopback; older servers do not know the option.
    config.write_text(_config(directory, port, host_key, ["PerSourcePenalties no"]))
    check = subprocess.run(
        [SSHD, "-t", "-f", str(config)], capture_output=True, text=True, timeout=30
    )
    if check.returncode != 0 and "PerSourcePenalties" in check.stderr:
        config.write_text(_config(directory, port, host_key, []))
        check = subprocess.run(
            [SSHD, "-t", "-f", str(config)], capture_output=True, text=True, timeout=30
        )
    assert check.returncode == 0, f"sshd rejects its test config: {check.stderr}"
    log = (directory / "sshd.log").open("wb")
    process = subprocess.Popen(
        [SSHD, "-D", "-e", "-f", str(config)], stdout=log, stderr=subprocess.STDOUT
    )
    log.close()
    server = SSHServer(
        directory=directory,
        port=port,
        process=process,
        identity_file=directory / "client_key",
        known_hosts_file=directory / "known_hosts",
        refused_identity_file=directory / "refused_key",
        user=getpass.getuser(),
    )
    deadline = time.monotonic() + 15
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"sshd exited with {process.returncode}:\n{server.log()}")
        try:
            with socket.create_connection((HOST, port), timeout=0.5):
                return server
        except OSError:
            if time.monotonic() > deadline:
                server.stop()
                raise TimeoutError(
                    f"sshd did not listen on {HOST}:{port}:\n{server.log()}"
                ) from None
            time.sleep(0.05)

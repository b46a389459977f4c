# -*- test-case-name: tests.e2e.test_ssh_provisioner -*-
"""
Kernels on another host, reached with the system's ``ssh`` client: a jupyter_client kernel provisioner,
registered as ``kernel-relay-ssh``. The relay needs no option for it; a kernelspec selects it::

    {
      "argv": ["python3", "-m", "ipykernel_launcher", "-f", "{connection_file}"],
      "display_name": "Python on gpu1",
      "language": "python",
      "metadata": {
        "supported_encryption": ["curve"],
        "kernel_provisioner": {
          "provisioner_name": "kernel-relay-ssh",
          "config": {"host": "gpu1.example.org", "user": "jupyter",
                     "identity_file": "/etc/kernel-relay/id_ed25519",
                     "known_hosts_file": "/etc/kernel-relay/known_hosts",
                     "python": "/opt/conda/bin/python"}
        }
      }
    }

The kernelspec's ``argv`` runs on the host: ``{connection_file}`` is the connection file's path there,
``{python}`` and a bare ``python``/``python3`` first word are ``python`` below; other fields (``{prefix}``,
``{resource_dir}``) name local paths and are left as they are. The kernel's environment is the remote login's,
plus the kernelspec's ``env`` and the launch's ``KERNEL_*`` variables (what clients may set; not the relay's
own ``KERNEL_RELAY_*``) and ``JPY_SESSION_NAME``: never the relay's environment. They travel on the ssh
command line, so a process list on either host shows them.

``config`` (all optional but ``host``):

``host``
    The host to run kernels on: a name or an address. The relay connects to the kernel's ZeroMQ ports there,
    so it must be reachable from the relay on every port (or see ``kernel_ip``).
``port`` (22), ``user`` (ssh's default: the relay's user or ``~/.ssh/config``'s)
    Where ssh logs in.
``identity_file`` (ssh's default keys)
    The private key to log in with; only that key is offered.
``known_hosts_file`` (ssh's default files)
    The known_hosts file that must hold the host's key (``StrictHostKeyChecking=yes``: an unknown or changed
    host key fails, nothing is added).
``python`` (``python3``)
    The remote Python: used to find free ports on the host, and put into ``argv`` as said above.
``remote_dir`` (``.kernel-relay``, in the remote user's home directory)
    Where connection files are written on the host: made mode 0700, each file 0600, removed again once its
    kernel has stopped (and the directory too, when nothing else is left in it).
``kernel_ip`` (the address ``host`` resolves to, here)
    The address in the connection info: the kernel binds its ports on it and the relay connects to it.
``connect_timeout`` (10)
    Seconds for ssh to connect (also its keep-alive interval: a dead connection is noticed after 3 of them).
``exit_with_connection`` (true)
    The kernel is killed (its whole process group) when the ssh session that started it ends: the relay
    keeps the session's stdin open, and a small watcher on the host waits for its end. So a relay killed
    without a chance to stop its kernels, or a lost connection, leaves nothing running on the host, whatever
    the kernel. Set it to false to let kernels outlive their connection, for another process to take them
    over (see below); a launch with jupyter_client's ``independent=True`` (what a fleet's relays ask for)
    does so too.
``ssh_command`` (``ssh``)
    The ssh client.

Every ssh call runs with ``BatchMode=yes`` (no prompt ever), the configured key and known hosts, a connect
timeout and no connection sharing (``ControlMaster=no``: each call is one ssh process, gone when it ends).
A host that cannot be reached, refuses the key or shows an unknown host key fails the start with a message
that names the host and says which (the relay answers it as the spawn's error).

How the kernel is run and watched: ``pre_launch`` makes the remote directory and has the remote Python pick
five free ports, and lets jupyter_client write the connection file with the host's address, jupyter_client's
key and, when the relay runs with ``--kernel-encryption auto`` and the kernelspec declares ``curve``, the
CurveZMQ keys (which jupyter_client 8.10's own LocalProvisioner makes in its ``pre_launch``; this one makes
them the same way). ``launch_kernel`` runs one ssh session that writes the file on the host and then
``exec``\\ s the kernel, printing its pid first; that ssh process lives as long as the kernel, so its exit is
the kernel's, and the kernel's output comes through it into the relay's log (an untied kernel, see
``exit_with_connection``, writes it to ``<connection file>.log`` on the host instead). Signals (interrupt, terminate, kill) are ``kill -s SIG`` over ssh, to the kernel's process group,
after checking that the pid still is the kernel of this connection file. A restart keeps the ports, key,
CurveZMQ keys and connection file. The remote pid is ``remote_pid``, never ``pid``: the relay signals a
provisioner's ``pid`` as a local process.

``get_provisioner_info``/``load_provisioner_info`` carry the host, the ssh settings, the remote pid and paths
(and the connection info), so a provisioner in another process (or later in this one) can poll, signal, kill
and clean up the same remote kernel; without the ssh session it asks the host each time.
"""

from __future__ import annotations

import asyncio
import json
import os
import posixpath
import signal
import time
from typing import Any, cast

import zmq
from jupyter_client.connect import KernelConnectionInfo
from jupyter_client.provisioning.provisioner_base import KernelProvisionerBase
from traitlets import Bool, Float, Integer, Unicode
from twisted.logger import Logger

from ..jupyter_client_internals import encryption_policy, kernelspec_supports_curve
from ._errors import KernelLaunchError
from ._ssh_commands import (
    LAUNCH_SCRIPT,
    SSH_FAILED,
    SSHTarget,
    launch_arguments,
    remote_argv,
    remote_environment,
)
from ._ssh_host import ask, prepare, remove_connection_file, resolve
from ._ssh_session import KernelSession, SSHCommandError

_log = Logger()

#: The connection info's port names, in the order PREPARE_SCRIPT's ports are given out.
PORT_NAMES = ("shell_port", "iopub_port", "stdin_port", "control_port", "hb_port")
#: Seconds a kernel sent SIGTERM or SIGKILL has to end its ssh session before the host is asked about it.
SIGNAL_GRACE = 2.0
#: Fewest seconds between two questions to the host about a kernel whose session is not ours.
PROBE_INTERVAL = 0.5


class SSHProvisioner(KernelProvisionerBase):
    """A kernel on another host, started, signalled and watched through ssh (see the module's docstring)."""

    host = Unicode("", config=True, help="The host that runs the kernel.")
    port = Integer(22, config=True, help="ssh's port on the host.")
    user = Unicode("", config=True, help="The user to log in as (ssh's default if empty).")
    identity_file = Unicode("", config=True, help="The private key to log in with.")
    known_hosts_file = Unicode("", config=True, help="The known_hosts file with the host's key.")
    python = Unicode("python3", config=True, help="The Python interpreter on the host.")
    remote_dir = Unicode(
        ".kernel-relay", config=True, help="The host's directory for connection files."
    )
    kernel_ip = Unicode("", config=True, help="The kernel's address (default: the host's).")
    connect_timeout = Float(10.0, config=True, help="Seconds for ssh to connect.")
    exit_with_connection = Bool(
        True, config=True, help="Whether the kernel is killed when its ssh session ends."
    )
    ssh_command = Unicode("ssh", config=True, help="The ssh client.")

    remote_pid: int | None = None
    """The kernel's pid on the host while it runs (not ``pid``, which the relay takes for a local one)."""
    remote_connection_file: str | None = None
    """The connection file's path on the host."""
    remote_directory: str | None = None
    """``remote_dir`` as an absolute path on the host, once made."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.connection_info: KernelConnectionInfo = {}
        self._address: str | None = None
        self._session: KernelSession | None = None
        self._file_written = False
        self._signalled: tuple[int, float] | None = None
        """The last SIGTERM or SIGKILL sent, and when."""
        self._last_probe = 0.0
        self._exit_code: int | None = None

    # -- what the kernel manager asks --------------------------------------------------------------

    @property
    def has_process(self) -> bool:
        return self.remote_pid is not None

    async def pre_launch(self, **kwargs: Any) -> dict[str, Any]:
        """
        Prepare the host once (directory, ports), write the connection file locally through the kernel
        manager (with CurveZMQ keys when encryption applies), and build the remote command.
        """
        km = self.parent
        if km is None:
            raise KernelLaunchError("the ssh provisioner runs only under a kernel manager")
        if km.transport != "tcp":
            raise KernelLaunchError(
                f"kernels on {self.host or 'another host'} need the tcp transport (the relay's "
                "--kernel-transport tcp), not ipc"
            )
        target = self._target()
        kwargs.pop("transport_encryption", None)
        extra_arguments = list(kwargs.pop("extra_arguments", None) or [])
        if self.remote_directory is None or self._address is None:
            # The first start; a restart keeps the ports (and the key and file) of the first.
            address = self.kernel_ip or resolve(target)
            directory, ports = prepare(target, self.remote_dir, self.python, address)
            self._address, self.remote_directory = address, directory
            for name, port in zip(PORT_NAMES, ports, strict=True):
                setattr(km, name, port)
        km.ip = self._address
        _provide_curve_keys(km)
        if "env" in kwargs:
            km.write_connection_file(jupyter_session=kwargs["env"].get("JPY_SESSION_NAME", ""))
        else:
            km.write_connection_file()
        self.connection_info = km.get_connection_info()
        self.remote_connection_file = posixpath.join(
            self.remote_directory, os.path.basename(km.connection_file)
        )
        try:
            cmd = remote_argv(
                [*self.kernel_spec.argv, *extra_arguments],
                self.remote_connection_file,
                self.python,
            )
        except ValueError as exc:
            raise KernelLaunchError(str(exc)) from None
        return await super().pre_launch(cmd=cmd, **kwargs)  # type: ignore[no-any-return]

    async def launch_kernel(self, cmd: list[str], **kwargs: Any) -> KernelConnectionInfo:
        """Write the connection file on the host and start the kernel there, in one ssh session."""
        km = self.parent
        assert km is not None and self.remote_directory and self.remote_connection_file
        with open(km.connection_file, "rb") as file:
            # One line, as LAUNCH_SCRIPT reads it (JSON escapes any newline inside a value).
            contents = json.dumps(json.load(file), separators=(",", ":")).encode() + b"\n"
        env = remote_environment(kwargs.get("env") or {}, list(self.kernel_spec.env or {}))
        # jupyter_client's ``independent`` launch (a fleet's kernels outlive their relay) overrides it.
        tied = bool(self.exit_with_connection) and not kwargs.get("independent", False)
        arguments = launch_arguments(
            self.remote_directory, self.remote_connection_file, tied, env, cmd
        )
        self._file_written = True
        self._session, self.remote_pid = KernelSession.start(
            self._target(),
            str(self.kernel_id),
            LAUNCH_SCRIPT,
            arguments,
            contents,
            tied,
            # ps shows which kernel an ssh process (here) and its shell and watcher (there) belong to.
            label=posixpath.basename(self.remote_connection_file),
        )
        self._signalled = None
        self._exit_code = None
        _log.info(
            "kernel {kernel_id} runs on {host} as pid {pid}",
            kernel_id=self.kernel_id,
            host=self._target().name,
            pid=self.remote_pid,
        )
        return self.connection_info

    async def poll(self) -> int | None:
        """
        None while the kernel runs. Our ssh session's exit is the kernel's; when it says nothing certain
        (255: ssh failed or the kernel was killed; a session that lingers after a kill; no session of
        ours), the host is asked whether the pid still is the kernel.
        """
        if self.remote_pid is None:
            return self._exit_code if self._exit_code is not None else 0
        session = self._session
        if session is not None:
            code = session.returncode
            if code is None:
                if self._signalled is None or time.monotonic() - self._signalled[1] < SIGNAL_GRACE:
                    return None
            elif code != SSH_FAILED:
                self._release()
                return self._exited(code)
            else:
                self._release()  # the session is gone: from now on the host is asked
        elif time.monotonic() - self._last_probe < PROBE_INTERVAL:
            return None
        self._last_probe = time.monotonic()
        try:
            alive = self._ask("look for the kernel", "")
        except SSHCommandError as exc:
            _log.warn(
                "kernel {kernel_id} taken for gone: {error}", kernel_id=self.kernel_id, error=exc
            )
            alive = False
        if alive:
            return None
        self._release()
        return self._exited(-self._signalled[0] if self._signalled else SSH_FAILED)

    async def wait(self) -> int | None:
        """Wait until the kernel is gone; then release its ssh session (``has_process`` becomes False)."""
        while (code := await self.poll()) is None:
            await asyncio.sleep(0.1)
        self._release()
        return code

    async def send_signal(self, signum: int) -> None:
        """``kill -s SIG`` on the host, to the kernel's process group; nothing if it is gone already."""
        if self.remote_pid is None:
            return
        name = signal.Signals(signum).name.removeprefix("SIG")
        if signum in (signal.SIGTERM, signal.SIGKILL):
            self._signalled = (signum, time.monotonic())
        self._ask(f"send SIG{name} to the kernel", name)

    async def kill(self, restart: bool = False) -> None:
        await self._end(signal.SIGKILL)

    async def terminate(self, restart: bool = False) -> None:
        await self._end(signal.SIGTERM)

    async def cleanup(self, restart: bool = False) -> None:
        """
        Close our ssh session if it still runs; unless restarting, remove the connection file on the host.
        """
        session, self._session = self._session, None
        if session is not None:
            session.close()
        if restart or not self._file_written or not self.remote_connection_file:
            return
        self._file_written = False
        try:
            remove_connection_file(
                self._target(),
                self.remote_connection_file,
                self.remote_directory or posixpath.dirname(self.remote_connection_file),
            )
        except SSHCommandError as exc:
            _log.warn("{error}", error=exc)

    async def get_provisioner_info(self) -> dict[str, Any]:
        """What another provisioner needs to manage this kernel: JSON values only."""
        info: dict[str, Any] = await super().get_provisioner_info()
        connection: dict[str, Any] = dict(self.connection_info)
        key = connection.get("key")
        if isinstance(key, bytes):
            connection["key"] = key.decode()
        info["connection_info"] = connection
        info.update(
            {
                "host": self.host,
                "port": self.port,
                "user": self.user,
                "identity_file": self.identity_file,
                "known_hosts_file": self.known_hosts_file,
                "python": self.python,
                "remote_dir": self.remote_dir,
                "remote_directory": self.remote_directory,
                "remote_connection_file": self.remote_connection_file,
                "remote_pid": self.remote_pid,
                "kernel_ip": self._address or self.kernel_ip,
                "connect_timeout": self.connect_timeout,
                "exit_with_connection": self.exit_with_connection,
                "ssh_command": self.ssh_command,
            }
        )
        return info

    async def load_provisioner_info(self, provisioner_info: dict[str, Any]) -> None:
        """Take over a kernel from another provisioner's ``get_provisioner_info``; it has no ssh session."""
        await super().load_provisioner_info(provisioner_info)
        for name in (
            "host",
            "port",
            "user",
            "identity_file",
            "known_hosts_file",
            "python",
            "remote_dir",
            "connect_timeout",
            "exit_with_connection",
            "ssh_command",
        ):
            if name in provisioner_info:
                setattr(self, name, provisioner_info[name])
        self.remote_directory = provisioner_info.get("remote_directory")
        self.remote_connection_file = provisioner_info.get("remote_connection_file")
        pid = provisioner_info.get("remote_pid")
        self.remote_pid = pid if isinstance(pid, int) else None
        self._address = provisioner_info.get("kernel_ip") or None
        self.connection_info = cast(Any, dict(provisioner_info.get("connection_info") or {}))
        self._file_written = self.remote_connection_file is not None
        self._session = None

    # -- the work --------------------------------------------------------------------------------------

    def _target(self) -> SSHTarget:
        try:
            return SSHTarget(
                host=self.host,
                port=int(self.port),
                user=self.user,
                identity_file=self.identity_file,
                known_hosts_file=self.known_hosts_file,
                connect_timeout=float(self.connect_timeout),
                ssh=self.ssh_command,
            )
        except ValueError as exc:
            raise KernelLaunchError(str(exc)) from None

    def _ask(self, doing: str, signal_name: str) -> bool:
        """Run SIGNAL_SCRIPT for the kernel: is it alive (after the signal, if one is named)?"""
        assert self.remote_pid is not None and self.remote_connection_file is not None
        return ask(self._target(), doing, self.remote_pid, self.remote_connection_file, signal_name)

    async def _end(self, signum: int) -> None:
        """Terminate or kill; when the host cannot be told, drop the connection (which ends ipykernel)."""
        if self.remote_pid is None:
            return
        try:
            await self.send_signal(signum)
        except SSHCommandError as exc:
            _log.warn(
                "kernel {kernel_id}: {error}; dropping its connection",
                kernel_id=self.kernel_id,
                error=exc,
            )
            session, self._session = self._session, None
            if session is not None:
                session.close()
            self._exited(SSH_FAILED)

    def _exited(self, code: int) -> int:
        """The kernel is gone, with this exit status: forget its pid."""
        self._exit_code = code
        self.remote_pid = None
        return code

    def _release(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            session.close()


def _provide_curve_keys(km: Any) -> None:
    """
    Give the kernel manager CurveZMQ keys, as jupyter_client's LocalProvisioner does, when its
    ``transport_encryption`` policy is ``auto`` and the kernelspec declares ``curve``, or ``required``;
    a restart keeps the keys it has.
    """
    policy = encryption_policy(km)
    if policy not in ("auto", "required") or getattr(km, "curve_publickey", None) is not None:
        return
    if policy == "required" or kernelspec_supports_curve(km):
        km.curve_publickey, km.curve_secretkey = zmq.curve_keypair()


__all__ = ["SSHProvisioner"]

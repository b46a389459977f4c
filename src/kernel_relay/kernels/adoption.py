# -*- test-case-name: tests.kernels.test_adoption -*-
"""
Blocking jupyter_client work for kernels that outlive their relay (a fleet): what a kernel's record must hold
for another relay to manage it, and rebuilding its manager from that record. Run only in worker threads.

A local kernel whose relay died is no child of the relay that adopts it, so jupyter_client's
``LocalProvisioner`` (which polls and signals its ``Popen``) is given an :class:`OrphanProcess` in its place:
the same calls, made on the process id, which is checked against the process's start time so that a reused
pid is never taken for the kernel. Before that, the process must be the kernel's: its start time is the one the
record gives and its command line names the kernel's connection file, so that a record naming another process
(a bug, or a forgery) never has that process adopted, signalled or killed.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final, cast

from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel
from jupyter_client.manager import KernelManager
from jupyter_client.provisioning.factory import KernelProvisionerFactory
from jupyter_client.provisioning.local_provisioner import LocalProvisioner
from jupyter_core.utils import run_sync

from ..jupyter_client_internals import connect_control_socket, mark_started
from ._errors import KernelLaunchError, UnknownKernelSpec
from ._process_group import stat_fields
from ._runtime import connection_dir
from ._sandbox import Sandbox, SandboxedKernelManager, environment, scrubbed

#: What a client may set in a kernel's environment whatever the relay's options (as POST /api/kernels).
KERNEL_ENV: Final = re.compile(r"KERNEL_[A-Za-z0-9_]{1,128}")


class KernelGone(KernelLaunchError):
    """The kernel to take over has no process any more (it died with its relay, or since)."""


def this_host() -> str:
    """Names this machine's running system: local kernels can be adopted only by relays on the same one."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        boot = ""
    return f"{socket.gethostname()}/{boot}"


def kernel_env(env: Mapping[str, Any], allowed: frozenset[str] = frozenset()) -> dict[str, str]:
    """The part of a kernel's recorded ``env`` that a restart may use: ``KERNEL_*`` and ``allowed`` names."""
    return {
        name: value
        for name, value in env.items()
        if (KERNEL_ENV.fullmatch(name) or name in allowed)
        and isinstance(value, str)
        and "\x00" not in value
    }


def command_line(pid: int) -> list[str]:
    """A process's arguments (from /proc), empty when it cannot be read."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode("utf-8", "replace") for part in raw.split(b"\x00") if part]


def is_kernel_process(pid: int, started: str, kernel_id: str) -> bool:
    """Whether ``pid`` is kernel ``kernel_id``'s process: started then, and run with its connection file."""
    if start_time(pid) != started:
        return False
    name = f"kernel-{kernel_id}.json"
    return any(part.endswith(name) for part in command_line(pid))


def start_time(pid: int) -> str | None:
    """When the process started (ticks since boot, from /proc), None if there is no such live process."""
    fields = stat_fields(pid)
    if fields is None:
        return None
    return fields[19] if len(fields) > 19 else ""


class OrphanProcess:
    """The part of ``subprocess.Popen`` that LocalProvisioner uses, for a process that is not our child."""

    stdin = stdout = stderr = None

    def __init__(self, pid: int, started: str | None) -> None:
        self.pid = pid
        self._started = started
        self._gone = False
        self.returncode: int | None = None
        """Unknown: only a parent learns a process's exit code (the death watch says "gone")."""

    def poll(self) -> int | None:
        if not self._gone:
            now = start_time(self.pid)
            self._gone = now is None or (self._started is not None and now != self._started)
        return 1 if self._gone else None

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"process {self.pid} is still running")
            time.sleep(0.05)
        return 1

    def send_signal(self, signum: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, signum)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)


def _plain(value: Any) -> Any:
    """``value`` as JSON can hold it: keys (bytes) as text."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def describe(manager: KernelManager) -> dict[str, Any]:
    """What another relay needs to take a kernel over: its connection info (keys included) and provisioner's."""
    connection = _plain(dict(manager.get_connection_info(session=False)))
    provisioner: dict[str, Any] = {}
    if manager.provisioner is not None:
        provisioner = _plain(dict(run_sync(manager.provisioner.get_provisioner_info)()))
    pid = provisioner.get("pid")
    sandboxed = bool(getattr(manager, "sandboxed", False))
    # Guests show it in their kernel model; an adopter relaunches it in the same sandbox.
    connection["sandboxed"] = sandboxed
    sandbox = getattr(manager, "sandbox", None)
    return {
        "connection": connection,
        "provisioner": provisioner,
        "host": this_host(),
        "started": start_time(pid) if isinstance(pid, int) else None,
        "sandbox": sandbox.to_record() if sandboxed and isinstance(sandbox, Sandbox) else None,
    }


def _take_process(
    provisioner: LocalProvisioner,
    kernel_id: str,
    record: Mapping[str, Any],
    provisioner_info: Mapping[str, Any],
) -> None:
    """Give a local kernel's provisioner its process, once it is shown to be that kernel's, on this machine."""
    if record.get("host") != this_host():
        raise KernelLaunchError(
            f"kernel {kernel_id} is a local kernel of another machine ({record.get('host')}): only a "
            "relay on that machine can manage its process"
        )
    pid = provisioner_info.get("pid")
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 1 or start_time(pid) is None:
        raise KernelGone(f"kernel {kernel_id}'s process ({pid}) is gone")
    started = record.get("started")
    if not isinstance(started, str) or not is_kernel_process(pid, started, kernel_id):
        raise KernelGone(
            f"kernel {kernel_id}'s process ({pid}) is gone: process {pid} is not that kernel "
            "(its start time or command line differ)"
        )
    provisioner.process = cast(Any, OrphanProcess(pid, started))
    # Its ports are the kernel's: a restart must not pick new ones (its clients' sockets stay on these).
    provisioner.ports_cached = True


def rebuild(
    ksm: KernelSpecManager,
    spec_name: str,
    kernel_id: str,
    record: Mapping[str, Any],
    shutdown_timeout: float,
    env: Mapping[str, str] | None = None,
    encryption: str = "disabled",
) -> KernelManager:
    """
    A manager of a running kernel that another relay started, built from its ``describe`` record. Raises
    KernelLaunchError when the kernel cannot be managed from here (another machine's local kernel, a process
    that is gone).
    """
    try:
        spec = ksm.get_kernel_spec(spec_name)
    except NoSuchKernel:
        raise UnknownKernelSpec(f"no kernel spec named {spec_name!r} on this relay") from None
    provisioner_info = dict(record.get("provisioner") or {})
    manager = SandboxedKernelManager(
        kernel_name=spec_name,
        kernel_spec_manager=ksm,
        kernel_id=kernel_id,
        connection_file=os.path.join(str(connection_dir()), f"kernel-{kernel_id}.json"),
        shutdown_wait_time=shutdown_timeout,
        transport_encryption=encryption,
    )
    sandbox_record = record.get("sandbox")
    if isinstance(sandbox_record, dict):
        try:
            manager.sandbox = Sandbox.from_record(sandbox_record, independent=True)
        except (KeyError, TypeError, ValueError) as exc:
            raise KernelLaunchError(
                f"kernel {kernel_id}'s sandbox record is unreadable: {exc}"
            ) from exc
    manager.load_connection_info(cast(Any, dict(record["connection"])))
    provisioner = KernelProvisionerFactory.instance(
        parent=manager.parent
    ).create_provisioner_instance(kernel_id, spec, parent=manager)
    run_sync(provisioner.load_provisioner_info)(provisioner_info)
    if isinstance(provisioner, LocalProvisioner):
        _take_process(provisioner, kernel_id, record, provisioner_info)
    manager.provisioner = provisioner
    # As after start_kernel: each later call (shutdown, restart) gets a fresh ``ready`` future, and a restart
    # launches again as the first launch did: independent of this relay, with the same extra env.
    launch_args: dict[str, Any] = {"independent": True}
    launch_args["env"] = (
        environment(os.environ, env) if manager.sandbox is not None else scrubbed(os.environ, env)
    )
    mark_started(manager, launch_args)
    manager.write_connection_file()
    connect_control_socket(manager)
    return manager


__all__ = [
    "KernelGone",
    "OrphanProcess",
    "describe",
    "is_kernel_process",
    "kernel_env",
    "rebuild",
    "start_time",
    "this_host",
]

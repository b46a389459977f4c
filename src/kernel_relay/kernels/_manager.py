"""
Blocking jupyter_client work, run only in worker threads (never on the reactor thread).

Each function takes and returns plain values so the registry can call it through
``deferToThreadPool``; exceptions are turned into the layer's user-readable errors here.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel
from jupyter_client.manager import KernelManager
from twisted.logger import Logger

from ..jupyter_client_internals import close_control_socket
from ._errors import KernelLaunchError, KernelShutdownError, UnknownKernelSpec
from ._output import capture, pipes
from ._runtime import connection_dir
from ._sandbox import (
    Box,
    Sandbox,
    SandboxedKernelManager,
    SandboxPolicy,
    environment,
    scrubbed,
    unavailable,
)

_log = Logger()

#: The longest ipc socket prefix: a UNIX socket path holds 107 bytes, and "-<port>" follows the prefix.
IPC_PATH_LIMIT = 100


def list_specs(ksm: KernelSpecManager) -> list[tuple[str, str, str, dict[str, Any], str]]:
    """
    (name, display_name, language, kernel.json as jupyter_client reads it, resource directory) of every
    installed kernelspec, sorted by name.
    """
    found: dict[str, Any] = ksm.get_all_specs()
    result = []
    for name, entry in found.items():
        spec = entry.get("spec", {}) if isinstance(entry, dict) else {}
        resource_dir = entry.get("resource_dir", "") if isinstance(entry, dict) else ""
        result.append(
            (
                name,
                str(spec.get("display_name", name)),
                str(spec.get("language", "")),
                dict(spec),
                str(resource_dir),
            )
        )
    return sorted(result, key=lambda row: row[0])


def launch(
    ksm: KernelSpecManager,
    spec_name: str,
    kernel_id: str,
    shutdown_timeout: float,
    env: Mapping[str, str] | None = None,
    encryption: str = "disabled",
    transport: str = "tcp",
    independent: bool = False,
    sandbox: SandboxPolicy | None = None,
) -> KernelManager:
    """
    Start a kernel through its provisioner; the manager returned owns the process. ``env`` is added to the
    relay's own environment for the kernel (the caller has checked its names). ``encryption`` is
    jupyter_client's ``transport_encryption``: ``auto`` gives the kernel CurveZMQ keys when its kernelspec
    declares ``curve`` in ``metadata.supported_encryption``, ``required`` refuses a kernelspec that does not.
    ``transport`` ``ipc`` puts the kernel's channels on UNIX sockets beside its connection file, in the
    relay's private directory (only a local kernel can use it). An ``independent`` kernel does not exit
    when the relay does (a fleet's kernels outlive their relay, to be adopted by another). ``sandbox`` says
    whether and how a local kernel is sandboxed (see ``_sandbox``); a sandboxed kernel without the host's
    network gets the ipc transport whatever ``transport`` says. The relay's own variables (``KERNEL_RELAY_*``)
    never reach a kernel.
    """
    spec = _checked_spec(ksm, spec_name, encryption)
    # Named like Jupyter Server's, in the relay's own directory (see _runtime), so operators can find (and
    # `jupyter console --existing`) a relay's kernel by its id.
    try:
        runtime_dir = str(connection_dir())
    except OSError as exc:
        raise KernelLaunchError(
            f"cannot create the relay's connection-file directory: {exc}"
        ) from exc
    contained = _sandbox_for(spec, spec_name, kernel_id, sandbox or SandboxPolicy(), independent)
    transport_options = _transport_options(contained, transport, runtime_dir, kernel_id)
    manager = SandboxedKernelManager(
        kernel_name=spec_name,
        kernel_spec_manager=ksm,
        kernel_id=kernel_id,
        connection_file=os.path.join(runtime_dir, f"kernel-{kernel_id}.json"),
        shutdown_wait_time=shutdown_timeout,
        transport_encryption=encryption,
        **transport_options,
    )
    manager.sandbox = contained
    try:
        _start(manager, spec, kernel_id, runtime_dir, env, independent)
    except Exception as exc:
        _log.failure("kernel {spec_name} failed to start", spec_name=spec_name)
        try:
            kill(manager)
        except Exception:
            _log.failure("cleaning up the failed kernel {spec_name} failed", spec_name=spec_name)
        if contained is not None:
            contained.box.remove()
        raise KernelLaunchError(f"could not start a {spec_name!r} kernel: {exc}") from exc
    return manager


def _checked_spec(ksm: KernelSpecManager, spec_name: str, encryption: str) -> Any:
    """The kernelspec ``spec_name``, refused when ``encryption`` is required and it does not declare curve."""
    try:
        spec = ksm.get_kernel_spec(spec_name)
    except NoSuchKernel:
        raise UnknownKernelSpec(f"no kernel spec named {spec_name!r}") from None
    if encryption == "required" and not declares_curve(spec.metadata):
        raise KernelLaunchError(
            f"the {spec_name!r} kernelspec does not declare CurveZMQ support (metadata.supported_encryption "
            "has no 'curve'), and --kernel-encryption is required: start the relay with "
            "--kernel-encryption auto to let it run unencrypted"
        )
    return spec


def _transport_options(
    contained: Sandbox | None, transport: str, runtime_dir: str, kernel_id: str
) -> dict[str, str]:
    """The kernel manager's ``transport`` and ``ip`` for UNIX sockets, or nothing for tcp's defaults."""
    if contained is not None and (contained.network == "none" or transport == "ipc"):
        # Without a network its channels can only be UNIX sockets; and only its box is shared with it.
        prefix = contained.box.ipc_prefix
        if len(prefix.encode()) > IPC_PATH_LIMIT:
            contained.box.remove()
            raise KernelLaunchError(
                f"a sandboxed kernel's sockets would be {prefix!r}, too long a path for a UNIX socket: "
                "set XDG_RUNTIME_DIR to a shorter path"
            )
        return {"transport": "ipc", "ip": prefix}
    if transport == "ipc":
        # UNIX socket paths are short (108 bytes): the sockets are named by the id's first block.
        prefix = os.path.join(runtime_dir, kernel_id.split("-", 1)[0])
        if len(prefix.encode()) > IPC_PATH_LIMIT:
            raise KernelLaunchError(
                f"the ipc transport needs a shorter runtime directory than {runtime_dir!r} (UNIX socket "
                "paths are limited): set JUPYTER_RUNTIME_DIR to a shorter path, or use --kernel-transport tcp"
            )
        return {"transport": "ipc", "ip": prefix}
    return {}


def _start(
    manager: SandboxedKernelManager,
    spec: Any,
    kernel_id: str,
    runtime_dir: str,
    env: Mapping[str, str] | None,
    independent: bool,
) -> None:
    """Start the kernel: its environment, where its output goes; then close the control socket."""
    local = _is_local(spec)
    options: dict[str, Any] = {"independent": True} if independent else {}
    options["env"] = (
        environment(os.environ, env) if manager.sandbox is not None else scrubbed(os.environ, env)
    )
    if local and independent:
        # Kept open with the manager: a restart starts the kernel again with the same arguments.
        output = open(os.path.join(runtime_dir, f"kernel-{kernel_id}.log"), "ab")
        options.update(stdout=output, stderr=output)
    elif local:
        options.update(pipes())
    manager.start_kernel(**options)
    if local and not independent:
        capture(kernel_id, getattr(manager.provisioner, "process", None))
    # jupyter_client keeps a control socket open for a polite shutdown, and opens one again when it
    # needs it: closed, an idle kernel costs the relay only its own iopub and heartbeat sockets.
    close_control_socket(manager)


def _is_local(spec: Any) -> bool:
    """Whether a kernelspec's kernels run here (jupyter_client's local provisioner), not on an ssh host."""
    metadata = spec.metadata if isinstance(spec.metadata, dict) else {}
    provisioner = metadata.get("kernel_provisioner")
    name = provisioner.get("provisioner_name") if isinstance(provisioner, dict) else None
    return name in (None, "local-provisioner")


def _sandbox_for(
    spec: Any, spec_name: str, kernel_id: str, policy: SandboxPolicy, independent: bool
) -> Sandbox | None:
    """The sandbox of a new kernel, or None (``off``, another provisioner's, or none possible in ``auto``)."""
    if policy.mode == "off":
        return None
    if not _is_local(spec):
        _log.info(
            "kernel {kernel_id} ({spec_name!r}) runs where its provisioner starts it, outside the sandbox",
            kernel_id=kernel_id,
            spec_name=spec_name,
        )
        return None
    reason = unavailable()
    if reason is not None:
        if policy.mode == "required":
            raise KernelLaunchError(
                f"cannot sandbox the {spec_name!r} kernel ({reason}), and --kernel-sandbox is required"
            )
        _log.warn(
            "KERNEL {kernel_id} ({spec_name!r}) RUNS UNSANDBOXED: {reason}. It can read the relay's and "
            "other kernels' files and reach the network; --kernel-sandbox required refuses to start it",
            kernel_id=kernel_id,
            spec_name=spec_name,
            reason=reason,
        )
        return None
    limits = policy.limits.for_spec(spec.metadata)
    try:
        box = Box.make(kernel_id)
    except OSError as exc:
        raise KernelLaunchError(f"cannot make the kernel's sandbox directory: {exc}") from exc
    return Sandbox(box, limits, policy.network, independent)


def declares_curve(metadata: Any) -> bool:
    """Whether a kernelspec's metadata declares CurveZMQ support (``supported_encryption``)."""
    declared = metadata.get("supported_encryption") if isinstance(metadata, dict) else None
    if isinstance(declared, str):
        declared = [declared]
    return isinstance(declared, list | tuple) and any(
        str(item).strip().lower() == "curve" for item in declared
    )


def connection_details(manager: KernelManager) -> tuple[dict[str, Any], int | None, str]:
    """Connection info, local pid (when there is one) and connection file of a started kernel."""
    info: dict[str, Any] = dict(manager.get_connection_info(session=False))
    pid = getattr(manager.provisioner, "pid", None)
    info["sandboxed"] = bool(getattr(manager, "sandboxed", False))
    return info, pid if isinstance(pid, int) else None, str(manager.connection_file)


def _is_alive(manager: KernelManager) -> bool:
    survivors = getattr(manager, "survivors", None)
    if callable(survivors) and survivors():
        return True
    return bool(manager.has_kernel and manager.is_alive())


def stop(manager: KernelManager) -> None:
    """
    Polite shutdown: shutdown_request on control, wait, then terminate and kill (jupyter_client's
    ``shutdown_kernel(now=False)``), and remove the connection file. Raises KernelShutdownError only
    when the process is still alive afterwards.
    """
    try:
        manager.shutdown_kernel(now=False)
    except Exception:
        _log.failure("polite shutdown of kernel {kernel_id} failed", kernel_id=manager.kernel_id)
        kill(manager)
    if _is_alive(manager):
        raise KernelShutdownError(f"kernel {manager.kernel_id} could not be stopped")
    _remove_box(manager)


def _remove_box(manager: KernelManager) -> None:
    """A stopped kernel's sandbox directory goes with it (its home is scratch space, said so in the README)."""
    sandbox = getattr(manager, "sandbox", None)
    if isinstance(sandbox, Sandbox):
        sandbox.box.remove()


def kill(manager: KernelManager) -> None:
    """Kill the kernel now (its whole process group, when local) and release its resources."""
    try:
        manager.shutdown_kernel(now=True)
    except Exception:
        _log.failure("killing kernel {kernel_id} failed", kernel_id=manager.kernel_id)
        try:
            manager.cleanup_resources()
        except Exception:
            _log.failure("cleanup of kernel {kernel_id} failed", kernel_id=manager.kernel_id)
    _remove_connection_file(manager)
    if _is_alive(manager):
        raise KernelShutdownError(f"kernel {manager.kernel_id} could not be killed")
    _remove_box(manager)


def interrupt(manager: KernelManager) -> None:
    """
    Interrupt as the kernelspec says: ``interrupt_mode: "signal"`` (the default) sends SIGINT through the
    provisioner, ``"message"`` sends an ``interrupt_request`` on the control channel.
    """
    try:
        manager.interrupt_kernel()
    except Exception as exc:
        _log.failure("interrupting kernel {kernel_id} failed", kernel_id=manager.kernel_id)
        raise KernelLaunchError(f"could not interrupt kernel {manager.kernel_id}: {exc}") from exc


def restart(manager: KernelManager) -> int | None:
    """
    Stop the kernel politely (as ``stop``) and start it again on the same ports, key and connection file,
    so every ZMQ socket connected to it reconnects on its own; returns the new local pid, if any.
    """
    sandbox = getattr(manager, "sandbox", None)
    if isinstance(sandbox, Sandbox):
        sandbox.box.launching()
    try:
        manager.restart_kernel(now=False)
    except Exception as exc:
        _log.failure("restarting kernel {kernel_id} failed", kernel_id=manager.kernel_id)
        raise KernelLaunchError(f"could not restart kernel {manager.kernel_id}: {exc}") from exc
    process = getattr(manager.provisioner, "process", None)
    if getattr(process, "stderr", None) is not None:  # started with pipes() again
        capture(manager.kernel_id, process)
    pid = getattr(manager.provisioner, "pid", None)
    return pid if isinstance(pid, int) else None


def _remove_connection_file(manager: KernelManager) -> None:
    path = manager.connection_file
    output = os.path.splitext(path)[0] + ".log" if path else None
    if output and os.path.exists(output):  # an independent kernel's output (see _output)
        try:
            os.remove(output)
        except OSError:
            _log.failure("could not remove the kernel's output file {path}", path=output)
    if path and os.path.exists(path):
        try:
            os.remove(path)
        except OSError:
            _log.failure("could not remove connection file {path}", path=path)


def exit_code(manager: KernelManager) -> int | None:
    process = getattr(manager.provisioner, "process", None)
    code = getattr(process, "returncode", None)
    return code if isinstance(code, int) else None


def find_dead(managers: Sequence[tuple[str, KernelManager]]) -> list[tuple[str, int | None]]:
    """Which of these kernels have exited, with exit codes when known: one thread hop per tick."""
    dead = []
    for kernel_id, manager in managers:
        try:
            alive = manager.is_alive()
        except Exception:
            _log.failure("polling kernel {kernel_id} failed", kernel_id=kernel_id)
            continue
        if not alive:
            dead.append((kernel_id, exit_code(manager)))
    return dead

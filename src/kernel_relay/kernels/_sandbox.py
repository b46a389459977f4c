# -*- test-case-name: tests.kernels.test_sandbox -*-
"""
The sandbox around every local kernel (``--kernel-sandbox``), built on bubblewrap (``bwrap``) and rlimits.

A sandboxed kernel runs in its own PID, IPC, UTS and (unless ``--kernel-network host``) network namespaces,
on an empty root where only the system's software (``/usr``, the ``/lib*`` and ``/bin`` links, a few
files of ``/etc``) and the Python prefixes its argv needs are mounted read-only. It gets a private
``/tmp`` (a size-bounded tmpfs), its own ``/proc`` and a writable home (``/home/kernel``, its working
directory). Nothing of the relay's user is mounted: not its home, not its runtime directory, not another
kernel's box. Its channels are UNIX sockets in a directory only it and the relay share (the kernel's *box*,
see ``_boxes``, which also bounds the home's size); CurveZMQ stays on.

When the relay is root, the kernel runs as a uid of its own (``setpriv`` after bwrap's mounts), so that
``RLIMIT_NPROC``, which counts per uid, bounds each kernel alone, and no kernel can signal or read
another's files. Otherwise bwrap makes a user namespace (the kernel keeps the relay's uid outside; since
Linux 5.14 ``RLIMIT_NPROC`` counts per user namespace).

Limits (see ``_limits``) are rlimits set by ``prlimit`` inside the sandbox, so that bwrap itself is not
bound by them.

SIGINT, with which jupyter_client interrupts a kernel (to its whole process group), is ignored by the sh
and bwrap processes around the kernel; ipykernel sets its own handler. A kernel that does not outlive the
relay (``--die-with-parent``) dies with it, instead of through ipykernel's parent poller, which would take
the sandbox's init for a dead parent.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from jupyter_client.manager import KernelManager
from jupyter_client.provisioning.local_provisioner import LocalProvisioner
from jupyter_core.utils import run_sync
from traitlets import default
from twisted.logger import Logger

from ._boxes import Box, box_alive, mount_home
from ._errors import KernelLaunchError, KernelShutdownError
from ._limits import Limits
from ._process_group import end_group, live_members, own_group
from ._zmq import manager_context

_log = Logger()

SANDBOX_POLICIES: Final = ("auto", "required", "off")
NETWORK_POLICIES: Final = ("none", "host")

#: Where a kernel's home (its working directory) is mounted inside its sandbox.
SANDBOX_HOME: Final = "/home/kernel"
#: The relay's environment variables a sandboxed kernel inherits (besides its kernelspec's and a client's).
PASSED_ENV: Final = ("PATH", "LANG", "LANGUAGE", "LC_ALL", "LC_CTYPE", "TZ")
#: What of /etc a kernel may need: the dynamic loader, time zone, locale and TLS certificates, name lookup.
_ETC: Final = (
    "alternatives",
    "ca-certificates",
    "ca-certificates.conf",
    "fonts",
    "host.conf",
    "hosts",
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "locale.alias",
    "locale.conf",
    "localtime",
    "mime.types",
    "nsswitch.conf",
    "resolv.conf",
    "ssl",
    "timezone",
)


@dataclass(frozen=True)
class SandboxPolicy:
    """The relay's sandbox options: ``--kernel-sandbox``, ``--kernel-network`` and ``--kernel-limits``."""

    mode: str = "off"
    network: str = "none"
    limits: Limits = field(default_factory=Limits)


_probed: dict[bool, str | None] = {}
#: The tools' absolute paths, found on the relay's PATH when it probes: never looked up on a kernel's PATH
#: (a client may be allowed to set that), and all in /usr, which every sandbox sees.
_TOOLS: dict[str, str] = {}


def unavailable() -> str | None:
    """Why kernels cannot be sandboxed here (None when they can); tried once per relay, with a real bwrap."""
    root = os.geteuid() == 0
    if root in _probed:
        return _probed[root]
    reason: str | None = None
    for tool in ("bwrap", "prlimit", "setpriv"):
        found = shutil.which(tool)
        if found is not None:
            _TOOLS[tool] = os.path.realpath(found)
    missing = [tool for tool in ("bwrap", "prlimit", "setpriv") if tool not in _TOOLS]
    if missing:
        reason = f"{' and '.join(missing)} not found (install bubblewrap and util-linux)"
    else:
        argv = [*_namespaces(root, "none"), "--ro-bind", "/", "/", "--proc", "/proc", "true"]
        try:
            done = subprocess.run(argv, capture_output=True, timeout=30, check=False)
        except (OSError, subprocess.SubprocessError) as error:
            reason = f"bwrap could not run: {error}"
        else:
            if done.returncode != 0:
                message = done.stderr.decode(errors="replace").strip() or f"exit {done.returncode}"
                reason = f"bwrap could not make namespaces here: {message}"
    _probed[root] = reason
    return reason


def _tool(name: str) -> str:
    return _TOOLS.get(name, name)


def _namespaces(root: bool, network: str) -> list[str]:
    argv = [
        _tool("bwrap"),
        "--unshare-pid",
        "--unshare-ipc",
        "--unshare-uts",
        "--unshare-cgroup-try",
    ]
    if network == "none":
        argv.append("--unshare-net")
    if not root:
        argv.append("--unshare-user")
    return argv


def _python_prefixes(executable: str) -> list[str]:
    """The installation prefixes an executable needs: its own, its symlinks' and a venv's base."""
    found: list[str] = []
    for path in dict.fromkeys([executable, os.path.realpath(executable)]):
        prefix = os.path.dirname(os.path.dirname(os.path.abspath(path)))
        found.append(prefix)
        try:
            config = Path(prefix, "pyvenv.cfg").read_text()
        except OSError:
            continue
        for line in config.splitlines():
            key, _, value = line.partition("=")
            if key.strip() == "home" and value.strip():
                home = value.strip()
                found.append(os.path.dirname(home))
                found.append(os.path.dirname(os.path.realpath(home)))
    return list(dict.fromkeys(found))


def _is_system(path: str) -> bool:
    return any(path == top or path.startswith(top + "/") for top in ("/usr", "/bin", "/lib"))


def software_binds(argv: Sequence[str], env_path: str, resource_dir: str | None) -> list[str]:
    """
    Read-only mounts of what ``argv`` needs beyond the system's: its executable's prefix (a venv and its
    base Python), and the kernelspec's resource directory. Never the relay user's home as a whole.
    """
    executable = shutil.which(argv[0], path=env_path) if argv else None
    if executable is None:
        raise KernelLaunchError(f"the kernel's program {argv[0] if argv else ''!r} was not found")
    paths = [p for p in _python_prefixes(executable) if not _is_system(p)]
    if resource_dir and any(resource_dir in arg for arg in argv):
        paths.append(resource_dir)
    home = os.path.expanduser("~")
    binds: list[str] = []
    for path in dict.fromkeys(paths):
        if not os.path.isdir(path):
            continue
        if path == "/" or home == path or home.startswith(path.rstrip("/") + "/"):
            raise KernelLaunchError(
                f"the kernel's software lives in {path}, which would show the relay user's home to the "
                "kernel: install it elsewhere (a venv outside the home), or start the relay with "
                "--kernel-sandbox off"
            )
        binds += ["--ro-bind", path, path]
    return binds


def _system_binds() -> list[str]:
    binds = ["--ro-bind", "/usr", "/usr"]
    for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        if os.path.islink(top):
            binds += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            binds += ["--ro-bind", top, top]
    for name in _ETC:
        path = f"/etc/{name}"
        if os.path.lexists(path):
            binds += ["--ro-bind-try", path, path]
    return binds


def _parents(destinations: Sequence[str]) -> list[str]:
    """
    The directories above each mount, made traversable (bwrap would copy the mode of the host's: the
    relay's home, 0700, would then stop the kernel's uid on its way to its own sockets).
    """
    made: list[str] = []
    for destination in destinations:
        parts = Path(destination).parent.parts[1:]
        for depth in range(1, len(parts) + 1):
            path = "/" + "/".join(parts[:depth])
            if path not in made:
                made.append(path)
    return [arg for path in made for arg in ("--perms", "0755", "--dir", path)]


def environment(relay_env: Mapping[str, str], extra: Mapping[str, str] | None) -> dict[str, str]:
    """
    A sandboxed kernel's environment: a few of the relay's (``PASSED_ENV``), a home of its own, and what a
    client asked for; its kernelspec's ``env`` is added by jupyter_client.
    """
    env = {name: relay_env[name] for name in PASSED_ENV if name in relay_env}
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    env.update(HOME=SANDBOX_HOME, TMPDIR="/tmp", USER="kernel", LOGNAME="kernel")
    env.update(extra or {})
    return env


def scrubbed(relay_env: Mapping[str, str], extra: Mapping[str, str] | None) -> dict[str, str]:
    """An unsandboxed kernel's environment: the relay's without its own variables, and a client's."""
    env = {name: value for name, value in relay_env.items() if not name.startswith("KERNEL_RELAY_")}
    env.update(extra or {})
    return env


@dataclass(frozen=True)
class Sandbox:
    """How one kernel is sandboxed: its box, limits, network, and whether it outlives the relay."""

    box: Box
    limits: Limits
    network: str
    independent: bool

    def command(
        self, argv: Sequence[str], connection_file: str, env_path: str, resource_dir: str | None
    ) -> list[str]:
        """``argv`` run in this sandbox: bwrap, then ``prlimit`` and (as root) ``setpriv`` to the kernel's uid."""
        reason = unavailable()  # finds the tools (an adopter may not have looked yet)
        if reason is not None:
            raise KernelLaunchError(f"cannot start the kernel in its sandbox: {reason}")
        box = self.box
        inner = [
            arg.replace(connection_file, str(box.connection_file(connection_file))) for arg in argv
        ]
        bwrap = self._bwrap(software_binds(argv, env_path, resource_dir))
        bwrap += ["--", _tool("prlimit"), *self.limits.prlimit(), "--"]
        if box.uid is not None:
            bwrap += [
                _tool("setpriv"),
                f"--reuid={box.uid}",
                f"--regid={box.uid}",
                "--clear-groups",
                "--no-new-privs",
                "--bounding-set=-all",
                "--inh-caps=-all",
                "--",
            ]
        # SIGINT is how jupyter_client interrupts (to the whole process group): bwrap ignores it (the kernel
        # sets its own handler), or an interrupt would end the sandbox.
        return ["/bin/sh", "-c", 'trap "" INT; exec "$@"', "kernel-sandbox", *bwrap, *inner]

    def _bwrap(self, software: list[str]) -> list[str]:
        """bwrap's options: namespaces, the system's and ``software``'s mounts, the box's, /tmp and /proc."""
        box = self.box
        bwrap = [*_namespaces(box.uid is not None, self.network), "--hostname", "kernel"]
        if not self.independent:
            bwrap.append("--die-with-parent")
        bwrap += _system_binds()
        binds = [*software, "--bind", str(box.channels), str(box.channels)]
        binds += ["--bind", str(box.home), SANDBOX_HOME]
        bwrap += ["--proc", "/proc", "--dev", "/dev"]
        bwrap += ["--size", str(self.limits.tmp_size), "--tmpfs", "/tmp"]
        bwrap += _parents(binds[2::3]) + binds + ["--chdir", SANDBOX_HOME]
        # ipykernel would take the sandbox's init (pid 1) for a dead parent; --die-with-parent does its job.
        return [*bwrap, "--unsetenv", "JPY_PARENT_PID"]

    def to_record(self) -> dict[str, Any]:
        return {
            "box": self.box.to_record(),
            "limits": self.limits.to_record(),
            "network": self.network,
        }

    @classmethod
    def from_record(cls, record: Mapping[str, Any], independent: bool) -> Sandbox:
        limits = Limits().with_values(
            {k: ("none" if v is None else v) for k, v in dict(record.get("limits") or {}).items()}
        )
        return cls(
            Box.from_record(record["box"]), limits, str(record.get("network", "none")), independent
        )


class SandboxedKernelManager(KernelManager):
    """
    A KernelManager whose local kernel is launched (and relaunched, on restart) in its ``sandbox``; a kernel
    of another provisioner (an ssh host) is launched as that provisioner does.
    """

    sandbox: Sandbox | None = None
    _group: int | None = None
    """The process group of the kernel last stopped, while some of it may still run."""

    @default("context")
    def _context_default(self) -> Any:
        # One context for all the relay's managers, not one (and two threads) each; never destroyed by one.
        return manager_context()

    @property
    def sandboxed(self) -> bool:
        return self.sandbox is not None and isinstance(self.provisioner, LocalProvisioner)

    async def _async_launch_kernel(self, kernel_cmd: list[str], **kw: Any) -> None:
        if self.sandbox is not None and isinstance(self.provisioner, LocalProvisioner):
            box = self.sandbox.box
            mount_home(box.home, self.sandbox.limits.home_size, box.uid)
            box.copy_connection_file(self.connection_file)
            env = kw.get("env") or {}
            kernel_cmd = self.sandbox.command(
                kernel_cmd,
                self.connection_file,
                env.get("PATH", os.defpath),
                getattr(self.kernel_spec, "resource_dir", None),
            )
        await super()._async_launch_kernel(kernel_cmd, **kw)
        if self.sandbox is not None:
            self._write_pid()

    async def _async_shutdown_kernel(self, now: bool = False, restart: bool = False) -> None:
        # A stop, a kill and a restart all come here: what jupyter_client leaves of the group goes too.
        provisioner = self.provisioner
        process = getattr(provisioner, "process", None)
        pgid = own_group(
            getattr(provisioner, "pgid", None),
            getattr(provisioner, "pid", None),
            process is not None and process.poll() is None,
        )
        await super()._async_shutdown_kernel(now=now, restart=restart)
        # And what an earlier stop left, if anything: tried again, forgotten once gone.
        groups = dict.fromkeys(group for group in (pgid, self._group) if group is not None)
        self._group = None
        for group in groups:
            if not await end_group(group):
                self._group = group
        if self._group is not None and restart:
            # The new kernel would take the same ports the old one still holds.
            raise KernelShutdownError(
                f"kernel {self.kernel_id} could not be stopped to restart: {self.survivors()} still run"
            )

    shutdown_kernel = run_sync(_async_shutdown_kernel)

    def survivors(self) -> list[int]:
        """Processes of the last stopped kernel's group that SIGKILL has not ended yet (none, normally)."""
        return [] if self._group is None else live_members(self._group)

    def _write_pid(self) -> None:
        pid = getattr(self.provisioner, "pid", None)
        if isinstance(pid, int) and self.sandbox is not None:
            self.sandbox.box.write_pid(pid)


__all__ = [
    "NETWORK_POLICIES",
    "SANDBOX_POLICIES",
    "Box",
    "Sandbox",
    "SandboxPolicy",
    "SandboxedKernelManager",
    "box_alive",
    "environment",
    "scrubbed",
    "unavailable",
]

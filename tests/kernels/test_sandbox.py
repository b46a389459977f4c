"""The sandbox's pieces in process: limits and their overrides, kernels' environments, bwrap's command line."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from kernel_relay.kernels import KernelLaunchError
from kernel_relay.kernels._limits import MAX_PROCESSES, Limits, parse_size
from kernel_relay.kernels._sandbox import (
    SANDBOX_HOME,
    Box,
    Sandbox,
    environment,
    scrubbed,
    software_binds,
)

RELAY_ENV = {
    "PATH": "/usr/bin:/bin",
    "LANG": "C.UTF-8",
    "HOME": "/root",
    "KERNEL_RELAY_TOKEN": "secret",
    "KERNEL_RELAY_OTHER": "x",
    "AWS_SECRET_ACCESS_KEY": "y",
}


def test_sizes_are_read_with_units_and_none_lifts_a_limit() -> None:
    """512M, 2G and plain bytes are read; none is no limit; nonsense is refused."""
    assert parse_size("512M") == 512 << 20
    assert parse_size("2g") == 2 << 30
    assert parse_size("4096") == 4096
    assert parse_size("none") is None
    with pytest.raises(ValueError):
        parse_size("lots")


def test_limits_from_the_option_and_a_kernelspec() -> None:
    """--kernel-limits sets limits; a kernelspec's metadata overrides them; bad values are clear errors."""
    limits = Limits().with_text("memory=1G, processes=128, cpu_time=60")
    assert (limits.memory, limits.processes, limits.cpu_time) == (1 << 30, 128, 60)
    spec = limits.for_spec({"kernel_relay": {"limits": {"memory": "2G", "open_files": 64}}})
    assert (spec.memory, spec.open_files, spec.processes) == (2 << 30, 64, 128)
    assert limits.for_spec({"debugger": True}) is limits
    assert Limits().with_text("home_size=64M").home_size == 64 << 20
    assert Limits().with_text("home_size=none").home_size is None
    with pytest.raises(ValueError, match="at most"):
        Limits().with_text(f"processes={MAX_PROCESSES + 1}")
    with pytest.raises(ValueError, match="unknown kernel limit"):
        Limits().with_text("disk=1G")
    with pytest.raises(KernelLaunchError, match=r"metadata\.kernel_relay\.limits"):
        limits.for_spec({"kernel_relay": {"limits": {"memory": "much"}}})


def test_the_default_memory_limit_is_a_quarter_of_the_machine() -> None:
    """Without options, memory is at most a quarter of RAM and processes a few hundred."""
    total = int(Path("/proc/meminfo").read_text().split()[1]) * 1024
    limits = Limits()
    assert limits.memory == total // 4
    assert limits.processes is not None and limits.processes <= MAX_PROCESSES
    assert limits.home_size == 1 << 30
    assert "--data=" + str(total // 4) in limits.prlimit()


def test_no_kernel_gets_the_relays_own_variables() -> None:
    """Sandboxed kernels get a few of the relay's variables; unsandboxed ones all but KERNEL_RELAY_*."""
    sandboxed = environment(RELAY_ENV, {"KERNEL_USERNAME": "ada"})
    assert sandboxed == {
        "PATH": "/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "HOME": SANDBOX_HOME,
        "TMPDIR": "/tmp",
        "USER": "kernel",
        "LOGNAME": "kernel",
        "KERNEL_USERNAME": "ada",
    }
    plain = scrubbed(RELAY_ENV, {"KERNEL_USERNAME": "ada"})
    assert "KERNEL_RELAY_TOKEN" not in plain and "KERNEL_RELAY_OTHER" not in plain
    assert plain["AWS_SECRET_ACCESS_KEY"] == "y" and plain["KERNEL_USERNAME"] == "ada"


def _command(tmp_path: Path, *, uid: int | None, network: str, independent: bool) -> list[str]:
    box = Box(tmp_path / "box", uid)
    sandbox = Sandbox(box, Limits(memory=1 << 30), network, independent)
    connection = str(tmp_path / "kernel-abc.json")
    argv = [os.path.realpath("/usr/bin/env"), "-f", connection]
    return sandbox.command(argv, connection, "/usr/bin:/bin", None)


def test_the_command_isolates_the_kernel(tmp_path: Path) -> None:
    """bwrap unshares the network, dies with the relay, drops to the kernel's uid, and sees its copy of the file."""
    command = _command(tmp_path, uid=1 << 30, network="none", independent=False)
    assert command[:3] == ["/bin/sh", "-c", 'trap "" INT; exec "$@"']
    # bwrap, prlimit and setpriv by absolute path: never looked up on a kernel's PATH.
    tools = [arg for arg in command if os.path.basename(arg) in ("bwrap", "prlimit", "setpriv")]
    assert len(tools) == 3 and all(os.path.isabs(tool) for tool in tools), tools
    assert {"--unshare-pid", "--unshare-net", "--die-with-parent"} <= set(command)
    assert "--unshare-user" not in command
    assert f"--reuid={1 << 30}" in command and "--no-new-privs" in command
    assert "--data=1073741824" in command
    assert command[-1] == str(tmp_path / "box" / "channels" / "kernel-abc.json")
    sources = [command[i + 1] for i, arg in enumerate(command) if arg in ("--bind", "--ro-bind")]
    assert os.path.expanduser("~") not in sources and "/" not in sources


def test_host_network_and_independent_kernels(tmp_path: Path) -> None:
    """--kernel-network host keeps the network; a fleet's kernel outlives the relay; a user namespace without root."""
    command = _command(tmp_path, uid=None, network="host", independent=True)
    assert "--unshare-net" not in command and "--die-with-parent" not in command
    assert "--unshare-user" in command and "setpriv" not in command


def test_software_in_the_relay_users_home_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A kernel whose Python would need the whole home of the relay's user mounted does not start."""
    home = tmp_path / "home"
    (home / "bin").mkdir(parents=True)
    python = home / "bin" / "python"
    python.write_text("#!/bin/sh\n")
    python.chmod(0o755)
    monkeypatch.setenv("HOME", str(home))
    with pytest.raises(KernelLaunchError, match="relay user's home"):
        software_binds([str(python)], str(home / "bin"), None)

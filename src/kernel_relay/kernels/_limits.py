# -*- test-case-name: tests.kernels.test_sandbox -*-
"""
Each sandboxed kernel's limits (``--kernel-limits``, a kernelspec's ``metadata.kernel_relay.limits``): how they
are read, their defaults, and the ``prlimit`` options that set them (see ``_sandbox``).

Memory is ``RLIMIT_DATA``, not ``RLIMIT_AS``: it counts what a process can write to (heap, private mappings),
which is what exhausts a machine, and not the address space that threads and allocators reserve without
using (glibc reserves 64 MiB per thread arena; numeric libraries reserve more), which ``RLIMIT_AS`` would
count and so fail kernels that use little. Python turns the refusal into ``MemoryError``. Processes are
``RLIMIT_NPROC``, which counts threads too, per uid: hence a uid per kernel.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final

from ._errors import KernelLaunchError

#: The most processes (and threads) a kernel may have; RLIMIT_NPROC counts threads too.
MAX_PROCESSES: Final = 1024
_SIZE: Final = re.compile(r"(?P<number>[0-9]+)\s*(?P<unit>[KMGT]?)(?:I?B)?", re.IGNORECASE)
_UNITS: Final = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_size(text: str) -> int | None:
    """Bytes from ``512M``, ``2G``, ``1048576``; ``none`` (or ``off``, ``unlimited``) is no limit."""
    text = text.strip()
    if text.lower() in ("none", "off", "unlimited"):
        return None
    match = _SIZE.fullmatch(text)
    if match is None or int(match["number"]) <= 0:
        raise ValueError(f"{text!r} is not a size (such as 512M, 2G, or none)")
    return int(match["number"]) * _UNITS[match["unit"].upper()]


def _count(text: str) -> int | None:
    text = text.strip()
    if text.lower() in ("none", "off", "unlimited"):
        return None
    value = int(text)
    if value <= 0:
        raise ValueError(f"{text!r} is not a positive number")
    return value


def machine_memory() -> int:
    """The machine's RAM in bytes (from /proc/meminfo), or 4 GiB when it cannot be read."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 4 << 30


#: The limits' names (in --kernel-limits and kernelspec metadata), and how each is read.
_LIMITS: Final = {
    "memory": parse_size,
    "processes": _count,
    "open_files": _count,
    "file_size": parse_size,
    "cpu_time": _count,
    "tmp_size": parse_size,
    "home_size": parse_size,
}


@dataclass(frozen=True)
class Limits:
    """One kernel's rlimits (None: unlimited) and the size of its private /tmp."""

    memory: int | None = field(default_factory=lambda: machine_memory() // 4)
    """RLIMIT_DATA of each of its processes, in bytes."""
    processes: int | None = 256
    """RLIMIT_NPROC: its processes and threads."""
    open_files: int | None = 1024
    file_size: int | None = 1 << 30
    """RLIMIT_FSIZE: the largest file it may write, in bytes."""
    cpu_time: int | None = None
    """RLIMIT_CPU, in seconds of CPU time per process."""
    tmp_size: int = 64 << 20
    """Bytes its private /tmp (a tmpfs, so memory) may hold."""
    home_size: int | None = 1 << 30
    """Bytes its working directory (a tmpfs of its own, as root) may hold; None: unbounded."""

    def with_text(self, text: str) -> Limits:
        """These limits changed by ``memory=2G,processes=128,...`` (the ``--kernel-limits`` option)."""
        changes: dict[str, Any] = {}
        for item in filter(None, (part.strip() for part in text.split(","))):
            name, sep, value = item.partition("=")
            changes[name.strip().replace("-", "_")] = value if sep else ""
        return self.with_values(changes)

    def with_values(self, values: Mapping[str, Any]) -> Limits:
        """These limits changed by ``values`` (names as the fields; sizes as text or bytes)."""
        changes: dict[str, Any] = {}
        for name, value in values.items():
            parse = _LIMITS.get(name)
            if parse is None:
                raise ValueError(f"unknown kernel limit {name!r} (one of {', '.join(_LIMITS)})")
            try:
                parsed = parse(str(value))
            except ValueError as error:
                raise ValueError(f"kernel limit {name}: {error}") from None
            if name == "processes" and (parsed is None or parsed > MAX_PROCESSES):
                raise ValueError(f"kernel limit processes: at most {MAX_PROCESSES}")
            if name == "tmp_size" and parsed is None:
                raise ValueError("kernel limit tmp_size: a size is needed (a tmpfs is memory)")
            changes[name] = parsed
        return replace(self, **changes)

    def for_spec(self, metadata: Any) -> Limits:
        """These limits with a kernelspec's overrides (``metadata.kernel_relay.limits``) applied."""
        ours = metadata.get("kernel_relay") if isinstance(metadata, dict) else None
        overrides = ours.get("limits") if isinstance(ours, dict) else None
        if not overrides:
            return self
        if not isinstance(overrides, dict):
            raise KernelLaunchError("kernelspec metadata.kernel_relay.limits must be an object")
        try:
            return self.with_values(overrides)
        except ValueError as error:
            raise KernelLaunchError(f"kernelspec metadata.kernel_relay.limits: {error}") from None

    def prlimit(self) -> list[str]:
        """``prlimit`` options setting these limits (soft and hard alike, so a kernel cannot raise them)."""
        values = {
            "data": self.memory,
            "nproc": self.processes,
            "nofile": self.open_files,
            "fsize": self.file_size,
            "cpu": self.cpu_time,
        }
        return [f"--{name}={value}" for name, value in values.items() if value is not None]

    def describe(self) -> str:
        """``memory=1.5G, processes=256, ...`` for the log."""

        def shown(name: str, value: int | None) -> str:
            if value is None:
                return "none"
            if name in ("memory", "file_size", "tmp_size", "home_size"):
                return f"{value / (1 << 20):.0f}M"
            return str(value)

        return ", ".join(f"{name}={shown(name, getattr(self, name))}" for name in _LIMITS)

    def to_record(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in _LIMITS}


__all__ = ["MAX_PROCESSES", "Limits", "machine_memory", "parse_size"]

# -*- test-case-name: tests.fleet.test_fleet -*-
"""
The fleet's kernels that relays of this machine manage, on disk, so that no kernel is left running when
Redis loses its record and no live relay knows of it (its relay was killed just before Redis restarted
empty): a relay that finds such a kernel missing from Redis, its owner gone, registers it again, and the fleet
adopts it (or, its process gone, forgets it) like any kernel of a gone relay.

One file per kernel (its record, as Redis holds it once opened: it names the kernel's keys, as its
connection file does), readable by this user only, in a directory per fleet (per Redis URL) under Jupyter's
runtime directory.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
from collections.abc import Callable, Container, Mapping
from pathlib import Path
from typing import Any, Final

from jupyter_core.paths import jupyter_runtime_dir
from twisted.logger import Logger

from ..kernels.adoption import is_kernel_process, this_host
from .records import KernelRecord

log = Logger()

_ENTRY: Final = re.compile(r"(?P<id>[0-9A-Za-z._-]{1,128})\.json")


def process_runs(kernel_id: str, about: Mapping[str, Any]) -> bool:
    """Whether a kernel's process still runs: a local kernel's is checked; any other is taken as running."""
    pid = (about.get("provisioner") or {}).get("pid")
    if not isinstance(pid, int) or isinstance(pid, bool):
        return True
    started = about.get("started")
    return isinstance(started, str) and is_kernel_process(pid, started, kernel_id)


def stop_process(kernel_id: str, about: Mapping[str, Any]) -> bool:
    """Kill a local kernel's process (its group, when it leads one), if it is still that kernel's: whether it did."""
    provisioner = about.get("provisioner") or {}
    pid = provisioner.get("pid")
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 1:
        return False
    if about.get("host") != this_host() or not process_runs(kernel_id, about):
        return False
    try:
        if provisioner.get("pgid") == pid:
            os.killpg(pid, signal.SIGKILL)
        else:
            os.kill(pid, signal.SIGKILL)
    except OSError:
        return False
    return True


def ledger_dir(fleet: str) -> Path:
    """Where this machine's relays of the fleet at ``fleet`` (its Redis URL, no password) list their kernels."""
    digest = hashlib.sha256(fleet.encode("utf-8")).hexdigest()[:16]
    return Path(jupyter_runtime_dir()) / f"kernel-relay-fleet-{digest}"


class Ledger:
    """The kernels this machine's relays manage in one fleet; see the module docstring."""

    def __init__(
        self,
        directory: Path,
        runs: Callable[[str, Mapping[str, Any]], bool] = process_runs,
        stop: Callable[[str, Mapping[str, Any]], bool] = stop_process,
    ) -> None:
        self.directory = directory
        self.runs = runs
        """Whether a kernel's process still runs, from its record's ``about``."""
        self.stop = stop
        """Kill a kernel's process that no relay manages, from its record's ``about``: whether it did."""

    def write(self, kernel_id: str, record: KernelRecord) -> None:
        """This relay manages the kernel now (it started or adopted it)."""
        if not _ENTRY.fullmatch(f"{kernel_id}.json"):
            return
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            path = self.directory / f"{kernel_id}.json"
            partial = path.with_suffix(".part")
            fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as out:
                json.dump(record.encode(), out)
            partial.replace(path)
        except OSError as error:
            log.warn(
                "could not list kernel {kernel} on disk: {error}", kernel=kernel_id, error=error
            )

    def remove(self, kernel_id: str) -> None:
        """The kernel is gone (stopped, or found dead)."""
        if _ENTRY.fullmatch(f"{kernel_id}.json"):
            (self.directory / f"{kernel_id}.json").unlink(missing_ok=True)

    def entries(self, known: Container[str] = ()) -> dict[str, KernelRecord]:
        """The kernels listed but not ``known``, by id (an unreadable entry is skipped)."""
        found: dict[str, KernelRecord] = {}
        try:
            paths = list(self.directory.iterdir())
        except OSError:
            return found
        for path in paths:
            match = _ENTRY.fullmatch(path.name)
            if match is None or match.group("id") in known:
                continue
            try:
                fields = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            record = KernelRecord.decode(fields) if isinstance(fields, dict) else None
            if record is not None:
                found[match.group("id")] = record
        return found


__all__ = ["Ledger", "ledger_dir", "process_runs", "stop_process"]

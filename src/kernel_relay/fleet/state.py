# -*- test-case-name: tests.fleet.test_fleet -*-
"""
What one relay knows of its fleet, shared by the fleet's parts: where it is in its life in the fleet (an
explicit state, not flags), whether Redis answers, the other relays whose lease runs, and the records of
the kernels it serves. No I/O here.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from ..kernels.adoption import start_time, this_host
from .records import KernelRecord


class Membership(Enum):
    """Where this relay is in its life in the fleet."""

    JOINING = "joining"
    """Started: its lease is not written yet, or it has not read the fleet's kernels."""
    JOINED = "joined"
    """Ready: it holds a lease, serves the fleet's kernels and may start kernels of its own."""
    HANDING_OFF = "handing-off"
    """Stopping with another live relay on its machine: its lease is released, its kernels left running."""
    LEAVING = "leaving"
    """Stopping: it starts no kernel, and its lease is released."""


class Link(Enum):
    """Whether the fleet's Redis answered this relay's last sync."""

    UNKNOWN = "unknown"
    """Not asked yet."""
    UP = "up"
    DOWN = "down"
    """It did not answer: the relay serves what it has; when Redis is back, it may have lost everything."""


def process_alive(about: Mapping[str, Any]) -> bool:
    """Whether the relay a lease describes still runs (on this machine: its pid, checked by start time)."""
    pid = about.get("pid")
    if not isinstance(pid, int):
        return True
    now = start_time(pid)
    started = about.get("started")
    return now is not None and (not isinstance(started, str) or now == started)


def lease_about(owned: int, serves: int) -> dict[str, Any]:
    """What a relay's lease says of it: enough for a relay of its machine to tell whether it still runs."""
    return {
        "pid": os.getpid(),
        "started": start_time(os.getpid()),
        "host": socket.gethostname(),
        "machine": this_host(),
        "kernels": owned,
        "serves": serves,
    }


@dataclass
class FleetState:
    """This relay's view of the fleet; see the module docstring."""

    relay_id: str
    lease: float
    membership: Membership = Membership.JOINING
    link: Link = Link.UNKNOWN
    others: dict[str, dict[str, Any]] = field(default_factory=dict)
    """The other relays whose lease runs, as of the last read."""
    records: dict[str, KernelRecord] = field(default_factory=dict)
    """The fleet record of every kernel this relay serves, as last read (or written)."""
    registered: set[str] = field(default_factory=set)
    """This relay's own kernels that are in the fleet's registry."""
    preparing_stop: bool = False
    """This relay prepares to stop: its lease says so, and no relay leaves its kernels to it."""
    stop_prepared: bool = False
    """Its kernels are counted for its stop: it adopts nothing more (see :mod:`.stopping`)."""

    @property
    def redis_up(self) -> bool:
        return self.link is Link.UP

    @property
    def stopping(self) -> bool:
        return self.membership in (Membership.HANDING_OFF, Membership.LEAVING)

    def owner_alive(self, owner: str) -> bool:
        """Whether a relay holds a lease and, when it runs on this machine, its process runs."""
        if owner == self.relay_id:
            return True
        about = self.others.get(owner)
        if about is None or about.get("stopping"):
            return False  # a relay that stops leaves its kernels, or stops them itself
        return about.get("machine") != this_host() or process_alive(about)

    def live_relay_here(self) -> bool:
        """Whether another relay of this machine runs and is not stopping (it can adopt every kernel of this one)."""
        here = this_host()
        return any(
            about.get("machine") == here and not about.get("stopping") and process_alive(about)
            for about in self.others.values()
        )

    def owner_of(self, kernel_id: str) -> str:
        record = self.records.get(kernel_id)
        return record.owner if record is not None else ""


__all__ = ["FleetState", "Link", "Membership", "lease_about", "process_alive"]

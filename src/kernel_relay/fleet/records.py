# -*- test-case-name: tests.fleet.test_records -*-
"""
A kernel's record in the fleet, typed: the one place where the fields Redis holds (text, some of it JSON) are
read and written. The store seals and opens the fields; this module gives them their meaning.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from ..kernels import iso_date
from ..kernels.adoption import this_host


def now_iso() -> str:
    """When a record is created, as the relay writes dates everywhere (UTC, ending in ``Z``)."""
    return iso_date(time.time())


@dataclass(frozen=True)
class KernelRecord:
    """What the fleet knows of one kernel: enough for any relay to serve it, and for one to manage it."""

    owner: str
    """The relay that manages its process."""
    spec: str = ""
    created: str = ""
    about: Mapping[str, Any] = field(default_factory=dict)
    """What another relay needs to take the kernel over (``kernels.adoption.describe``, keys included)."""
    env: Mapping[str, str] | None = None
    """What its start asked for (``KERNEL_*`` and allowed names): a restart by an adopter uses the same."""

    @classmethod
    def decode(cls, fields: Mapping[str, str]) -> KernelRecord | None:
        """The record Redis holds as fields of text; None when it cannot be read (a bug: logged by the caller)."""
        try:
            about = json.loads(fields.get("about") or "{}")
            env = json.loads(fields["env"]) if fields.get("env") else None
        except ValueError:
            return None
        if not isinstance(about, dict) or not isinstance(env, dict | None):
            return None
        return cls(
            owner=fields.get("owner", ""),
            spec=fields.get("spec", ""),
            created=fields.get("created", ""),
            about=about,
            env=None if env is None else {str(k): str(v) for k, v in env.items()},
        )

    def encode(self) -> dict[str, str]:
        """The fields Redis holds (those that are empty are not written)."""
        fields = {"owner": self.owner, "about": json.dumps(dict(self.about))}
        if self.spec:
            fields["spec"] = self.spec
        if self.created:
            fields["created"] = self.created
        if self.env:
            fields["env"] = json.dumps(dict(self.env))
        return fields

    def owned_by(self, owner: str) -> KernelRecord:
        return replace(self, owner=owner)

    def describing(self, about: Mapping[str, Any]) -> KernelRecord:
        """The same kernel, run by the process ``about`` names (after a restart or an adoption)."""
        return replace(self, about=about)

    @property
    def connection(self) -> dict[str, Any] | None:
        """Its channels' addresses and keys, None if the record has none."""
        connection = self.about.get("connection")
        return connection if isinstance(connection, dict) else None

    @property
    def adoptable_here(self) -> bool:
        """A local kernel (its provisioner knows a pid) can be managed only from its own machine."""
        local = "pid" in (self.about.get("provisioner") or {})
        return not local or self.about.get("host") == this_host()


__all__ = ["KernelRecord", "now_iso"]

# -*- test-case-name: tests.fleet.test_store_members -*-
"""
The fleet's ``kernels`` set (see :mod:`.store`): a part of the store, apart by concern.

Each member is a kernel id tagged with the fleet's secret (``<id> <keyed hash>``, :meth:`.FleetKeys.tag`), the
same each time, so that a relay adds and removes it as a string and a member added without the secret is
known forged. Where the set is read (:meth:`MemberStore.kernel_ids`: the syncs, the look-ups, a full
``--max-kernels``) a forged member is left out, removed, and counted once; a kernel id listed whose record
is gone or forged (an authentic member put back after its kernel ended) is removed as its record is read.

Why this and not a check in Lua: a script cannot verify a keyed hash without the key, which must not reach
Redis. RESERVE still counts every member (``SCARD``, one step: two relays cannot both take the last place);
only when that refuses a spawn does the relay read the members, remove the forged ones, and ask once more,
so a spawn below the limit costs nothing more, and a forger must win a race against each refused spawn.
A copied tag names a kernel the fleet has, or had: as a copy of a member it adds nothing (a set), and put
back after its kernel ended it has no record, and goes at the next read of it (a relay's next sync).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from twisted.internet.defer import Deferred, succeed

from . import scripts
from .connection import RedisConnection, key, text
from .secrets import FleetKeys, Forged, ForgeryLog


class MemberStore(RedisConnection):
    """The store's calls for the ``kernels`` set (mixed into :class:`.store.FleetStore`)."""

    _keys: FleetKeys
    forged: ForgeryLog
    _verified: dict[str, str]
    """The members read last that were found authentic, with their kernel id (not checked again)."""

    def _member(self, kernel_id: str) -> str:
        """A kernel id as the ``kernels`` set holds it."""
        return self._keys.tag(key("kernels"), kernel_id)

    def kernel_ids(self) -> Deferred[set[str]]:
        """The fleet's kernel ids (a member not added by a relay is not one: removed, logged)."""
        return self._read_members().addCallback(lambda read: read[0])

    def _read_members(self) -> Deferred[tuple[set[str], int]]:
        """The fleet's kernel ids, and how many forged members were found (and removed)."""

        def verified(members: Any) -> Deferred[tuple[set[str], int]]:
            found: dict[str, str] = {}
            forged = []
            for member in (text(m) for m in members or ()):
                kernel_id = self._verified.get(member)
                if kernel_id is None:
                    try:
                        kernel_id = self._keys.untag(key("kernels"), member)
                    except Forged as error:
                        self.forged(error)
                        forged.append(member)
                        continue
                found[member] = kernel_id
            self._verified = found
            ids = set(found.values())
            if not forged:
                return succeed((ids, 0))
            d = self._call("SREM", key("kernels"), *forged)
            return d.addBoth(lambda _: (ids, len(forged)))

        return self._call("SMEMBERS", key("kernels")).addCallback(verified)

    def _forget_unrecorded(
        self, kernel_id: str, read: Sequence[tuple[str, str]], forged: bool
    ) -> Deferred[None]:
        """
        A kernel whose record was found ``read`` (nothing, or ``forged``): if it is still listed with that
        record, it is no kernel of the fleet's, and goes (a relay whose kernel it is registers it again).
        """
        pairs = [item for pair in read for item in pair]
        d = self._script(
            scripts.FORGET_UNRECORDED,
            [key("kernels"), key("kernel", kernel_id)],
            [self._member(kernel_id), *pairs],
        )

        def forgotten(removed: Any) -> None:
            if int(removed or 0) == 1 and not forged:
                self.forged(Forged(f"kernel {kernel_id} is listed in the fleet with no record"))

        return d.addCallbacks(forgotten, lambda f: None)


__all__ = ["MemberStore"]

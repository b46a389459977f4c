# -*- test-case-name: tests.fleet.test_store -*-
"""
Where Jupyter sessions stopped, in Redis (``mark:<id>:<session>``, ``marks:<id>``: see :mod:`.store` and
:mod:`.marks`): a part of the store, apart by concern.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from twisted.internet.defer import Deferred, DeferredList

from . import scripts
from .connection import RedisConnection, key, text


class MarkStore(RedisConnection):
    """The store's calls for sessions' marks (mixed into :class:`.store.FleetStore`)."""

    def save_marks(
        self, kernel_id: str, marks: Mapping[str, str], ttl: float, keep: int
    ) -> Deferred[Any]:
        """
        Each session's position in a key of its own, which expires on its own after ``ttl`` seconds; a
        kernel keeps the ``keep`` newest.
        """
        index, prefix = key("marks", kernel_id), key("mark", kernel_id, "")
        calls = [
            self._script(
                scripts.SAVE_MARK,
                [index, prefix + session],
                [session, value, max(1, int(ttl * 1000)), keep, prefix],
            )
            for session, value in marks.items()
        ]
        return DeferredList(calls, consumeErrors=True)

    def mark(self, kernel_id: str, session_id: str) -> Deferred[str | None]:
        d = self._call("GET", key("mark", kernel_id, session_id))
        return d.addCallback(lambda value: None if value is None else text(value))


__all__ = ["MarkStore"]

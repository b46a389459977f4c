# -*- test-case-name: tests.fleet.test_requests -*-
"""
The fleet's records of execute requests (the ledger's ``SharedRequests``): what lets any relay answer for a
request another relay accepted, even once that relay is gone. A record holds where the request's messages
start in the kernel's stream and what only the accepting relay sees (its reply, its ``input()``); the outputs
are the kernel's stream's (see ``kernel_relay.relay.requests``).

Keys (beside the store's, :mod:`.store`): ``requests:<id>``, a hash of a kernel's records by ``msg_id``, each
sealed with the fleet's secret for its key and field; ``request-order:<id>``, their ``msg_id``\\ s by when
they were sent. Bounded: a kernel keeps its ``keep`` newest records, and both keys expire ``ttl`` seconds
after the kernel's last request changed (the ledger's own bounds). They outlive their kernel for that time,
so that another relay still tells how its requests ended (a kernel's end marks its live records ended).

Redis is reached through the store's connection (the calls fail at once while Redis is away).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, replace
from typing import Any, Final

from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from ..relay.execution import RequestRecord
from .connection import field_pairs, key, text
from .secrets import FleetKeys, Forged
from .store import FleetStore

log = Logger()

#: KEYS: records, order. ARGV: msg_id, sealed record, when sent (ms), records kept, ttl (ms).
SAVE: Final = """
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
if not redis.call('ZSCORE', KEYS[2], ARGV[1]) then redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1]) end
local over = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[4])
if over > 0 then
  local old = redis.call('ZRANGE', KEYS[2], 0, over - 1)
  redis.call('ZREMRANGEBYRANK', KEYS[2], 0, over - 1)
  redis.call('HDEL', KEYS[1], unpack(old))
end
redis.call('PEXPIRE', KEYS[1], ARGV[5])
redis.call('PEXPIRE', KEYS[2], ARGV[5])
return 1
"""

#: KEYS: records. ARGV: msg_id, the sealed record read, the one to write: only if no one wrote meanwhile.
REPLACE: Final = """
if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
return 1
"""

_TYPES: Final = {
    "msg_id": (str,),
    "first": (int,),
    "submitted": (float, int),
    "cell_id": (str, type(None)),
    "document_path": (str, type(None)),
    "status": (str, type(None)),
    "inferred": (bool,),
    "execution_count": (int, type(None)),
    "input_request": (dict, type(None)),
    "ended": (str, type(None)),
    "finished": (float, int, type(None)),
}


def encode(record: RequestRecord) -> bytes:
    """The record as JSON (what is empty is left out)."""
    return json.dumps(
        {
            name: value
            for name, value in asdict(record).items()
            if value is not None and value is not False
        },
        separators=(",", ":"),
    ).encode("utf-8")


def decode(data: bytes) -> RequestRecord | None:
    """The record :func:`encode` made; None when ``data`` is none."""
    try:
        found = json.loads(data)
    except ValueError:
        return None
    if not isinstance(found, dict) or set(found) - set(_TYPES):
        return None
    for name, value in found.items():
        types = _TYPES[name]
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            return None
    if not {"msg_id", "first", "submitted"} <= set(found):
        return None
    return RequestRecord(**found)


class FleetRequests:
    """The records in Redis; see the module docstring."""

    def __init__(
        self,
        store: FleetStore,
        keys: FleetKeys,
        clock: IReactorTime,
        ttl: float = 3600.0,
        keep: int = 1000,
    ) -> None:
        self._store = store
        self._keys = keys
        self._clock = clock
        self.ttl = ttl
        self.keep = keep
        self._failing = False
        self._writing: dict[str, list[Deferred[None]]] = {}
        """Each kernel's writes under way (to wait for: :meth:`written`)."""

    def save(self, kernel_id: str, record: RequestRecord) -> None:
        where = key("requests", kernel_id)
        sealed = self._seal(where, record)
        d = self._store._script(
            SAVE,
            [where, key("request-order", kernel_id)],
            [record.msg_id, sealed, int(record.submitted * 1000), max(1, self.keep), self._ttl_ms],
        )
        self._track(kernel_id, d.addCallbacks(self._saved, self._failed))

    def written(self, kernel_id: str) -> Deferred[None]:
        pending = list(self._writing.get(kernel_id, ()))
        return DeferredList(pending, consumeErrors=True).addCallback(lambda _: None)

    def load(self, kernel_id: str, msg_id: str) -> Deferred[RequestRecord | None]:
        where = key("requests", kernel_id)
        d = self._store._call("HGET", where, msg_id)
        return d.addCallback(
            lambda value: None if value is None else self._open(where, msg_id, value)
        )

    def recent(self, kernel_id: str) -> Deferred[list[RequestRecord]]:
        where = key("requests", kernel_id)

        def opened(values: Any) -> list[RequestRecord]:
            records = [self._open(where, text(name), value) for name, value in field_pairs(values)]
            return sorted((r for r in records if r is not None), key=lambda r: r.submitted)

        return self._store._call("HGETALL", where).addCallback(opened)

    def end_live(self, kernel_id: str, reason: str) -> None:
        def ended(record: RequestRecord, now: float) -> RequestRecord | None:
            return replace(record, ended=reason, finished=now) if record.live else None

        self._rewrite(kernel_id, ended)

    def input_answered(self, kernel_id: str) -> None:
        def answered(record: RequestRecord, now: float) -> RequestRecord | None:
            live = record.live and record.input_request is not None
            return replace(record, input_request=None) if live else None

        self._rewrite(kernel_id, answered)

    # -- inside ------------------------------------------------------------------------------------------

    def _rewrite(
        self, kernel_id: str, change: Callable[[RequestRecord, float], RequestRecord | None]
    ) -> None:
        """Each of the kernel's records ``change`` changes (None: it does not), unless written meanwhile."""
        where = key("requests", kernel_id)

        def rewrite(values: Any) -> Deferred[Any]:
            now = self._clock.seconds()
            writes = []
            for name, value in field_pairs(values):
                msg_id = text(name)
                record = self._open(where, msg_id, value)
                changed = None if record is None else change(record, now)
                if changed is not None:
                    d = self._store._script(
                        REPLACE, [where], [msg_id, text(value), self._seal(where, changed)]
                    )
                    writes.append(d.addErrback(self._failed))
            return DeferredList(writes)

        d = self._store._call("HGETALL", where).addCallback(rewrite)
        self._track(kernel_id, d.addErrback(self._failed))

    def _track(self, kernel_id: str, d: Deferred[Any]) -> None:
        """Count ``d`` (which never fails) among the kernel's writes under way until it fires."""
        writing = self._writing.setdefault(kernel_id, [])
        done: Deferred[None] = Deferred()
        writing.append(done)

        def finished(_: object) -> None:
            writing.remove(done)
            if not writing and self._writing.get(kernel_id) is writing:
                del self._writing[kernel_id]
            done.callback(None)

        d.addCallback(finished)

    @property
    def _ttl_ms(self) -> int:
        return max(1, int(self.ttl * 1000))

    def _seal(self, where: str, record: RequestRecord) -> str:
        return self._keys.seal(f"{where}\x00{record.msg_id}", encode(record))

    def _open(self, where: str, msg_id: str, value: Any) -> RequestRecord | None:
        try:
            record = decode(self._keys.open(f"{where}\x00{msg_id}", text(value)))
        except Forged as error:
            self._store.forged(error)
            return None
        if record is None or record.msg_id != msg_id:
            log.warn("a request's record in the fleet is unreadable: {where}", where=where)
            return None
        return record

    def _saved(self, _: object) -> None:
        if self._failing:
            self._failing = False
            log.info("Requests' records are kept in the fleet again")

    def _failed(self, failure: Failure) -> None:
        if not self._failing:
            self._failing = True
            log.warn(
                "A request's record could not be kept in the fleet ({error}): other relays may not "
                "read it",
                error=str(failure.value),
            )


__all__ = ["FleetRequests", "decode", "encode"]

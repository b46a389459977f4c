# -*- test-case-name: tests.fleet.test_store -*-
"""
The fleet's shared state in Redis, and the only module that speaks to Redis: every key the fleet uses is
named here, and every operation that must be atomic across relays is one Lua script.

Keys (``kernel-relay:`` first; the database of the URL keeps fleets apart):

- ``fleet``: the fleet secret's check value (see :mod:`.secrets`), set by the first relay to join.
- ``relay:<relay id>``: a relay's lease (JSON about it), expiring unless it is renewed; ``relays``: their ids.
- ``kernels``: the fleet's kernel ids, each tagged (see :mod:`.member_store`); ``kernel:<id>``: one kernel's record (kernelspec, connection info
  **with its HMAC and Curve keys**, the provisioner's own info, the owner relay); ``pending``: the kernels
  being started (``<expiry> <seal>`` each), so that ``--max-kernels`` counts them.
- ``tokens:<id>``: a kernel's tokens, as SHA-256 digests only, each under a keyed hash of it.
- ``mailbox:<relay id>``: what other relays tell one relay (commands, replies, news of kernels and tokens).
- ``mark:<id>:<session>``: where a Jupyter session stopped reading (its last ``relay_seq``), for an hour;
  ``marks:<id>``: the kernel's sessions that have one, by expiry (at most ``keep``: the oldest go first), so
  that they go with their kernel; ``kept-marks``, ``settling-marks`` and ``settling-relays``: whether Redis may
  have lost marks, and which relays are yet to save theirs again (see :mod:`.mark_store`).
- ``seq:<id>``, ``seen:<id>`` (msg_id to number, for every message the stream keeps), ``journal:<id>``,
  ``window:<id>`` (its bytes, and the number of the last message trimmed): the shared iopub numbering and the
  stream of numbered messages, trimmed by count, bytes and age (see :mod:`.numbering`).

Every value is sealed with the fleet's secret (see :mod:`.secrets`) for its own key and field: the kernels'
keys, ``env``, token digests and output are unreadable in Redis, and a value written without the secret, or
moved, is ignored (and logged) as if it were not there. What a script compares or reads keeps a clear part
bound to its seal: a record's ``owner`` (tagged: ``<relay id> <keyed hash>``, the same each time, so the
scripts compare strings), a reservation's expiry and a mark's number; a stream entry's ``msg_id`` and time.
Mailbox messages carry when they were sent and are opened once: an old or replayed one is ignored too. Values
an older version left unsealed are forged to this one: the fleet's relays must all run one version.

Redis is reached through txredisapi, which runs on the reactor. A call made while no connection is up fails at
once with :class:`FleetUnavailable` instead of waiting in a queue to run, out of order, when Redis returns.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Final

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from . import scripts
from .connection import FleetUnavailable, RedisURL, field_pairs, key, text
from .mark_store import MarkStore
from .member_store import MemberStore
from .records import KernelRecord
from .secrets import SEALED, FleetKeys, Forged, ForgeryLog
from .stream_store import StreamStore

#: The fields of a kernel record the scripts compare: kept in clear with a keyed hash (see
#: ``FleetKeys.tag``); the others are sealed.
PLAIN_FIELDS: Final = frozenset({"owner"})
#: How old a mailbox message may be (beyond any wait of a command; with room for clocks apart).
MESSAGE_AGE: Final = 300.0

log = Logger()


class FleetStore(StreamStore, MarkStore, MemberStore):
    """The fleet's shared state in Redis; see the module docstring (the stream's, the marks' and the
    ``kernels`` set's calls are in :mod:`.stream_store`, :mod:`.mark_store` and :mod:`.member_store`)."""

    def __init__(self, url: RedisURL, clock: IReactorTime, keys: FleetKeys) -> None:
        super().__init__(url)
        self._clock = clock
        self._keys = keys
        self.forged = ForgeryLog(log, clock)
        self._verified = {}
        self.member = False
        """Whether Redis showed this relay holds the fleet's secret (:meth:`join`)."""
        self._opened: dict[bytes, float] = {}
        """The nonces of the mailbox messages opened lately, with when: each is acted on once."""

    # -- relays ---------------------------------------------------------------------------------------------

    def join(self) -> Deferred[bool]:
        """Whether this relay holds the fleet's secret: the check value in Redis is its own (or now is)."""
        d = self._call("SET", key("fleet"), self._keys.check, "NX")
        d.addCallback(lambda _: self._call("GET", key("fleet")))

        def checked(value: Any) -> bool:
            self.member = value is not None and self._keys.matches(text(value))
            return self.member

        return d.addCallback(checked)

    def renew(self, relay_id: str, about: Mapping[str, Any], ttl: float) -> Deferred[Any]:
        """Keep this relay's lease for ``ttl`` seconds more (and be counted among the relays)."""
        where = key("relay", relay_id)
        lease = self._keys.seal(where, json.dumps(dict(about)).encode())
        d = self._call("SET", where, lease, "PX", int(ttl * 1000))
        # The check value again, should Redis have lost it (restarted empty).
        d.addCallback(lambda _: self._call("SET", key("fleet"), self._keys.check, "NX"))
        # And the sign that Redis keeps the sessions' marks (see :mod:`.mark_store`).
        d.addCallback(lambda _: self.keep_marks(ttl, relay_id))
        return d.addCallback(lambda _: self._call("SADD", key("relays"), relay_id))

    def extend_lease(self, relay_id: str, ttl: float) -> Deferred[Any]:
        """Keep this relay's lease as it is for ``ttl`` seconds more: a write Redis does when out of memory."""
        return self._call("PEXPIRE", key("relay", relay_id), int(ttl * 1000))

    def release(self, relay_id: str) -> Deferred[Any]:
        """This relay leaves the fleet (its lease ends now)."""
        d = self._call("DEL", key("relay", relay_id))
        return d.addCallback(lambda _: self._call("SREM", key("relays"), relay_id))

    def relays(self) -> Deferred[dict[str, dict[str, Any]]]:
        """The relays whose lease runs, by id, with what each says of itself; the others are forgotten."""

        def leases(ids: Any) -> Deferred[dict[str, dict[str, Any]]]:
            names = sorted(text(i) for i in ids or ())
            if not names:
                return succeed({})
            d = self._call("MGET", *[key("relay", name) for name in names])

            def found(values: Any) -> dict[str, dict[str, Any]]:
                alive = {}
                for name, value in zip(names, values or (), strict=False):
                    if value is None:
                        self._call("SREM", key("relays"), name).addErrback(lambda f: None)
                    else:
                        try:
                            about = self._keys.open(key("relay", name), text(value))
                        except Forged as error:
                            self.forged(error)  # not a relay of this fleet: not counted
                            continue
                        try:
                            alive[name] = json.loads(about)
                        except ValueError:
                            alive[name] = {}
                return alive

            return d.addCallback(found)

        # Remembered: the relays that save their sessions' marks again should Redis lose them.
        d = self._call("SMEMBERS", key("relays")).addCallback(leases)
        return d.addCallback(self.relays_read)

    def lease_alive(self, relay_id: str) -> Deferred[bool]:
        return self._call("EXISTS", key("relay", relay_id)).addCallback(lambda n: int(n) > 0)

    # -- kernels --------------------------------------------------------------------------------------------

    def reserve(self, reservation: str, max_kernels: int | None, ttl: float) -> Deferred[bool]:
        """
        Hold a place for a kernel being started, unless the fleet runs ``max_kernels`` already; only once this
        relay has shown it holds the fleet's secret. Refused, once more after forged kernel ids are removed
        (see :mod:`.member_store`).
        """
        if not self.member:
            return self.join().addCallback(self._reserve_as_member, reservation, max_kernels, ttl)
        limit = -1 if max_kernels is None else max_kernels

        def again(held: bool) -> Deferred[bool] | bool:
            if held or limit < 0:
                return held
            return self._read_members().addCallback(
                lambda read: read[1] > 0 and self._reserve_once(reservation, limit, ttl)
            )

        return self._reserve_once(reservation, limit, ttl).addCallback(again)

    def _reserve_once(self, reservation: str, limit: int, ttl: float) -> Deferred[bool]:
        now = int(self._clock.seconds() * 1000)
        expiry = str(now + int(ttl * 1000))
        value = f"{expiry} {self._keys.seal(_reserved(reservation, expiry), b'')}"
        d = self._call("HGETALL", key("pending"))
        d.addCallback(
            lambda held: self._script(
                scripts.RESERVE,
                [key("kernels"), key("pending")],
                [reservation, value, now, limit, *self._forged_reservations(held)],
            )
        )
        return d.addCallback(lambda n: int(n) == 1)

    def _forged_reservations(self, held: Any) -> list[str]:
        """The field, value pairs of ``pending`` not written by a relay of the fleet (counted, logged)."""
        forged = []
        for name, value in field_pairs(held):
            expiry, _, sealed = text(value).partition(" ")
            try:
                self._keys.open(_reserved(text(name), expiry), sealed)
            except Forged as error:
                self.forged(error)
                forged += [text(name), text(value)]
        return forged

    def _reserve_as_member(
        self, member: bool, reservation: str, max_kernels: int | None, ttl: float
    ) -> Deferred[bool]:
        if not member:
            return fail(FleetUnavailable("this relay holds another secret than its fleet's"))
        return self.reserve(reservation, max_kernels, ttl)

    def unreserve(self, reservation: str) -> Deferred[Any]:
        return self._call("HDEL", key("pending"), reservation)

    def register(
        self, kernel_id: str, record: Mapping[str, str], reservation: str = ""
    ) -> Deferred[Any]:
        """Add a kernel (or update its record) and free its reservation."""
        where = key("kernel", kernel_id)
        pairs = [
            item
            for name, value in record.items()
            for item in (
                name,
                self._tag(kernel_id, value)
                if name in PLAIN_FIELDS
                else self._seal_field(where, name, value),
            )
        ]
        return self._script(
            scripts.REGISTER,
            [key("kernels"), key("pending"), key("kernel", kernel_id)],
            [self._member(kernel_id), reservation, *pairs],
        )

    def unregister(self, kernel_id: str) -> Deferred[Any]:
        """Forget a kernel that is gone: its record, tokens, numbering, stream and sessions' marks."""
        d = self._call("SREM", key("kernels"), self._member(kernel_id))
        d.addCallback(
            lambda _: self._call(
                "DEL",
                key("kernel", kernel_id),
                key("tokens", kernel_id),
                key("seq", kernel_id),
                key("journal", kernel_id),
                key("seen", kernel_id),
                key("window", kernel_id),
            )
        )
        return d.addCallback(
            lambda _: self._script(
                scripts.FORGET_MARKS, [key("marks", kernel_id)], [key("mark", kernel_id, "")]
            )
        )

    def _seal_field(self, where: str, name: str, value: str) -> str:
        return self._keys.seal(f"{where}\x00{name}", value.encode("utf-8"))

    def kernel(self, kernel_id: str) -> Deferred[dict[str, str] | None]:
        """
        A kernel's record, None when the fleet has no such kernel (or its record is forged: then, or when it
        has none, a listed kernel is no kernel of the fleet's, and goes: see :mod:`.member_store`).
        """
        where = key("kernel", kernel_id)

        def record(value: Any) -> Deferred[dict[str, str] | None]:
            fields = {text(k): text(v) for k, v in field_pairs(value)}
            forgotten: Deferred[None]
            if not fields:
                forgotten = self._forget_unrecorded(kernel_id, [], forged=False)
                return forgotten.addCallback(lambda _: None)
            try:
                return succeed(
                    {
                        name: self._keys.untag(f"{where}\x00{name}", value)
                        if name in PLAIN_FIELDS
                        else self._keys.open(f"{where}\x00{name}", value).decode("utf-8")
                        for name, value in fields.items()
                    }
                )
            except (Forged, UnicodeDecodeError) as error:
                self.forged(Forged(str(error)))
                forgotten = self._forget_unrecorded(kernel_id, list(fields.items()), forged=True)
                return forgotten.addCallback(lambda _: None)

        return self._call("HGETALL", key("kernel", kernel_id)).addCallback(record)

    def record(self, kernel_id: str) -> Deferred[KernelRecord | None]:
        """A kernel's record, typed; None when there is none (or it is forged, or unreadable: logged)."""

        def decoded(fields: dict[str, str] | None) -> KernelRecord | None:
            record = None if fields is None else KernelRecord.decode(fields)
            if fields is not None and record is None:
                log.warn("kernel {kernel}'s record in the fleet is unreadable", kernel=kernel_id)
            return record

        return self.kernel(kernel_id).addCallback(decoded)

    def put_record(
        self, kernel_id: str, record: KernelRecord, reservation: str = ""
    ) -> Deferred[Any]:
        """Add a kernel (or update its record) and free its reservation."""
        return self.register(kernel_id, record.encode(), reservation)

    def owner(self, kernel_id: str) -> Deferred[str | None]:
        """A kernel's owner; None when it has none, or one not written by a relay (forged: logged)."""

        def untagged(value: Any) -> str | None:
            try:
                return None if value is None else self._keys.untag(_owner(kernel_id), text(value))
            except Forged as error:
                self.forged(error)
                return None

        return self._call("HGET", key("kernel", kernel_id), "owner").addCallback(untagged)

    def _tag(self, kernel_id: str, owner: str) -> str:
        """An owner as the record keeps it (and the scripts compare it)."""
        return self._keys.tag(_owner(kernel_id), owner)

    def claim(self, kernel_id: str, old_owner: str, new_owner: str) -> Deferred[bool]:
        """Take over a kernel whose owner's lease has expired; False if another relay was first."""
        d = self._script(
            scripts.CLAIM,
            [key("kernel", kernel_id), key("relay", old_owner)],
            [self._tag(kernel_id, old_owner), self._tag(kernel_id, new_owner)],
        )
        return d.addCallback(lambda n: int(n) == 1)

    def take_over(self, kernel_id: str, old_owner: str, new_owner: str) -> Deferred[bool]:
        """Take over a kernel whose owner is known dead, its lease or not; False if another relay was first."""
        owners = [self._tag(kernel_id, old_owner), self._tag(kernel_id, new_owner)]
        d = self._script(scripts.TAKE_OVER, [key("kernel", kernel_id)], owners)
        return d.addCallback(lambda n: int(n) == 1)

    def set_owner(self, kernel_id: str, owner: str) -> Deferred[Any]:
        """Name a kernel's owner (a claim given back); nothing if the kernel is gone meanwhile."""
        return self._script(
            scripts.SET_OWNER, [key("kernel", kernel_id)], [self._tag(kernel_id, owner)]
        )

    # -- tokens ---------------------------------------------------------------------------------------------

    def add_token(self, kernel_id: str, digest: bytes, access: str) -> Deferred[Any]:
        where = key("tokens", kernel_id)
        name = self._keys.token_name(kernel_id, digest)
        entry = self._keys.seal(f"{where}\x00{name}", json.dumps([digest.hex(), access]).encode())
        return self._call("HSET", where, name, entry)

    def tokens(self, kernel_id: str) -> Deferred[dict[bytes, str]]:
        where = key("tokens", kernel_id)

        def decoded(value: Any) -> dict[bytes, str]:
            found = {}
            for name, entry in field_pairs(value):
                try:
                    digest, access = json.loads(
                        self._keys.open(f"{where}\x00{text(name)}", text(entry))
                    )
                    found[bytes.fromhex(digest)] = str(access)
                except Forged as error:
                    self.forged(error)
                except (ValueError, TypeError):
                    continue
            return found

        return self._call("HGETALL", key("tokens", kernel_id)).addCallback(decoded)

    # -- mailboxes ------------------------------------------------------------------------------------------

    def post(self, relay_id: str, message: Mapping[str, Any], ttl: float) -> Deferred[Any]:
        """Leave a message for a relay (kept ``ttl`` seconds at most, should it never read it)."""
        box = key("mailbox", relay_id)
        letter = {"message": dict(message), "sent": self._clock.seconds()}
        d = self._call("RPUSH", box, self._keys.seal(box, json.dumps(letter).encode()))
        return d.addCallback(lambda _: self._call("PEXPIRE", box, int(ttl * 1000)))

    def read_mailbox(self, relay_id: str, wait: int) -> Deferred[dict[str, Any] | None]:
        """
        The next message for this relay, waiting up to ``wait`` seconds; None if none came, or if what came
        is no message of a relay of this fleet (forged, old or seen before: logged).
        """
        box = key("mailbox", relay_id)

        def decoded(reply: Any) -> dict[str, Any] | None:
            if not reply:
                return None
            try:
                return self._open_letter(box, text(list(reply)[-1]))
            except Forged as error:
                self.forged(error)
            except (ValueError, TypeError):
                pass
            return None

        d = self._call("BLPOP", box, wait, handler=self._mailbox)
        return d.addCallback(decoded)

    def _open_letter(self, box: str, value: str) -> dict[str, Any] | None:
        now = self._clock.seconds()
        letter = json.loads(self._keys.open(box, value))
        if not isinstance(letter, dict) or not isinstance(letter.get("message"), dict):
            return None
        if abs(now - float(letter.get("sent", 0))) > MESSAGE_AGE:
            raise Forged(f"a message in {box!r} is {now - float(letter['sent']):.0f}s old")
        # Oldest first (in the order opened): forget those too old to be accepted again anyway.
        for nonce, seen in list(self._opened.items()):
            if now - seen <= 2 * MESSAGE_AGE:
                break
            del self._opened[nonce]
        nonce = value.encode()[: len(SEALED) + 16]
        if nonce in self._opened:
            raise Forged(f"a message in {box!r} came again (replayed)")
        self._opened[nonce] = now
        message: dict[str, Any] = letter["message"]
        return message


def _owner(kernel_id: str) -> str:
    """What a kernel's owner is tagged for: its record's ``owner`` field."""
    return f"{key('kernel', kernel_id)}\x00owner"


def _reserved(reservation: str, expiry: str) -> str:
    """What a reservation's value is sealed for: ``pending``, the reservation and its expiry."""
    return f"{key('pending')}\x00{reservation}\x00{expiry}"


__all__ = ["FleetStore", "FleetUnavailable", "RedisURL", "key"]

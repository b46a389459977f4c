# -*- test-case-name: tests.fleet.test_fleet -*-
"""
The relays' mailboxes as a transport: messages to one relay or to all, and requests that get a reply or
time out. What the messages mean is the fleet's other parts' business; this module only carries them.

Every message is a JSON object with a ``type``. A request carries ``request`` (an id) and ``from`` (the
asking relay); its answer is ``{"type": "reply", "request": ..., ...}`` in the asker's mailbox.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any, Protocol

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from .store import FleetUnavailable

log = Logger()

#: How long one read of the mailbox waits for a message (seconds: Redis's BLPOP counts in whole ones).
READ_WAIT = 1


class NoReply(Exception):
    """A request's relay did not answer in time."""


class Unreachable(Exception):
    """A request could not be left in its relay's mailbox."""


class MailboxStore(Protocol):
    """The part of the fleet's store that carries messages."""

    def post(self, relay_id: str, message: dict[str, Any], ttl: float) -> Deferred[Any]: ...

    def read_mailbox(self, relay_id: str, wait: int) -> Deferred[dict[str, Any] | None]: ...

    def relays(self) -> Deferred[dict[str, dict[str, Any]]]: ...


class Mailbox:
    """This relay's mailbox: reads it while running, hands each message to ``handle``, matches replies."""

    def __init__(
        self,
        store: MailboxStore,
        relay_id: str,
        clock: IReactorTime,
        handle: Callable[[dict[str, Any]], None],
    ) -> None:
        self._store = store
        self._relay_id = relay_id
        self._clock = clock
        self._handle = handle
        self._pending: dict[str, tuple[Deferred[dict[str, Any]], IDelayedCall]] = {}
        self._reading = False

    def start(self) -> None:
        if not self._reading:
            self._reading = True
            self._clock.callLater(0, self._read)

    def stop(self, error: Exception) -> None:
        """Read no more; every request still waiting fails with ``error``."""
        self._reading = False
        for request, (done, timer) in list(self._pending.items()):
            del self._pending[request]
            if timer.active():
                timer.cancel()
            done.errback(error)

    # -- sending -------------------------------------------------------------------------------------

    def send(self, relay_id: str, message: dict[str, Any], ttl: float) -> Deferred[Any]:
        return self._store.post(relay_id, message, ttl)

    def broadcast(self, message: dict[str, Any], ttl: float, known: dict[str, Any]) -> None:
        """Tell every relay whose lease runs now (read afresh; ``known`` if Redis cannot say)."""

        def post(relays: dict[str, Any]) -> None:
            for relay in relays:
                if relay != self._relay_id:
                    self._store.post(relay, message, ttl).addErrback(lambda f: None)

        self._store.relays().addCallbacks(post, lambda f: post(known))

    def request(
        self, relay_id: str, message: dict[str, Any], timeout: float, ttl: float | None = None
    ) -> Deferred[dict[str, Any]]:
        """
        Send ``message`` (kept ``ttl`` seconds, ``timeout`` by default) and wait for the reply; fails with
        :class:`NoReply` after ``timeout`` seconds and with :class:`Unreachable` if it cannot be sent.
        """
        request = uuid.uuid4().hex
        done: Deferred[dict[str, Any]] = Deferred()

        def timed_out() -> None:
            if self._pending.pop(request, None) is not None:
                done.errback(NoReply(f"no answer within {timeout:g}s"))

        self._pending[request] = (done, self._clock.callLater(timeout, timed_out))

        def unposted(failure: Failure) -> None:
            pending = self._pending.pop(request, None)
            if pending is not None:
                pending[1].cancel()
                done.errback(Unreachable(str(failure.value)))

        letter = {**message, "request": request, "from": self._relay_id}
        self._store.post(relay_id, letter, ttl or timeout).addErrback(unposted)
        return done

    def reply(self, message: dict[str, Any], ttl: float, **answer: Any) -> Deferred[Any]:
        """Answer a request (a message with ``request`` and ``from``)."""
        sender, request = str(message.get("from")), str(message.get("request"))
        return self._store.post(sender, {"type": "reply", "request": request, **answer}, ttl)

    # -- receiving -----------------------------------------------------------------------------------

    def _read(self) -> None:
        if not self._reading:
            return
        d = self._store.read_mailbox(self._relay_id, READ_WAIT)

        def again(delay: float) -> None:
            if self._reading:
                self._clock.callLater(delay, self._read)

        def read(message: dict[str, Any] | None) -> None:
            again(0)
            if message is not None:
                self._dispatch(message)

        def failed(failure: Failure) -> None:
            again(0.5)
            if not failure.check(FleetUnavailable):  # type: ignore[no-untyped-call]
                log.failure("reading the fleet mailbox failed", failure=failure)

        d.addCallbacks(read, failed)

    def _dispatch(self, message: dict[str, Any]) -> None:
        if message.get("type") != "reply":
            try:
                self._handle(message)
            except Exception:
                log.failure(
                    "a fleet message could not be handled: {kind}", kind=message.get("type")
                )
            return
        pending = self._pending.pop(str(message.get("request")), None)
        if pending is not None:
            done, timer = pending
            if timer.active():
                timer.cancel()
            done.callback(message)


__all__ = ["Mailbox", "MailboxStore", "NoReply", "Unreachable"]

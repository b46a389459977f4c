"""
The request ledger: every ``execute_request`` a kernel was sent, by any front, readable again by its
``msg_id`` — its state, ``execution_count``, its outputs so far (nbformat's form, :mod:`.outputs`), and
whether all of them are still kept. A client that reloads, or a second client, reads a cell's output here.

The core feeds it where it already sees the traffic: a client's shell request (:meth:`RequestLedger.submitted`),
every iopub message and every shell and stdin message of a kernel (:meth:`RequestLedger.observe`, matched by
parent ``msg_id``; a message not about a known request costs one dict lookup), the end of a kernel
(:meth:`RequestLedger.kernel_ended`). It knows no wire format.

Bounded: at most ``max_requests`` requests and ``max_bytes`` of outputs over every kernel (the oldest
requests lose their outputs first, then whole finished requests go, oldest first), and a finished request is
kept ``max_age`` seconds. A request that lost outputs says how many (``outputs_dropped``), never silently. A
live request is never forgotten: when every kept request is live, the REST front refuses a new one
(:meth:`RequestLedger.full`); one sent over a WebSocket front cannot be refused, and is kept past the bound
(:attr:`RequestLedger.past_bound`, logged) until finished ones can go.

In a fleet (:meth:`RequestLedger.share`), each request's record (:class:`~.execution.RequestRecord`: where
its messages start, and what only this relay sees of it, its reply and ``input()``) is kept for every relay
too: another relay rebuilds the request from it and the kernel's stream (:mod:`.requests`). A wait for a
request this ledger does not hold is woken by the kernel's ``idle`` for it, and by the kernel's end.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from ..kernels import SHELL, STDIN, KernelMessage
from .execution import (
    COMPLETE,
    ENDED,
    INPUT,
    QUEUED,
    RUNNING,
    Execution,
    RequestRecord,
    SharedRequests,
)
from .outputs import OUTPUT_TYPES

log = Logger()

#: The kernel's messages that may change what the fleet keeps of a request (its record).
_RECORDED: Final = frozenset({"status", "input_request", "execute_reply"})
#: Seconds a request whose reply came waits for its ``idle`` (and the outputs that may still come before it)
#: before it completes without: the idle comes within milliseconds, or was lost.
IDLE_GRACE: Final = 2.0


@dataclass(frozen=True)
class LedgerOptions:
    """The ledger's bounds: requests kept, bytes of outputs kept, seconds a finished request stays."""

    max_requests: int = 1000
    max_bytes: int = 1024 * 1024
    """
    Over every kernel, counted as the kernel's messages' bytes. The outputs are a second copy of what the
    iopub journals keep, outside the buffer budget: with 32 MiB a flood left the relay 45-55 MiB larger
    after its clients had gone, with 4 MiB 16-17 MiB (1 MiB: 10-11, as without a ledger). Reading the
    outputs back from the journal instead is the way to keep more: other relays of a fleet do so from the
    kernel's stream (:mod:`.requests`), but the accepting relay still answers from its own copy.
    """
    max_age: float = 3600.0


def kernel_gone(reason: str) -> bool:
    """Whether a kernel's end (``reason``) ends its requests everywhere (not only this relay's view of them)."""
    return reason == "restarting" or reason.startswith(("died", "shutdown"))


class RequestLedger:
    """Every kernel's recent requests, bounded in count, bytes and time."""

    def __init__(self, clock: IReactorTime, options: LedgerOptions | None = None) -> None:
        self._clock = clock
        self.options = options or LedgerOptions()
        self._requests: OrderedDict[tuple[str, str], Execution] = OrderedDict()
        self._waiters: dict[tuple[str, str], list[Deferred[None]]] = {}
        self._bytes = 0
        self._shared: SharedRequests | None = None
        self._last_seq: Callable[[str], int] = lambda kernel_id: 0

    def share(self, shared: SharedRequests, last_seq: Callable[[str], int]) -> None:
        """Keep each request's record in the fleet (``last_seq``: the kernel's latest ``relay_seq`` here)."""
        self._shared = shared
        self._last_seq = last_seq

    def __len__(self) -> int:
        return len(self._requests)

    @property
    def kept_bytes(self) -> int:
        return self._bytes

    @property
    def clock(self) -> IReactorTime:
        return self._clock

    @property
    def past_bound(self) -> int:
        """How many requests are kept past ``max_requests`` now (live ones, sent over a WebSocket front)."""
        return max(0, len(self._requests) - self._bound)

    def full(self) -> bool:
        """Whether one more request could be kept only by forgetting a live one: every one past the bound is."""
        self._expire()
        over = len(self._requests) + 1 - self._bound
        if over <= 0:
            return False
        return sum(1 for request in self._requests.values() if not request.live) < over

    # -- reads -------------------------------------------------------------------------------------------

    def get(self, kernel_id: str, msg_id: str) -> Execution | None:
        self._expire()
        return self._requests.get((kernel_id, msg_id))

    def recent(self, kernel_id: str) -> list[Execution]:
        """The kernel's requests still kept, oldest first."""
        self._expire()
        return [request for (kid, _), request in self._requests.items() if kid == kernel_id]

    def changed(self, kernel_id: str, msg_id: str) -> Deferred[None]:
        """Fires at the request's next change; cancelling it forgets the wait (the client went)."""
        key = (kernel_id, msg_id)
        waiters = self._waiters.setdefault(key, [])

        def cancelled(waiter: Deferred[None]) -> None:
            if waiter in waiters:
                waiters.remove(waiter)
            if not waiters and self._waiters.get(key) is waiters:
                del self._waiters[key]

        waiter: Deferred[None] = Deferred(cancelled)
        waiters.append(waiter)
        return waiter

    def waiting(self) -> int:
        """How many waits are pending (for tests: a client that went leaves none)."""
        return sum(len(waiters) for waiters in self._waiters.values())

    # -- feeds -------------------------------------------------------------------------------------------

    def submitted(self, kernel_id: str, msg_id: str, code: str, metadata: dict[str, Any]) -> None:
        """A client sent an ``execute_request`` to the kernel."""
        self._expire()
        key = (kernel_id, msg_id)
        if key in self._requests:
            return
        request = Execution(kernel_id, msg_id, code, metadata, self._clock.seconds())
        request.first = self._last_seq(kernel_id)
        self._requests[key] = request
        self._save(request)
        self._evict()

    def sent(self, kernel_id: str, channel: str, message: Mapping[str, Any], msg_id: str) -> None:
        """A client's message went to the kernel: an ``execute_request`` is a request, an ``input_reply`` answers one."""
        header = message.get("header")
        msg_type = header.get("msg_type") if isinstance(header, dict) else None
        if channel == SHELL and msg_type == "execute_request":
            content = message.get("content")
            code = content.get("code") if isinstance(content, dict) else None
            metadata = message.get("metadata")
            self.submitted(
                kernel_id,
                msg_id,
                code if isinstance(code, str) else "",
                metadata if isinstance(metadata, dict) else {},
            )
        elif channel == STDIN and msg_type == "input_reply":
            self.input_answered(kernel_id)

    def observe(self, kernel_id: str, message: KernelMessage) -> None:
        """A kernel's message on any channel: it counts if its parent is a known request."""
        request = self._requests.get((kernel_id, message.parent_msg_id))
        if request is None:
            if self._waiters and message.msg_type == "status":
                # Maybe a request of another relay that a client here waits for.
                self._wake((kernel_id, message.parent_msg_id))
            return
        # Its record changes with what only this relay may see (its reply, input()) and at its idle.
        kept = self._shared is not None and message.msg_type in _RECORDED
        before = request.record() if kept else None
        size = request.outputs.size
        if not request.fold(message, self._clock.seconds()):
            return
        if request.outputs.size != size:
            self._bytes += request.outputs.size - size
            if self._bytes > self.options.max_bytes:
                self._trim()
        if kept:
            self._save(request, before)
        self._touch(request)
        if message.msg_type == "execute_reply" and request.reply is not None:
            self._clock.callLater(IDLE_GRACE, self._reply_stands, request)

    def _end(self, request: Execution, reason: str, when: float) -> None:
        """A live request's kernel ended: one whose reply came (its idle did not) completed, the others end."""
        if request.reply is not None:
            self._complete(request, when)
        else:
            request.end(reason, when)
            self._touch(request)

    def _reply_stands(self, request: Execution) -> None:
        """No ``idle`` came for a request whose reply did: it completes with its reply."""
        key = (request.kernel_id, request.msg_id)
        if request.reply is not None and request.live and self._requests.get(key) is request:
            self._complete(request, self._clock.seconds())

    def _complete(self, request: Execution, when: float) -> None:
        """Complete a request with the reply it holds: its record (it is no longer live) is kept too."""
        before = request.record() if self._shared is not None else None
        request.reply_stands(when)
        self._save(request, before)
        self._touch(request)

    def lost(self, kernel_id: str, message: KernelMessage) -> None:
        """A kernel's output that was not relayed (over the size limit): its request says one is missing."""
        request = self._requests.get((kernel_id, message.parent_msg_id))
        if request is not None and message.msg_type in OUTPUT_TYPES:
            request.outputs.dropped += 1
            self._touch(request)

    def input_answered(self, kernel_id: str) -> None:
        """An ``input_reply`` went to the kernel: its request waiting for input runs again."""
        for (kid, _), request in self._requests.items():
            if kid == kernel_id and request.state == INPUT:
                request.state = RUNNING
                request.input_request = None
                self._touch(request)
        if self._shared is not None:
            self._shared.input_answered(kernel_id)  # its own requests' records, and other relays'

    def kernel_ended(self, kernel_id: str, reason: str) -> None:
        """
        The kernel died, stopped or restarts: its requests still running end, and say why (on every relay
        of a fleet when the kernel itself ended: :func:`kernel_gone`). Waits for other relays' requests of
        the kernel wake.
        """
        now = self._clock.seconds()
        for (kid, _), request in list(self._requests.items()):
            if kid == kernel_id and request.live:
                self._end(request, f"kernel {reason}", now)
        if self._shared is not None and kernel_gone(reason):
            self._shared.end_live(kernel_id, f"kernel {reason}")
        for key in [key for key in self._waiters if key[0] == kernel_id]:
            self._wake(key)

    def ended_elsewhere(self, kernel_id: str, msg_id: str, reason: str, when: float) -> None:
        """
        The fleet's record says the request ended (``reason``): its kernel, managed by another relay,
        restarted or died there, which this relay's core does not hear of. It ends here too if still live.
        """
        request = self._requests.get((kernel_id, msg_id))
        if request is not None and request.live:
            self._end(request, reason, when)

    # -- inside ------------------------------------------------------------------------------------------

    def _save(self, request: Execution, before: RequestRecord | None = None) -> None:
        """Keep the request's record in the fleet, if it has changed (``before``: its record until now)."""
        if self._shared is not None:
            record = request.record()
            if record != before:
                self._shared.save(request.kernel_id, record)

    def _touch(self, request: Execution) -> None:
        request.version += 1
        self._wake((request.kernel_id, request.msg_id))

    def _wake(self, key: tuple[str, str]) -> None:
        for waiter in self._waiters.pop(key, []):
            waiter.callback(None)

    def _trim(self) -> None:
        """Over the byte bound: the oldest requests lose their outputs first."""
        for request in self._requests.values():
            if self._bytes <= self.options.max_bytes:
                return
            freed = request.outputs.drop_until(
                request.outputs.size - (self._bytes - self.options.max_bytes)
            )
            if freed:
                self._bytes -= freed
                self._touch(request)

    def _expire(self) -> None:
        """Finished requests older than ``max_age`` go."""
        horizon = self._clock.seconds() - self.options.max_age
        expired = []
        # Oldest first: one submitted after the horizon finished after it too, as did every later one.
        for key, request in self._requests.items():
            if request.submitted >= horizon:
                break
            if request.finished is not None and request.finished < horizon:
                expired.append(key)
        for key in expired:
            self._forget(key)

    @property
    def _bound(self) -> int:
        return max(self.options.max_requests, 1)

    def _evict(self) -> None:
        """Over the count bound: finished requests go, oldest first; live ones stay (past the bound, logged)."""
        over = len(self._requests) - self._bound
        if over <= 0:
            return
        finished: list[tuple[str, str]] = []
        for key, request in self._requests.items():
            if len(finished) == over:
                break
            if not request.live:
                finished.append(key)
        for key in finished:
            self._forget(key)
        if len(finished) < over and self.past_bound == 1:  # once as it begins, not at each one
            log.warn(
                "Every execution request kept ({kept}, --requests-kept) still runs: the ledger keeps "
                "those sent over WebSocket fronts past its bound until some end",
                kept=self._bound,
            )

    def _forget(self, key: tuple[str, str]) -> None:
        request = self._requests.pop(key)
        self._bytes -= request.outputs.size
        self._wake(key)


__all__ = [
    "COMPLETE",
    "ENDED",
    "IDLE_GRACE",
    "INPUT",
    "QUEUED",
    "RUNNING",
    "Execution",
    "LedgerOptions",
    "RequestLedger",
    "kernel_gone",
]

"""
The request ledger: every ``execute_request`` a kernel was sent, by any front, readable again by its
``msg_id`` — its state, ``execution_count``, its outputs so far (nbformat's form, :mod:`.outputs`), and
whether all of them are still kept. A client that reloads, or a second client, reads a cell's output here.

The core feeds it where it already sees the traffic: a client's shell request (:meth:`RequestLedger.submitted`),
every iopub message and every shell and stdin message of a kernel (:meth:`RequestLedger.observe`, matched by
parent ``msg_id``; a message not about a known request costs one dict lookup), the end of a kernel
(:meth:`RequestLedger.kernel_ended`). It knows no wire format.

Bounded: at most ``max_requests`` requests and ``max_bytes`` of outputs over every kernel (the oldest
requests lose their outputs first, then whole requests go), and a finished request is kept ``max_age``
seconds. A request that lost outputs says how many (``outputs_dropped``), never silently.

Later (the fleet): the outputs could be rebuilt from the kernel's numbered iopub stream instead of being kept
here: a record would keep the ``relay_seq`` of its first and last message, and :meth:`observe` is then the
same fold over the journal's (or Redis's) messages of that range whose parent is the request.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime

from ..kernels import SHELL, STDIN, KernelMessage
from .outputs import OUTPUT_TYPES, Outputs

#: The request's states: sent and not yet started; running; waiting for ``input()``; finished (a reply came);
#: ended without a reply (its kernel died or restarted: ``ended`` says why).
QUEUED: Final = "queued"
RUNNING: Final = "running"
INPUT: Final = "input"
COMPLETE: Final = "complete"
ENDED: Final = "ended"
_LIVE: Final = frozenset({QUEUED, RUNNING, INPUT})


@dataclass(frozen=True)
class LedgerOptions:
    """The ledger's bounds: requests kept, bytes of outputs kept, seconds a finished request stays."""

    max_requests: int = 1000
    max_bytes: int = 1024 * 1024
    """
    Over every kernel, counted as the kernel's messages' bytes. The outputs are a second copy of what the
    iopub journals keep, outside the buffer budget: with 32 MiB a flood left the relay 45-55 MiB larger
    after its clients had gone, with 4 MiB 16-17 MiB (1 MiB: 10-11, as without a ledger). Reading the
    outputs back from the journal instead is the way to keep more (see the module's docstring).
    """
    max_age: float = 3600.0


@dataclass
class Execution:
    """One request: what was asked, and what the kernel answered so far."""

    kernel_id: str
    msg_id: str
    code: str
    metadata: dict[str, Any]
    submitted: float
    state: str = QUEUED
    status: str | None = None
    """The ``execute_reply``'s status (``ok``, ``error``, ``aborted``) once it came."""
    execution_count: int | None = None
    outputs: Outputs = field(default_factory=Outputs)
    input_request: dict[str, Any] | None = None
    """``{"prompt", "password"}`` while the request waits for ``input()``."""
    ended: str | None = None
    """Why the request ended without a reply (its kernel died, restarted, stopped)."""
    finished: float | None = None
    inferred: bool = False
    """Whether its status was read from its ``idle`` and outputs, no ``execute_reply`` seen yet."""
    version: int = 0

    @property
    def live(self) -> bool:
        return self.state in _LIVE

    def summary(self) -> dict[str, Any]:
        """What any reader is told of the request (no wire format: the front shapes it)."""
        return {
            "msg_id": self.msg_id,
            "kernel_id": self.kernel_id,
            "state": self.state,
            "status": self.status,
            "execution_count": self.execution_count,
            "outputs": list(self.outputs.items),
            "outputs_dropped": self.outputs.dropped,
            "complete_outputs": self.outputs.dropped == 0,
            "input_request": self.input_request,
            "ended": self.ended,
            "metadata": self.metadata,
        }


class RequestLedger:
    """Every kernel's recent requests, bounded in count, bytes and time."""

    def __init__(self, clock: IReactorTime, options: LedgerOptions | None = None) -> None:
        self._clock = clock
        self.options = options or LedgerOptions()
        self._requests: OrderedDict[tuple[str, str], Execution] = OrderedDict()
        self._waiters: dict[tuple[str, str], list[Deferred[None]]] = {}
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._requests)

    @property
    def kept_bytes(self) -> int:
        return self._bytes

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
        self._requests[key] = Execution(kernel_id, msg_id, code, metadata, self._clock.seconds())
        while len(self._requests) > max(self.options.max_requests, 1):
            self._forget(next(iter(self._requests)))

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
            return
        msg_type = message.msg_type
        if not request.live:
            if request.inferred and msg_type == "execute_reply":
                self._replied(request, message.content)  # the reply after the idle it was read from
                self._touch(request)
            return
        if msg_type in OUTPUT_TYPES:
            self._output(request, message)
        elif msg_type == "execute_input":
            count = message.content.get("execution_count")
            request.execution_count = count if isinstance(count, int) else None
            request.state = RUNNING
        elif msg_type == "status":
            self._status(request, message.content.get("execution_state"))
        elif msg_type == "input_request":
            content = message.content
            request.input_request = {
                "prompt": str(content.get("prompt", "")),
                "password": bool(content.get("password", False)),
            }
            request.state = INPUT
        elif msg_type == "execute_reply":
            self._replied(request, message.content)
        else:
            return
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

    def kernel_ended(self, kernel_id: str, reason: str) -> None:
        """The kernel died, stopped or restarts: its requests still running end, and say why."""
        now = self._clock.seconds()
        for (kid, _), request in list(self._requests.items()):
            if kid == kernel_id and request.live:
                request.state = ENDED
                request.ended = f"kernel {reason}"
                request.input_request = None
                request.finished = now
                self._touch(request)

    # -- inside ------------------------------------------------------------------------------------------

    def _output(self, request: Execution, message: KernelMessage) -> None:
        before = request.outputs.size
        request.outputs.add(message.msg_type, message.content, message.size)
        self._bytes += request.outputs.size - before
        if self._bytes > self.options.max_bytes:
            self._trim()

    def _status(self, request: Execution, state: object) -> None:
        """
        ``busy``: it runs. ``idle``: it ended; its reply may never come here (its client went and its line
        closed), so its status is read from its outputs until the reply, if any, says.
        """
        if state == "busy":
            request.state = RUNNING
        elif state == "idle":
            errors = request.outputs.has_error
            request.status = "error" if errors else "ok"
            request.state = COMPLETE
            request.inferred = True
            request.input_request = None
            request.finished = self._clock.seconds()

    def _replied(self, request: Execution, content: dict[str, Any]) -> None:
        request.inferred = False
        status = content.get("status")
        request.status = status if isinstance(status, str) else "error"
        count = content.get("execution_count")
        if isinstance(count, int):
            request.execution_count = count
        request.state = COMPLETE
        request.input_request = None
        request.finished = self._clock.seconds()

    def _touch(self, request: Execution) -> None:
        request.version += 1
        waiters = self._waiters.pop((request.kernel_id, request.msg_id), [])
        for waiter in waiters:
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
        expired = [
            key
            for key, request in self._requests.items()
            if request.finished is not None and request.finished < horizon
        ]
        for key in expired:
            self._forget(key)

    def _forget(self, key: tuple[str, str]) -> None:
        request = self._requests.pop(key)
        self._bytes -= request.outputs.size
        for waiter in self._waiters.pop(key, []):
            waiter.callback(None)

"""
One request (:class:`Execution`) and the fold that makes it from its kernel's messages: the ledger
(:mod:`.ledger`) runs it on the messages as they come, and a relay of a fleet that did not accept the request
runs the same fold over the fleet's stream of the kernel (:mod:`.requests`). What the fleet keeps of a request
besides its messages (:class:`RequestRecord`: what only the accepting relay sees, its reply and
``input()``) is written here too, and read back into a request.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final, Protocol

from twisted.internet.defer import Deferred

from ..kernels import KernelMessage
from .outputs import OUTPUT_TYPES, Outputs

#: The request's states: sent and not yet started; running; waiting for ``input()``; finished (a reply came);
#: ended without a reply (its kernel died or restarted: ``ended`` says why).
QUEUED: Final = "queued"
RUNNING: Final = "running"
INPUT: Final = "input"
COMPLETE: Final = "complete"
ENDED: Final = "ended"
_LIVE: Final = frozenset({QUEUED, RUNNING, INPUT})
#: The longest text a record keeps of a cell's ``cell_id``, ``document_path`` or ``input()`` prompt.
RECORD_TEXT: Final = 256


@dataclass(frozen=True)
class RequestRecord:
    """
    What the fleet keeps of a request beside its kernel's stream: what only the relay that accepted it sees
    (the reply on its shell line, the ``input_request`` on its stdin line), and where its messages start.
    """

    msg_id: str
    first: int
    """The kernel's latest ``relay_seq`` when the request was sent: its messages come after."""
    submitted: float
    cell_id: str | None = None
    document_path: str | None = None
    status: str | None = None
    """The reply's status, or the one read from its outputs at its ``idle`` (``inferred``)."""
    inferred: bool = False
    execution_count: int | None = None
    input_request: dict[str, Any] | None = None
    ended: str | None = None
    finished: float | None = None

    @property
    def live(self) -> bool:
        return self.status is None and self.ended is None


class SharedRequests(Protocol):
    """
    Where a fleet keeps its requests' records, for every relay (``kernel_relay.fleet.requests``): declared
    here, below the ledger that writes them and the fleet that keeps them, so neither imports the other.
    """

    def save(self, kernel_id: str, record: RequestRecord) -> None:
        """Keep (or update) the record; a failure is the store's to log, never the caller's."""

    def load(self, kernel_id: str, msg_id: str) -> Deferred[RequestRecord | None]:
        """The record, None when the fleet keeps none (or cannot be reached)."""

    def end_live(self, kernel_id: str, reason: str) -> None:
        """The kernel restarted or ended (``reason``): every record of it still live ends, saying why."""

    def input_answered(self, kernel_id: str) -> None:
        """An ``input_reply`` went to the kernel (from this relay): no record of it waits for input now."""

    def written(self, kernel_id: str) -> Deferred[None]:
        """Fires once every write of the kernel's records begun here so far is answered (or failed)."""

    def recent(self, kernel_id: str) -> Deferred[list[RequestRecord]]:
        """The kernel's records, oldest first."""


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
    first: int = 0
    """The kernel's latest ``relay_seq`` when it was sent (its messages come after)."""
    started: bool = False
    """Whether its first message (the kernel's ``busy`` for it) was seen."""
    cancelled: bool = False
    """Whether a client asked to stop it (its idle without a reply then means the kernel dropped it)."""
    reply: dict[str, Any] | None = None
    """
    Its ``execute_reply``'s status and count, come while it ran: the kernel sends the reply before its
    ``idle``, and its outputs before both, but on another socket, so outputs can still come after the reply.
    It completes at the ``idle`` (or by :meth:`reply_stands`, when no idle comes).
    """

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

    # -- the fold ----------------------------------------------------------------------------------------

    def fold(self, message: KernelMessage, now: float) -> bool:
        """One of the kernel's messages whose parent is this request; whether it changed the request."""
        msg_type = message.msg_type
        if not self.live:
            if self.inferred and msg_type == "execute_reply":
                self.replied(message.content, now)  # the reply after the idle it was read from
                return True
            return False
        if msg_type in OUTPUT_TYPES:
            self.outputs.add(msg_type, message.content, message.size)
        elif msg_type == "execute_input":
            count = message.content.get("execution_count")
            self.execution_count = count if isinstance(count, int) else None
            self.state = RUNNING
        elif msg_type == "status":
            self._status(message.content.get("execution_state"), now)
        elif msg_type == "input_request":
            content = message.content
            self.input_request = {
                "prompt": str(content.get("prompt", "")),
                "password": bool(content.get("password", False)),
            }
            self.state = INPUT
        elif msg_type == "execute_reply":
            content = message.content
            self.reply = {
                "status": content.get("status"),
                "execution_count": content.get("execution_count"),
            }
        else:
            return False
        return True

    def _status(self, state: object, now: float) -> None:
        """
        ``busy``: it runs. ``idle``: it ended; its reply may never come here (its client went and its line
        closed, or it was cancelled), so its status is read from its outputs until the reply, if any, says.
        """
        if state == "busy":
            self.state = RUNNING
            self.started = True
        elif state == "idle" and self.reply is not None:
            self.reply_stands(now)
        elif state == "idle":
            # An interrupt that lands after its execute_input but before the kernel runs the code stops
            # the request with no reply and no error (ipykernel logs "KeyboardInterrupt caught in kernel").
            self.status = (
                "error" if self.outputs.has_error else "aborted" if self.cancelled else "ok"
            )
            self.state = COMPLETE
            self.inferred = True
            self.input_request = None
            self.finished = now

    def replied(self, content: dict[str, Any], now: float) -> None:
        """Its ``execute_reply``: it is complete now."""
        self.reply = content
        self.reply_stands(now)

    def reply_stands(self, now: float) -> None:
        """Complete with its reply (at its ``idle``, or once no idle came for a while)."""
        content, self.reply = self.reply or {}, None
        self.inferred = False
        status = content.get("status")
        self.status = status if isinstance(status, str) else "error"
        count = content.get("execution_count")
        if isinstance(count, int):
            self.execution_count = count
        self.state = COMPLETE
        self.input_request = None
        self.finished = now

    def end(self, reason: str, now: float) -> None:
        """Its kernel ended (``reason``) while it ran."""
        self.state = ENDED
        self.ended = reason
        self.status, self.inferred, self.reply = None, False, None
        self.input_request = None
        self.finished = now

    # -- what the fleet keeps ----------------------------------------------------------------------------

    def record(self) -> RequestRecord:
        """What the fleet keeps of the request (its outputs are its kernel's stream's)."""
        prompt = self.input_request if self.state == INPUT else None
        return RequestRecord(
            msg_id=self.msg_id,
            first=self.first,
            submitted=self.submitted,
            cell_id=_text(self.metadata.get("cell_id")),
            document_path=_text(self.metadata.get("document_path")),
            status=self.status if self.state == COMPLETE else None,
            inferred=self.inferred,
            execution_count=self.execution_count,
            input_request=None
            if prompt is None
            else {**prompt, "prompt": str(prompt.get("prompt", ""))[:RECORD_TEXT]},
            ended=self.ended,
            finished=self.finished,
        )

    @classmethod
    def of_record(cls, kernel_id: str, record: RequestRecord) -> Execution:
        """A request another relay accepted, before its kernel's messages are folded in."""
        metadata = {
            name: value
            for name, value in (
                ("cell_id", record.cell_id),
                ("document_path", record.document_path),
            )
            if value is not None
        }
        return cls(kernel_id, record.msg_id, "", metadata, record.submitted, first=record.first)

    def settle(self, record: RequestRecord, trimmed: bool, done: float | None, now: float) -> None:
        """
        After the fold over what the fleet's stream keeps: what only the accepting relay saw (``record``)
        completes it. ``trimmed``: the stream no longer holds all that came after ``first``; ``done``:
        when the message that finished it was numbered (its kernel's end, if after, wins: as its relay says).
        """
        if trimmed and not self.started and (self.version or not record.live):
            self.outputs.dropped = max(self.outputs.dropped, 1)  # its start is gone: at least one
        ended = record.ended is not None and (done is None or done >= (record.finished or now))
        if record.status is not None and not record.inferred:
            self.replied({"status": record.status, "execution_count": record.execution_count}, now)
            self.finished = record.finished
        elif record.ended is not None and (self.live or (ended and self.inferred)):
            self.end(record.ended, record.finished or now)
        elif self.live and record.input_request is not None:
            self.input_request = dict(record.input_request)
            self.state = INPUT
        elif self.live and record.status is not None:
            self.status, self.inferred, self.state = record.status, True, COMPLETE
            self.finished = record.finished
        if self.execution_count is None:
            self.execution_count = record.execution_count


def _text(value: object) -> str | None:
    return value[:RECORD_TEXT] if isinstance(value, str) else None

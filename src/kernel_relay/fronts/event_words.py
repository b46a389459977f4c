"""
The words of the core's events (:mod:`kernel_relay.relay.events`) as the fronts send them: an event name
(``"error"`` or ``"replay_gap"``) and a JSON object of details with a human ``message``.

The socket.io front emits them as they are; the Jupyter front carries them in the metadata of a ``stream``
message it shows on stderr. Nothing here names a protocol's own forms (events, frames, headers).
"""

from __future__ import annotations

from typing import Any, Final

from ..relay.events import (
    ClientEvent,
    KernelUnreachable,
    MessageRefused,
    MessageTooBig,
    MessageUnplaced,
    ReplayAhead,
    ReplayBacklogged,
    ReplayCut,
    ReplayExpired,
    ReplayGap,
)

ERROR: Final = "error"
REPLAY_GAP: Final = "replay_gap"


def event_name(event: ClientEvent) -> str:
    """``"replay_gap"`` for output a client will not get, ``"error"`` for the rest."""
    return REPLAY_GAP if isinstance(event, ReplayGap) else ERROR


def details_of(event: ClientEvent, kernel_id: str) -> dict[str, Any]:
    """The event's details for a client of kernel ``kernel_id``."""
    if isinstance(event, ReplayGap):
        return _gap_details(event, kernel_id)
    match event:
        case MessageRefused(reason, msg_id):
            return {"message": reason, "msg_id": msg_id}
        case MessageTooBig(msg_type, size, limit, msg_id, parent_msg_id, channel):
            return {
                "message": f"a {msg_type} message of {size} bytes from the kernel exceeds the relay's "
                f"limit of {limit} bytes and was not forwarded",
                "msg_id": msg_id,
                "msg_type": msg_type,
                "parent_msg_id": parent_msg_id,
                "channel": channel,
            }
        case KernelUnreachable(silent_for):
            return {
                "message": f"kernel {kernel_id} has not answered its heartbeat for {silent_for:.0f}s: its "
                "process is frozen or its ZeroMQ ports are unreachable; messages to it wait until it "
                "answers again or is shut down",
                "code": "kernel_unreachable",
                "kernel_id": kernel_id,
            }
    raise TypeError(f"not an event of the core: {event!r}")  # pragma: no cover


def _gap_details(gap: ReplayGap, kernel_id: str) -> dict[str, Any]:
    match gap:
        case ReplayBacklogged(backlog, last_seq):
            message = (
                f"nothing was replayed: {backlog} bytes sent earlier still wait to go out to this "
                "client; join again once it has read them"
            )
            return _gap("backlog", message, kernel_id, last_seq=last_seq)
        case ReplayExpired(first, last, problem):
            message = problem or f"messages {first} to {last} are no longer kept"
            return _gap("expired", message, kernel_id, first=first, last=last)
        case ReplayAhead(since, last_seq):
            message = (
                f"sequence {since} was never sent: this relay's sequence for the kernel is at "
                f"{last_seq} (numbers start again at 1 when the relay restarts)"
            )
            return _gap("ahead", message, kernel_id, last_seq=last_seq)
        case MessageUnplaced(last_seq):
            message = (
                "a message of the kernel reached this relay after the fleet's stream had moved "
                "past it: it is not delivered here"
            )
            return _gap("fleet", message, kernel_id, last_seq=last_seq)
        case ReplayCut(first, last, why):
            message = (
                f"the replay was cut short (kernel {why}): messages {first} to {last} were not sent"
            )
            return _gap("ended", message, kernel_id, first=first, last=last)
    raise TypeError(f"not a replay gap: {gap!r}")  # pragma: no cover


def _gap(
    reason: str,
    message: str,
    kernel_id: str,
    *,
    last_seq: int | None = None,
    first: int | None = None,
    last: int | None = None,
) -> dict[str, Any]:
    details: dict[str, Any] = {"reason": reason, "message": message}
    if last_seq is not None:
        details["last_seq"] = last_seq
    if first is not None:
        details["from"], details["to"] = first, last
    details["kernel_id"] = kernel_id
    return details

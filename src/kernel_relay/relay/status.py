"""
The iopub ``status`` messages the relay makes itself, for states a kernel cannot announce (``dead``,
``restarting``) or that its clients would miss while its sockets reconnect.
"""

from __future__ import annotations

import uuid
from typing import Any, Final

from twisted.internet.interfaces import IReactorTime

from ..kernels import DEFAULT_USERNAME, IOPUB, PROTOCOL_VERSION, Kernel, iso_date
from .payload import Outgoing

#: Roughly the bytes of a status message the relay makes (for metrics and the journal's bound).
STATUS_SIZE: Final = 300
#: The metadata of the relay's ``restarting`` status for a restart a client asked for (the relay never
#: restarts a kernel by itself: one that dies is announced ``dead``).
REQUESTED_RESTART: Final = {"kernel_relay": {"restart": "requested"}}
_RESTARTING_CONTENT: Final = b'{"execution_state":"restarting"}'
_REQUESTED_MARK: Final = b'"restart":"requested"'


def is_requested_restart(message: Outgoing) -> bool:
    """
    Whether ``message`` is the relay's ``restarting`` status for a restart a client asked for: Jupyter Server
    sends none for those, and its clients read ``restarting`` as "the server restarted a dead kernel".
    """
    content = message.parts[3]
    return (
        len(content) == len(_RESTARTING_CONTENT)
        and bytes(content) == _RESTARTING_CONTENT
        and _REQUESTED_MARK in bytes(message.parts[2])
    )


def relay_status(
    kernel: Kernel,
    execution_state: str,
    clock: IReactorTime,
    metadata: dict[str, Any] | None = None,
) -> Outgoing:
    """An iopub ``status`` message made by the relay for ``kernel``."""
    return Outgoing.of_dict(
        {
            "header": {
                "msg_id": uuid.uuid4().hex,
                "msg_type": "status",
                "username": DEFAULT_USERNAME,
                "session": kernel.id,
                "date": iso_date(clock.seconds()),
                "version": PROTOCOL_VERSION,
            },
            "parent_header": {},
            "metadata": metadata or {},
            "content": {"execution_state": execution_state},
            "channel": IOPUB,
        }
    )


#: The metadata mark of the state a joining iopub client is told first (:func:`current_state`).
CURRENT_STATE: Final = {"state": "current"}


def current_state(kernel: Kernel, clock: IReactorTime, seq: int) -> Outgoing:
    """
    The kernel's state as a ``status`` for one joining iopub client, before anything else (no client is left
    with "Unknown"). It is kept in no journal; it carries ``relay_seq`` ``seq``, the number the client has
    already read up to (so a client that keeps the last number it saw resumes right), and the mark
    ``metadata.kernel_relay.state``.
    """
    message = relay_status(
        kernel,
        kernel.execution_state,
        clock,
        {"relay_seq": seq, "kernel_relay": CURRENT_STATE},
    )
    message.seq = seq
    return message

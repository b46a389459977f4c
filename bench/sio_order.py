"""
python-socketio's client, made to hand events to their handlers in the order they arrive: the bench's
watchers and the tests' clients count repeats and holes by order, and resume from the last number seen.
"""

from __future__ import annotations

from typing import Any

import socketio


def in_arrival_order(client: socketio.Client) -> socketio.Client:
    """
    Handle the client's events in the order they arrive. python-engineio runs each message's handler in a
    thread of its own, so two events of one burst could be recorded in either order, and a client that
    disconnects could resume from before a message whose handler had not run yet (and get it twice). Events
    (plain and binary, and binary attachments) are handled in its reading thread instead, the rest as
    before (a disconnect waits for that thread).
    """
    eio = client.eio
    trigger = eio._trigger_event

    def in_order(event: str, *args: Any, **kwargs: Any) -> Any:
        if event == "message" and args:
            data = args[0]
            if isinstance(data, bytes) or (isinstance(data, str) and data[:1] in ("2", "5")):
                kwargs["run_async"] = False
        return trigger(event, *args, **kwargs)

    eio._trigger_event = in_order
    return client


__all__ = ["in_arrival_order"]

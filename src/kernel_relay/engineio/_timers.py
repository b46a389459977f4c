"""The one helper the session's timers share: cancel a delayed call that may have run or be gone."""

from __future__ import annotations

from twisted.internet.interfaces import IDelayedCall


def cancel(call: IDelayedCall | None) -> None:
    """Cancel ``call`` if it is still pending (it may have run, or be None)."""
    if call is not None and call.active():
        call.cancel()

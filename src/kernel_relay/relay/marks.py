"""
Where the sessions of a fleet stopped reading (:class:`SharedMarks`): declared here, below the fronts that
use it and the fleet that keeps it, so neither imports the other.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from twisted.internet.defer import Deferred


class SharedMarks(Protocol):
    """
    Where the sessions of a fleet stopped reading, kept where every relay finds them (``kernel_relay.fleet``):
    a Jupyter client sends no ``since``, so its ``session_id`` is all another relay has to resume it by.
    """

    def save(self, kernel_id: str, marks: Mapping[str, tuple[int, str | None]]) -> None:
        """
        Where each of these sessions of a kernel is: its last ``relay_seq`` and the ``msg_id`` of that
        message's parent. A session is named by its principal and its id (a Jupyter session's key).
        """

    def load(
        self, kernel_id: str, session_key: str, patient: bool = False, wait: float = 2.0
    ) -> Deferred[tuple[int, str | None] | None]:
        """
        Where the session stopped (None: new to the fleet), within ``wait`` seconds; ``patient``: asked
        again while the fleet cannot say yet (for a relay that would otherwise go by an older mark of its
        own). A mark the fleet is not sure is the freshest is asked again too, and is the answer if the wait
        runs out; with none, it fails.
        """

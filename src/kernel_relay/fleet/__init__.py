"""
The fleet: relays that share one Redis serve every kernel any of them started, and adopt the kernels of a
relay that dies. Absent without ``--redis``. See :mod:`.fleet` for how (the service, and its parts by role:
:mod:`.state`, :mod:`.records`, :mod:`.mailbox`, :mod:`.guests`, :mod:`.owned`, :mod:`.owners`,
:mod:`.tokens`, :mod:`.marks`, :mod:`.capacity`, :mod:`.ledger`), :mod:`.store` for what Redis holds (over
:mod:`.connection` and :mod:`.scripts`), and :mod:`.numbering` for the shared ``relay_seq``.
"""

from .fleet import Fleet
from .numbering import SharedNumbering
from .store import FleetStore, FleetUnavailable, RedisURL

__all__ = ["Fleet", "FleetStore", "FleetUnavailable", "RedisURL", "SharedNumbering"]

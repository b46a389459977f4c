"""
The open-file limit, and the connection bounds it allows. Each connection costs a file descriptor, and so
does each kernel the relay starts: :func:`raise_open_file_limit` raises the process's soft ``RLIMIT_NOFILE``
to its hard limit, as servers do, and :meth:`ConnectionBounds.from_file_limit` derives the bounds
:class:`~kernel_relay.http.connections.ConnectionLimiter` enforces from the limit in force, keeping a reserve
for kernels and the relay's own files.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from twisted.logger import Logger

log = Logger()

#: The soft open-file limit :func:`raise_open_file_limit` sets when the hard limit is unlimited (or higher).
MAX_OPEN_FILES: Final = 1_048_576
#: What :func:`raise_open_file_limit` reports when it cannot read the limit at all.
FALLBACK_OPEN_FILES: Final = 1024
#: Descriptors :meth:`ConnectionBounds.from_file_limit` keeps back from connections, at least.
MIN_RESERVE: Final = 256
MIN_CONNECTIONS: Final = 16
MIN_PER_ADDRESS: Final = 16
#: Connections on probation at once (over their address's share, see ConnectionLimiter), at least.
MIN_PROBATION: Final = 16


def raise_open_file_limit(cap: int = MAX_OPEN_FILES) -> int:
    """
    Raise the soft ``RLIMIT_NOFILE`` to the hard limit (at most ``cap``) and return the soft limit now in
    force. Never raises: a failure is logged and the limit as it was is returned (or
    :data:`FALLBACK_OPEN_FILES` where it cannot be read). Kernels the relay starts inherit the new limit.
    """
    try:
        import resource
    except ImportError:  # not POSIX
        return FALLBACK_OPEN_FILES
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (OSError, ValueError) as error:
        log.warn("Could not read the open file limit: {error}", error=str(error))
        return FALLBACK_OPEN_FILES
    target = cap if hard == resource.RLIM_INFINITY else min(hard, cap)
    if soft != resource.RLIM_INFINITY and soft >= target:
        return soft
    if soft == resource.RLIM_INFINITY:
        return cap
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (OSError, ValueError) as error:
        log.warn(
            "Could not raise the open file limit from {soft} to {target}: {error}",
            soft=soft,
            target=target,
            error=str(error),
        )
        return soft
    log.info("Raised the open file limit from {soft} to {target}", soft=soft, target=target)
    return target


@dataclass(frozen=True)
class ConnectionBounds:
    """
    How many connections the site holds at once, in all and from one client address, and how many more
    it lets in on probation (over their address's share, to present a token).
    """

    max_connections: int
    max_per_address: int
    max_probation: int = MIN_PROBATION

    def __post_init__(self) -> None:
        if self.max_connections < 1 or self.max_per_address < 1 or self.max_probation < 1:
            raise ValueError(f"connection bounds must be positive: {self}")

    @classmethod
    def from_file_limit(cls, nofile: int) -> ConnectionBounds:
        """
        Bounds that leave file descriptors for authenticated work out of ``nofile`` (the open file limit).

        A kernel spawn takes a dozen descriptors or more (its ZeroMQ sockets, pipes, the connection file),
        and the relay has files of its own, so a reserve of ``max(256, nofile // 4)`` is kept back:
        ``max_connections = nofile - reserve``, but never below 16. One address may hold a quarter of
        that, ``max_per_address = max(16, max_connections // 4)``. So 1024 gives 768 connections, 192 per
        address; 1,048,576 gives 786,432 and 196,608; 256 or less gives 16 and 16. Connections on probation
        come out of the reserve: ``max(16, max_connections // 64)`` of them.
        """
        reserve = max(MIN_RESERVE, nofile // 4)
        max_connections = max(MIN_CONNECTIONS, nofile - reserve)
        return cls(
            max_connections,
            max(MIN_PER_ADDRESS, max_connections // 4),
            max(MIN_PROBATION, max_connections // 64),
        )

"""
Admission: which kernel and which of its channels a client's credentials open (see :mod:`kernel_relay.auth`:
a kernel token opens only its kernel, a read-only one its iopub), and whether the kernel has room for one more
client (``max_clients_per_kernel``). Refusals are counted, logged and raised as :class:`~.client.Refused`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from twisted.logger import Logger

from ..auth import Scope, TokenAuth
from ..kernels import CONTROL, IOPUB, SHELL, STDIN, Kernel, KernelRegistry, UnknownKernel
from ..metrics import RelayMetrics
from .client import Refused, short_id

log = Logger()

#: The channels a Jupyter connection asks for at once, iopub first (it needs that one at least).
CONNECTION_CHANNELS = (IOPUB, SHELL, CONTROL, STDIN)


class Admission:
    """Decides who may attach where (see the module doc)."""

    def __init__(
        self,
        kernels: KernelRegistry,
        auth: TokenAuth,
        metrics: RelayMetrics,
        max_clients_per_kernel: int | None,
        attached: Callable[[str, str], bool],
        client_count: Callable[[str], int],
    ) -> None:
        self._kernels = kernels
        self._auth = auth
        self._metrics = metrics
        self._limit = max_clients_per_kernel
        self._attached = attached
        self._client_count = client_count

    def admit(
        self,
        address: str,
        client_id: str | None,
        kernel_id: str,
        channel: str,
        credentials: Sequence[str | None],
    ) -> Kernel:
        """The kernel a client (``client_id``: None for one not yet made) may attach to on ``channel``."""
        grant = self._auth.grant(credentials)
        where = f"{channel} of kernel {short_id(kernel_id)}"
        if isinstance(grant, Scope) and not grant.allows_channel(kernel_id, channel):
            self._metrics.error("auth")
            log.warn(
                "Refused {address} on {where}: its token is limited to {access} access to kernel {kernel}",
                address=address,
                where=where,
                access=grant.access,
                kernel=short_id(grant.kernel_id),
            )
            raise Refused(grant.refusal, 403)
        if grant is False:
            self._metrics.error("auth")
            log.warn("Refused {address} on {where}: no valid token", address=address, where=where)
            raise Refused("Authentication required", 401)
        try:
            kernel = self._kernels.get(kernel_id)
        except UnknownKernel:
            self._metrics.error("connect_refused")
            log.info(
                "Refused {address} on {where}: no running kernel has that id",
                address=address,
                where=where,
            )
            raise Refused(f"No running kernel with id {kernel_id}", 404) from None
        self._check_room(address, client_id, kernel, where)
        return kernel

    def _check_room(self, address: str, client_id: str | None, kernel: Kernel, where: str) -> None:
        limit = self._limit
        if limit is None or (client_id is not None and self._attached(kernel.id, client_id)):
            return
        if self._client_count(kernel.id) >= limit:
            self._metrics.error("connect_refused")
            log.warn(
                "Refused {address} on {where}: kernel has {limit} clients already",
                address=address,
                where=where,
                limit=limit,
            )
            raise Refused(f"Kernel {kernel.id} already has the maximum of {limit} clients", 429)

    def channels(
        self, address: str, kernel_id: str, credentials: Sequence[str | None]
    ) -> tuple[Kernel, tuple[str, ...]]:
        """
        The kernel and every channel of it that ``credentials`` open to a new client, iopub first;
        :class:`Refused` when they do not open its iopub, or the kernel is unknown or full.
        """
        kernel = self.admit(address, None, kernel_id, IOPUB, credentials)
        grant = self._auth.grant(credentials)
        allowed = tuple(
            channel
            for channel in CONNECTION_CHANNELS
            if not isinstance(grant, Scope) or grant.allows_channel(kernel.id, channel)
        )
        return kernel, allowed

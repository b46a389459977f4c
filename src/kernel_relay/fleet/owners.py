# -*- test-case-name: tests.fleet.test_fleet -*-
"""
Acting on guests (``KernelOwners``): interrupt, restart and shutdown of a kernel another relay manages are
asked of that relay through the mailboxes, and answered there; a kernel whose owner is gone is adopted first
and acted on here.
"""

from __future__ import annotations

from typing import Any, Final

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from ..kernels import KernelLaunchError, KernelRegistry, UnknownKernel
from .guests import FleetGuests
from .mailbox import Mailbox, NoReply, Unreachable
from .state import FleetState
from .store import FleetStore

log = Logger()

#: How long a command for another relay's kernel may wait for that relay's answer, beyond its own work.
COMMAND_GRACE: Final = 10.0


class FleetOwners:
    """Asks owners to act on their kernels, and acts when asked; see the module docstring."""

    def __init__(
        self,
        store: FleetStore,
        kernels: KernelRegistry,
        state: FleetState,
        guests: FleetGuests,
        mailbox: Mailbox,
        *,
        launch_timeout: float,
        shutdown_timeout: float,
    ) -> None:
        self._store = store
        self._kernels = kernels
        self._state = state
        self._guests = guests
        self._mailbox = mailbox
        self.timeouts: Final = {
            "interrupt": COMMAND_GRACE,
            "shutdown": shutdown_timeout * 2 + COMMAND_GRACE,
            "restart": launch_timeout + shutdown_timeout * 2 + COMMAND_GRACE,
        }

    def interrupt(self, kernel_id: str) -> Deferred[None]:
        return self._ask(kernel_id, "interrupt")

    def restart(self, kernel_id: str) -> Deferred[None]:
        return self._ask(kernel_id, "restart")

    def shutdown(self, kernel_id: str) -> Deferred[None]:
        return self._ask(kernel_id, "shutdown")

    def _ask(self, kernel_id: str, op: str) -> Deferred[None]:
        """Have the owner do ``op``; if its lease has expired, adopt the kernel first and do it here."""
        owner = self._state.owner_of(kernel_id)
        if owner and owner not in self._state.others and self._state.redis_up:
            return Deferred.fromCoroutine(self._ask_or_adopt(kernel_id, op, owner))
        return self._post_command(kernel_id, op, owner)

    async def _ask_or_adopt(self, kernel_id: str, op: str, owner: str) -> None:
        if await self._store.lease_alive(owner):  # a relay this one has not heard of yet
            await self._post_command(kernel_id, op, owner)
            return
        record = self._state.records.get(kernel_id)
        if record is not None and not record.adoptable_here:
            raise KernelLaunchError(
                f"the relay that managed kernel {kernel_id} is gone, and only a relay on its "
                "machine can take it over"
            )
        await self._guests.adopt(kernel_id, owner)
        if not self._kernels.owns(kernel_id):
            raise KernelLaunchError(f"kernel {kernel_id} could not be taken over; try again")
        await self._act(kernel_id, op)

    def _act(self, kernel_id: str, op: str) -> Deferred[Any]:
        if op == "interrupt":
            return self._kernels.interrupt(kernel_id)
        if op == "restart":
            return self._kernels.restart(kernel_id)
        return self._kernels.shutdown(kernel_id)

    def _post_command(self, kernel_id: str, op: str, owner: str) -> Deferred[None]:
        """Ask the owner through its mailbox; the answer comes to this relay's."""
        return Deferred.fromCoroutine(self._command_owner(kernel_id, op, owner))

    async def _command_owner(self, kernel_id: str, op: str, owner: str) -> None:
        message = {"type": "command", "op": op, "id": kernel_id}
        try:
            reply = await self._mailbox.request(owner, message, self.timeouts[op])
        except NoReply:
            raise KernelLaunchError(
                f"the relay that manages kernel {kernel_id} did not answer the {op} within "
                f"{self.timeouts[op]:g}s"
            ) from None
        except Unreachable as error:
            raise KernelLaunchError(
                f"cannot reach the relay that manages kernel {kernel_id}: {error}"
            ) from None
        refusal = reply.get("error")
        if refusal is None:
            return
        if reply.get("unknown"):
            raise UnknownKernel(str(refusal))
        raise KernelLaunchError(str(refusal))

    def command(self, message: dict[str, Any]) -> None:
        """Another relay asks this one to act on one of its kernels; the answer goes to its mailbox."""
        Deferred.fromCoroutine(self._answer(message))

    async def _answer(self, message: dict[str, Any]) -> None:
        kernel_id, op = str(message.get("id")), str(message.get("op"))
        sender = str(message.get("from"))
        error: str | None = None
        unknown = False
        try:
            if op not in self.timeouts or not self._kernels.owns(kernel_id):
                raise UnknownKernel(
                    f"relay {self._state.relay_id} does not manage kernel {kernel_id}"
                )
            log.info(
                "{op} of kernel {kernel} asked by relay {sender}",
                op=op,
                kernel=kernel_id,
                sender=sender,
            )
            await self._act(kernel_id, op)
        except Exception as failure:
            error, unknown = str(failure), isinstance(failure, UnknownKernel)
        try:
            await self._mailbox.reply(message, COMMAND_GRACE, error=error, unknown=unknown)
        except Exception as lost:
            log.warn("could not answer relay {sender}: {error}", sender=sender, error=lost)


__all__ = ["COMMAND_GRACE", "FleetOwners"]

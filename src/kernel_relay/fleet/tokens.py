# -*- test-case-name: tests.fleet.test_fleet -*-
"""
Kernel tokens shared across the fleet: a token issued on one relay works on every relay. Only digests travel:
into Redis (for relays that join later, or missed a message) and to the relays whose lease runs (at once).
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, DeferredList
from twisted.logger import Logger

from ..auth import Scope, TokenAuth
from .mailbox import Mailbox
from .state import FleetState
from .store import FleetStore

log = Logger()


class TokenSharing:
    """Shares the tokens issued here, and honours those issued elsewhere."""

    def __init__(
        self, store: FleetStore, auth: TokenAuth, mailbox: Mailbox, state: FleetState
    ) -> None:
        self._store = store
        self._auth = auth
        self._mailbox = mailbox
        self._state = state
        auth.scoped.on_issue = self.issued

    def issued(self, digest: bytes, scope: Scope) -> None:
        """A token was issued here: into Redis, then to every relay whose lease runs."""
        Deferred.fromCoroutine(self._share(digest, scope))

    async def _share(self, digest: bytes, scope: Scope) -> None:
        try:
            await self._store.add_token(scope.kernel_id, digest, scope.access)
        except Exception as error:
            log.warn(
                "A token of kernel {kernel} works on this relay only: {error}",
                kernel=scope.kernel_id,
                error=error,
            )
            return
        message = {
            "type": "token",
            "id": scope.kernel_id,
            "digest": digest.hex(),
            "access": scope.access,
        }
        self._mailbox.broadcast(message, self._state.lease * 2, self._state.others)

    def heard(self, message: dict[str, Any]) -> None:
        """Another relay issued a token (a ``token`` message)."""
        scope = Scope(str(message.get("id", "")), str(message.get("access")))
        self._auth.scoped.admit(bytes.fromhex(str(message.get("digest"))), scope)

    def load(self, kernel_id: str) -> Deferred[None]:
        """Honour the tokens Redis holds for a kernel (this catches any message this relay missed)."""

        def admit(found: dict[bytes, str]) -> None:
            for digest, access in found.items():
                self._auth.scoped.admit(digest, Scope(kernel_id, access))

        return self._store.tokens(kernel_id).addCallback(admit)

    def share_again(self, kernel_id: str) -> None:
        """Redis lost this relay's kernel: share its tokens again, as if just issued."""
        for digest, scope in self._auth.scoped.digests(kernel_id).items():
            self.issued(digest, scope)

    def restore(self, kernel_id: str) -> Deferred[None]:
        """Redis lost a guest whose owner is gone: write back the tokens of it this relay knows."""
        tokens = self._auth.scoped.digests(kernel_id)
        d = DeferredList(
            [self._store.add_token(kernel_id, d, s.access) for d, s in tokens.items()],
            consumeErrors=True,
        )
        return d.addCallback(lambda _: None)


__all__ = ["TokenSharing"]

"""
The execute front: code sent over REST (:mod:`.execute_routes`) runs as a client of the core like any
other, so the kernel runs it in the order it came among every front's requests, and the core's ledger
(:mod:`kernel_relay.relay.ledger`) keeps what it answers.

A request this relay's ledger does not hold may be one another relay of the fleet accepted: it is read from
the fleet (:meth:`ExecuteFront.elsewhere`, ``kernel_relay.relay.requests``).

Each kernel has one REST client here, with its own line to the kernel (shell and stdin), attached only while a
request it sent is live or waits for its reply (a kernel's ``idle`` may come before it: the line waits
:data:`REPLY_GRACE` seconds for it, no longer, as a request the kernel dropped never gets one). It is no client
connection (:class:`~kernel_relay.relay.client.InternalClient`): it counts neither in
``max_clients_per_kernel`` nor in a kernel's connections (which the culler reads); ``max_live`` bounds the REST
requests live on one kernel instead.
"""

from __future__ import annotations

import uuid
from typing import Any, Final

from twisted.internet.defer import CancelledError, Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from ..kernels import SHELL, STDIN, KernelRegistry
from ..relay.client import InternalClient, Refused, short_id
from ..relay.core import RelayCore
from ..relay.events import ClientEvent, MessageRefused
from ..relay.journal import Resume
from ..relay.ledger import INPUT, Execution
from ..relay.payload import Outgoing
from ..relay.requests import RemoteRequests

log = Logger()

_NO_RESUME = Resume(None, False)
#: How long a REST line stays open for the reply of a request that ended at its ``idle``, in seconds (the
#: reply comes on another socket, at about the same time, or never: a cancelled request the kernel dropped).
REPLY_GRACE: Final = 5.0


class RestClient(InternalClient):
    """The core's client for one kernel's REST requests; what the kernel answers is read from the ledger."""

    backlog = 0

    def __init__(self, front: ExecuteFront, kernel_id: str) -> None:
        # Its ZMQ identity: its own, not the kernel's alone. Another relay's REST client of the kernel, or
        # this one's next, under the same identity would take its replies and input_requests (ipykernel's
        # shell and stdin hand an identity over to its newest connection).
        self.client_id = f"rest:{uuid.uuid4().hex[:12]}:{kernel_id}"
        self.address = "REST"
        self._front = front
        self.live: set[str] = set()
        """The requests it sent that have not ended."""

    def deliver(self, kernel_id: str, channel: str, message: Outgoing) -> None:
        """Replies and ``input_request``\\ s: the ledger saw them on their way here."""

    def tell(self, kernel_id: str, channel: str, event: ClientEvent) -> None:
        if isinstance(event, MessageRefused):
            log.info(
                "A REST request to kernel {kernel} was refused: {reason}",
                kernel=short_id(kernel_id),
                reason=event.reason,
            )

    def let_go(self, kernel_id: str, channel: str, reason: str) -> None:
        self._front.forget(kernel_id, self)


class ExecuteFront:
    """Sends REST requests (code, answers to ``input()``) to kernels through the core."""

    def __init__(
        self,
        core: RelayCore,
        kernels: KernelRegistry,
        max_live: int | None = None,
        remote: RemoteRequests | None = None,
    ) -> None:
        self.core = core
        self._kernels = kernels
        self._remote = remote
        self._clients: dict[str, RestClient] = {}
        self.max_live = max_live
        """Most REST requests live (queued, running, waiting for input) on one kernel; None: unbounded."""

    def elsewhere(
        self, kernel_id: str, msg_id: str, wait: float
    ) -> Deferred[Execution | None] | None:
        """
        A request this relay's ledger does not hold, as the fleet keeps it (None: there is no fleet), once
        it needs its client or ``wait`` seconds passed; cancelling it forgets the wait.
        """
        return None if self._remote is None else self._remote.read(kernel_id, msg_id, wait)

    def recorded(self, kernel_id: str) -> Deferred[None] | None:
        """
        In a fleet, once the kernel's requests as this relay knows them are readable on every relay (an
        answer waits for it: a client may ask another relay next); None without a fleet.
        """
        return None if self._remote is None else self._remote.written(kernel_id)

    def checked(self, kernel_id: str, msg_id: str) -> Deferred[None] | None:
        """
        In a fleet, once a live request of this relay's ledger, of a kernel another relay manages, is
        checked against the fleet's record (its kernel's restart there ends it); None when nothing to check.
        """
        request = self.core.ledger.get(kernel_id, msg_id)
        if self._remote is None or request is None or not request.live:
            return None
        if self._kernels.owns(kernel_id):
            return None  # this relay's core hears of the kernel's restarts itself
        return self._remote.ended(kernel_id, msg_id)

    def recent_elsewhere(self, kernel_id: str) -> Deferred[list[Execution]] | None:
        """The kernel's requests the fleet keeps that this relay's ledger does not (None: no fleet)."""
        if self._remote is None:
            return None
        here = {request.msg_id for request in self.core.ledger.recent(kernel_id)}
        return self._remote.recent(kernel_id, here)

    def submit(self, kernel_id: str, code: str, metadata: dict[str, Any]) -> str:
        """Send ``code`` to the kernel; its request's ``msg_id``. UnknownKernel or Refused say why not."""
        client = self._client(kernel_id)
        running = sum(1 for msg_id in client.live if self._is_live(kernel_id, msg_id))
        if self.max_live is not None and running >= self.max_live:
            raise Refused(
                f"Kernel {kernel_id} already has {running} requests sent over REST waiting or "
                "running: send more once one ended",
                429,
            )
        if self.core.ledger.full():
            # Keeping it would forget a live request (its readers would get 404 while it runs).
            self._release(kernel_id, client)
            raise Refused(
                f"The relay keeps {self.core.ledger.options.max_requests} execution requests "
                "(--requests-kept) and every one is still queued or running: send more once one ended",
                503,
            )
        message = {
            "header": {"msg_type": "execute_request", "msg_id": uuid.uuid4().hex},
            "metadata": metadata,
            "content": {
                "code": code,
                "silent": False,
                "store_history": True,
                "user_expressions": {},
                "allow_stdin": True,
                "stop_on_error": True,
            },
        }
        try:
            msg_id = self.core.receive(client, kernel_id, SHELL, message)
        except Refused:
            self._release(kernel_id, client)
            raise
        client.live.add(msg_id)
        self._watch(kernel_id, client, msg_id)
        return msg_id

    def answer_input(self, kernel_id: str, value: str) -> None:
        """Answer the kernel's pending ``input()`` (the kernel takes the first answer)."""
        client = self._client(kernel_id)
        asking = [r.msg_id for r in self.core.ledger.recent(kernel_id) if r.state == INPUT]
        message = {"header": {"msg_type": "input_reply"}, "content": {"value": value}}
        try:
            self.core.receive(client, kernel_id, STDIN, message)
        except Refused:
            self._release(kernel_id, client)
            raise
        # Its line stays open while the requests it answered run (closing it at once could drop the answer).
        for msg_id in asking:
            client.live.add(msg_id)
            self._watch(kernel_id, client, msg_id)
        self._release(kernel_id, client)

    def forget(self, kernel_id: str, client: RestClient) -> None:
        """The core let the client go (its kernel ended)."""
        if self._clients.get(kernel_id) is client:
            del self._clients[kernel_id]

    def _client(self, kernel_id: str) -> RestClient:
        kernel = self._kernels.get(kernel_id)
        client = self._clients.get(kernel_id)
        if client is None:
            client = self._clients[kernel_id] = RestClient(self, kernel_id)
            for channel in (SHELL, STDIN):
                self.core.attach(client, kernel, channel, _NO_RESUME)
        return client

    def _is_live(self, kernel_id: str, msg_id: str) -> bool:
        request = self.core.ledger.get(kernel_id, msg_id)
        return request is not None and request.live

    def _watch(self, kernel_id: str, client: RestClient, msg_id: str) -> None:
        """Once the request ends, the client lets go of the kernel if it has no other live request."""
        request = self.core.ledger.get(kernel_id, msg_id)
        if request is None or not (request.live or self._reply_due(request)):
            client.live.discard(msg_id)
            self._release(kernel_id, client)
            return
        change = self.core.ledger.changed(kernel_id, msg_id)
        if not request.live:  # ended at its idle: its reply may still be on its way, for a while
            finished = request.finished or 0.0
            clock = self.core.ledger.clock
            timer = clock.callLater(
                max(0.0, finished + REPLY_GRACE - clock.seconds()), change.cancel
            )

            def stop_timer(result: object) -> object:
                if timer.active():
                    timer.cancel()
                return result

            change.addBoth(stop_timer)

        def again(result: object) -> None:
            if isinstance(result, Failure):
                result.trap(CancelledError)  # type: ignore[no-untyped-call]  # grace over
            self._watch(kernel_id, client, msg_id)

        change.addBoth(again)

    def _reply_due(self, request: Execution) -> bool:
        """Whether the request ended at its idle less than :data:`REPLY_GRACE` seconds ago, its reply unseen."""
        if not request.inferred or request.finished is None:
            return False
        return self.core.ledger.clock.seconds() < request.finished + REPLY_GRACE

    def _release(self, kernel_id: str, client: RestClient) -> None:
        if client.live or self._clients.get(kernel_id) is not client:
            return
        del self._clients[kernel_id]
        for channel in (SHELL, STDIN):
            self.core.detach(client, kernel_id, channel, "no request runs")

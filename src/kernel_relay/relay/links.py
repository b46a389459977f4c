"""
Each client's private line to each kernel for shell, control and stdin: its own ZMQ identity (a
:class:`~kernel_relay.kernels.KernelClient`), so replies and ``input_request``\\ s reach exactly the client
whose request caused them. A line opens with the client's first such channel of the kernel and closes with
its last. An ``input_request`` whose client is not attached to stdin goes to every stdin client of the kernel
(the kernel takes the first ``input_reply``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from twisted.logger import Logger

from ..kernels import STDIN, Kernel, KernelClient, KernelMessage
from ..metrics import TO_CLIENT, RelayMetrics
from .client import RelayClient, short_id
from .events import MessageTooBig
from .payload import Outgoing

log = Logger()


@dataclass
class _Link:
    """One client's line to one kernel: its ZMQ sockets, and the channels it is attached to there."""

    kernel_client: KernelClient
    channels: set[str] = field(default_factory=set)


class Links:
    """The lines of every client to every kernel, by (client id, kernel id)."""

    def __init__(
        self,
        metrics: RelayMetrics,
        clients_on: Callable[[str, str], list[RelayClient]],
        too_big: Callable[[Kernel, KernelMessage, int], MessageTooBig | None],
        observe: Callable[[str, KernelMessage], None] | None = None,
    ) -> None:
        self._metrics = metrics
        self._observe = observe
        self._clients_on = clients_on
        self._too_big = too_big
        self._links: dict[tuple[str, str], _Link] = {}

    def join(self, client: RelayClient, kernel: Kernel, channel: str) -> None:
        """The client uses ``channel`` of the kernel: on its line, opened if it has none yet."""
        key = (client.client_id, kernel.id)
        link = self._links.get(key)
        if link is None:
            link = self._links[key] = self._open(kernel, client)
        link.channels.add(channel)

    def leave(self, client_id: str, kernel_id: str, channel: str) -> None:
        """The client left ``channel`` of the kernel: its line closes with its last channel."""
        key = (client_id, kernel_id)
        link = self._links.get(key)
        if link is not None and channel in link.channels:
            link.channels.discard(channel)
            if not link.channels:
                del self._links[key]
                link.kernel_client.close()

    def line(self, client_id: str, kernel_id: str) -> KernelClient | None:
        """The client's line to the kernel, if it has one."""
        link = self._links.get((client_id, kernel_id))
        return link.kernel_client if link is not None else None

    def close_kernel(self, kernel_id: str) -> None:
        """The kernel ended: every line to it closes."""
        for key in [key for key in self._links if key[1] == kernel_id]:
            self._links.pop(key).kernel_client.close()

    def _open(self, kernel: Kernel, client: RelayClient) -> _Link:
        key = (client.client_id, kernel.id)

        def deliver(message: KernelMessage) -> None:
            if self._observe is not None:
                self._observe(kernel.id, message)
            link = self._links.get(key)
            channel = message.channel
            if link is not None and channel in link.channels:
                recipients = [client]
            elif channel == STDIN:
                # enchannel-socketio-backend joins stdin on a second connection, not on the one its
                # execute_request came from; the kernel reads an input_reply from any stdin identity.
                recipients = self._clients_on(kernel.id, STDIN)
            else:
                recipients = []
            self._deliver(kernel, message, recipients)

        return _Link(kernel.open_client(client.client_id.encode("utf-8"), deliver))

    def _deliver(
        self, kernel: Kernel, message: KernelMessage, recipients: list[RelayClient]
    ) -> None:
        channel = message.channel
        if not recipients:
            log.warn(
                "Kernel {kernel} sent {msg_type} on {channel} to a client that is not connected to "
                "that channel; it was not delivered",
                kernel=short_id(kernel.id),
                msg_type=message.msg_type,
                channel=channel,
            )
            return
        size = message.size
        too_big = self._too_big(kernel, message, size)
        if too_big is not None:
            for recipient in recipients:
                recipient.tell(kernel.id, channel, too_big)
            return
        self._metrics.relayed(TO_CLIENT, size)
        outgoing = Outgoing.of_kernel(message)
        for recipient in recipients:
            recipient.deliver(kernel.id, channel, outgoing)

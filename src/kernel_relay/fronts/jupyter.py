"""
The Jupyter kernel WebSocket front: ``/api/kernels/<id>/channels?session_id=...`` as Jupyter Server serves it,
translated into the relay core, so JupyterLab, ``@jupyterlab/services`` and ``jupyter server --gateway-url``
use the relay's kernels unchanged. Three parts:

- the check before the upgrade (:mod:`.jupyter_request`): origin, token, kernel, ``session_id``;
- the connection (:mod:`.jupyter_connection`): one WebSocket carries all four channels of one kernel and is one
  client of the core: replies and ``input_request``\\ s go to it alone, iopub to every client of the kernel,
  whatever their front;
- the sessions (:mod:`.jupyter_sessions`): reconnect without loss. When a connection ends, the front notes the
  last ``relay_seq`` it sent for the connection's ``session_id``; a connection that comes back with that
  ``session_id`` gets the iopub messages it missed, in order (bounded by the journal's ``--iopub-replay-*``
  options). What is no longer kept is told as an iopub ``stream`` message on ``stderr``, parented to the last
  cell the client saw. A session keeps its ZMQ identity towards the kernel, so a reply to a request of its
  last connection that comes after it is back reaches it; a second connection of a session still connected
  gets an identity of its own.

A ``session_id`` is not a credential: it belongs to the principal that made it (the token it came with, see
:meth:`~kernel_relay.auth.TokenAuth.principal`). Another principal presenting it gets a session of its own
(another ZMQ identity, no mark of the owner's), so it sees neither the owner's replies nor its resume point.
"""

from __future__ import annotations

import uuid
from typing import Any

from autobahn.twisted.resource import WebSocketResource
from autobahn.twisted.websocket import WebSocketServerFactory
from twisted.internet.interfaces import IAddress, IReactorTime
from twisted.web.iweb import IRequest
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from ..budget import BufferBudget
from ..http.connections import trust_request_connection
from ..http.origins import OriginPolicy
from ..kernels import DEFAULT_USERNAME, IOPUB, PROTOCOL_VERSION, Frame, Kernel, iso_date, pack_json
from ..relay.client import Refused
from ..relay.core import RelayCore
from ..relay.events import ReplayExpired
from ..relay.journal import Resume
from ..relay.marks import SharedMarks
from ..relay.payload import Outgoing
from ..websocket import WriteBatcher
from .jupyter_connection import CLOSE_GOING_AWAY, CLOSE_NORMAL, JupyterConnection
from .jupyter_request import NO_RESUME, Admitted, check_request, kernel_named
from .jupyter_sessions import MARKS_PER_KERNEL, JupyterSessions, Reading, parent_frame

#: The close code of a connection the relay cannot serve for now (RFC 6455's "Try Again Later").
CLOSE_TRY_AGAIN_LATER = 1013

__all__ = ["MARKS_PER_KERNEL", "JupyterFront"]


class _ChannelsFactory(WebSocketServerFactory):  # type: ignore[misc]
    """Builds the connection of the request just checked (render and build are synchronous)."""

    def __init__(self, front: JupyterFront, reactor: IReactorTime, max_payload: int) -> None:
        super().__init__(reactor=reactor)  # type: ignore[no-untyped-call]
        self.setProtocolOptions(  # type: ignore[no-untyped-call]
            autoPingInterval=30,
            autoPingTimeout=30,
            failByDrop=False,
            maxMessagePayloadSize=max_payload,
            maxFramePayloadSize=max_payload,
        )
        self.max_payload = max_payload
        self._front = front
        self._batcher = WriteBatcher(reactor)
        self.next: Admitted | None = None

    def buildProtocol(self, addr: IAddress | None) -> Any:
        admitted, self.next = self.next, None
        if admitted is None:
            return None
        protocol = JupyterConnection(self._front, admitted, self._batcher)
        protocol.factory = self
        return protocol


class JupyterFront:
    """Serves ``/api/kernels/<id>/channels`` from a relay core."""

    def __init__(
        self,
        core: RelayCore,
        reactor: IReactorTime,
        *,
        origins: OriginPolicy | None = None,
        max_payload: int = 16 * 1024 * 1024,
        max_buffered_bytes: int = 64 * 1024 * 1024,
        budget: BufferBudget | None = None,
    ) -> None:
        self.core = core
        self._clock = reactor
        self._origins = origins or OriginPolicy.from_options([])
        self.max_buffered_bytes = max_buffered_bytes
        #: What waits for every connection, against the relay's overall bound (shared with the other fronts).
        self.budget = budget or BufferBudget(None)
        self._factory = _ChannelsFactory(self, reactor, max_payload)
        self._websocket = WebSocketResource(self._factory)  # type: ignore[no-untyped-call]
        self._connections: dict[str, JupyterConnection] = {}
        self.sessions = JupyterSessions(reactor, self._reading)

    def _reading(self) -> list[Reading]:
        return list(self._connections.values())

    def share_marks(self, marks: SharedMarks) -> None:
        """Save where sessions are for every relay of a fleet (see :meth:`JupyterSessions.share`)."""
        self.sessions.share(marks)

    def marks_of(self, kernel_id: str) -> int:
        """How many disconnected sessions of the kernel are remembered here."""
        return self.sessions.marks_of(kernel_id)

    def resource(self) -> Resource:
        return _ChannelsResource(self)

    def close(self, reason: str = "the relay is stopping") -> None:
        """Close every connection (the relay is stopping)."""
        self.sessions.stop()
        for connection in list(self._connections.values()):
            connection.close_with(CLOSE_GOING_AWAY, reason)

    def stream(
        self, kernel_id: str, parent: Frame, text: str, metadata: dict[str, Any]
    ) -> Outgoing:
        """A ``stream`` message on stderr made by the relay, for what a Jupyter client should show."""
        header = {
            "msg_id": uuid.uuid4().hex,
            "msg_type": "stream",
            "username": DEFAULT_USERNAME,
            "session": kernel_id,
            "date": iso_date(self._clock.seconds()),
            "version": PROTOCOL_VERSION,
        }
        content = {"name": "stderr", "text": text if text.endswith("\n") else text + "\n"}
        return Outgoing(
            (pack_json(header), parent, pack_json(metadata), pack_json(content)), [], IOPUB
        )

    def render(self, request: IRequest) -> bytes | int:
        """
        Check the request (:func:`.jupyter_request.check_request`), then upgrade it; a kernel this relay
        does not know (of its fleet, say) is looked up first.
        """
        kernel_id = kernel_named(request)
        waiting = self.core.find_kernel(kernel_id) if kernel_id is not None else None
        if waiting is None:
            return self._upgrade(request)
        gone: list[object] = []
        request.notifyFinish().addErrback(gone.append)  # type: ignore[attr-defined]
        waiting.addCallback(lambda _: None if gone else self._upgrade_late(request))
        return NOT_DONE_YET

    def _upgrade_late(self, request: IRequest) -> None:
        answer = self._upgrade(request)
        if isinstance(answer, bytes):  # refused: as render would have answered it
            request.setHeader(b"Content-Length", b"%d" % len(answer))
            request.write(answer)
            request.finish()

    def _upgrade(self, request: IRequest) -> bytes | int:
        admitted = check_request(request, self.core, self._origins)
        if isinstance(admitted, bytes):
            return admitted
        if admitted.session_id:
            found = self.sessions.resume_of(admitted.kernel.id, admitted.session_key)
            if found is not None:
                admitted.resume, admitted.resume_parent = found
        trust_request_connection(request)
        self._factory.next = admitted
        result: bytes | int = self._websocket.render(request)
        return result

    # -- connections ----------------------------------------------------------------------------------

    def connection_open(self, connection: JupyterConnection) -> None:
        admitted = connection.admitted
        kernel = admitted.kernel
        if not self.core.has_kernel(kernel.id):  # it stopped during the handshake
            connection.close_with(CLOSE_NORMAL, f"kernel {kernel.id} is no longer running")
            return
        if connection.client_id in self._connections:
            # The session's earlier connection is still open. Both stay, with an identity each: JupyterLab's
            # server, for one, opens a connection it then abandons beside the live one, in either order, and
            # replacing the older would sometimes cut the live one. The abandoned one ends as a slow client
            # or when it stops answering pings.
            connection.client_id = f"{connection.client_id}:{uuid.uuid4().hex[:8]}"
        self._connections[connection.client_id] = connection
        if self.sessions.shared is not None and admitted.session_id and IOPUB in admitted.channels:
            # Not known here, or known from an earlier visit: it may have read on another relay of the
            # fleet since (the fresher mark wins). Its other channels work at once; iopub joins once the
            # fleet has said (what comes meanwhile waits in the journal).
            for channel in admitted.channels:
                if channel != IOPUB and not self._attach(connection, kernel, channel, NO_RESUME):
                    return
            start = self.core.last_seq(kernel.id)
            # A mark of its own here may be older than the fleet's: wait for the fleet's (Redis restarting).
            patient = admitted.resume.since is not None
            asked = self.sessions.load(kernel.id, admitted.session_key, patient)
            asked.addCallbacks(
                lambda found: self._join_iopub(connection, found, start),
                lambda failure: self._join_iopub(
                    connection, None, start, failure.getErrorMessage()
                ),
            )
            return
        # Where it reads from (the replay, if any, moves it on); a new session has what came before.
        since = admitted.resume.since
        connection.last_seq = self.core.last_seq(kernel.id) if since is None else since
        for channel in admitted.channels:
            resume = admitted.resume if channel == IOPUB else NO_RESUME
            if not self._attach(connection, kernel, channel, resume):
                return

    def _attach(
        self, connection: JupyterConnection, kernel: Kernel, channel: str, resume: Resume
    ) -> bool:
        """Whether the core attached the connection; if not (no ZeroMQ socket left), it is closed saying so."""
        connection.channels.add(channel)
        try:
            self.core.attach(connection, kernel, channel, resume)
        except Refused as refusal:
            connection.close_with(CLOSE_TRY_AGAIN_LATER, refusal.message)
            return False
        return True

    def _join_iopub(
        self,
        connection: JupyterConnection,
        found: tuple[int, str | None] | None,
        start: int,
        unknown: str | None = None,
    ) -> None:
        """
        Attach a session's iopub once the fleet said where it stopped; a session new to the fleet gets what
        came since it connected (``start``). When the fleet could not say (``unknown``: why) and this relay
        has no mark of it, the session may have missed output before ``start``: it is told so.
        """
        admitted = connection.admitted
        if self._connections.get(connection.client_id) is not connection:
            return  # gone meanwhile
        if not self.core.has_kernel(admitted.kernel.id):
            connection.close_with(CLOSE_NORMAL, f"kernel {admitted.kernel.id} is no longer running")
            return
        here = admitted.resume.since
        if found is not None and (here is None or found[0] > here):
            admitted.resume = Resume(found[0], False)
            admitted.resume_parent = parent_frame(found[1])
            connection.last_seq = found[0]
        elif here is not None:
            connection.last_seq = here
        else:
            # From where it connected, 0 too (nothing numbered then): what came while the fleet answered.
            admitted.resume = Resume(start, False)
            connection.last_seq = start
        self._attach(connection, admitted.kernel, IOPUB, admitted.resume)
        if unknown is not None and here is None and start:
            problem = (
                f"where this session stopped reading could not be learnt from the fleet ({unknown}): "
                f"output before message {start + 1} may be missing"
            )
            connection.tell(admitted.kernel.id, IOPUB, ReplayExpired(1, start, problem))

    def connection_lost(self, connection: JupyterConnection) -> None:
        if self._connections.get(connection.client_id) is not connection:
            return
        del self._connections[connection.client_id]
        admitted = connection.admitted
        kernel_id = admitted.kernel.id
        for channel in list(connection.channels):
            self.core.detach(connection, kernel_id, channel, "closed")
        # A kernel that stopped takes its marks with it (kernel_stopped): none is made for it after.
        if admitted.session_id and IOPUB in connection.channels and self.core.has_kernel(kernel_id):
            self.sessions.ended(
                kernel_id, admitted.session_key, connection.last_seq, connection.last_parent
            )
        else:
            self.sessions.left(kernel_id, admitted.session_key)

    # -- KernelObserver: marks go with their kernel -----------------------------------------------------

    def kernel_stopped(self, kernel: Kernel, reason: str) -> None:
        self.sessions.forget_kernel(kernel.id)

    def kernel_started(self, kernel: Kernel) -> None:
        pass

    def kernel_restarting(self, kernel: Kernel) -> None:
        pass

    def kernel_restarted(self, kernel: Kernel) -> None:
        pass

    def kernel_ready(self, kernel: Kernel) -> None:
        pass


class _ChannelsResource(Resource):
    isLeaf = True

    def __init__(self, front: JupyterFront) -> None:
        super().__init__()
        self._front = front

    def render(self, request: IRequest) -> bytes | int:
        return self._front.render(request)

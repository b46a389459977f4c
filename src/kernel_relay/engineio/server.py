"""
The Engine.IO server: the registry of sessions and their bounds (per address, in all, probation for
sessions nobody vouched for yet), and the one twisted.web resource (:mod:`.resource`) serving both
transports on one path.

Every request is checked (:mod:`.request_checks`: origin, transport, protocol version, session id,
method) before any transport sees it, so a transport only deals with requests that belong to one of its
sessions.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping
from types import MappingProxyType

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.web.resource import IResource

from ..budget import BufferBudget
from .options import EngineIOOptions, HandshakeInfo, SessionHandler
from .resource import EngineIOResource
from .session import SERVER_CLOSE, EngineIOSession
from .transport import Transport

HandlerFactory = Callable[[EngineIOSession], SessionHandler]

#: The close reason of a session let go to make room for a new one (``max_sessions``).
SESSION_EVICTED = "server full"
#: The close reason :meth:`EngineIOServer.close_all` gives when it is given none.
SERVER_SHUTDOWN = "server shutting down"
#: Seconds between two log lines about refused handshakes from one address.
REFUSAL_LOG_INTERVAL = 10.0
#: Seconds a session over its address's bound has to be vouched for (join a kernel) before it is closed.
SESSION_PROBATION = 5.0
#: Sessions on probation at once; a newer one closes the oldest.
MAX_SESSIONS_ON_PROBATION = 16


class EngineIOServer:
    """
    Engine.IO sessions over HTTP long-polling and WebSocket, for one ``handler_factory``.

    Mount :meth:`resource` anywhere in a twisted.web tree (``root.putChild(b"engine.io", ...)``).
    """

    log = Logger()

    def __init__(
        self,
        reactor: IReactorTime,
        options: EngineIOOptions,
        handler_factory: HandlerFactory,
        budget: BufferBudget | None = None,
    ) -> None:
        self._reactor = reactor
        self._options = options
        self._handler_factory = handler_factory
        # Also holds sessions closed by the server whose last packets a poll may still collect.
        # Oldest first (dicts keep insertion order), which is whom max_sessions lets go first.
        self._known: dict[str, EngineIOSession] = {}
        # Each address's sessions, oldest first: whom its bound lets go first.
        self._by_address: dict[str, dict[str, EngineIOSession]] = {}
        # Sessions over their address's bound, by sid: closed unless vouched for in time.
        self._probation: dict[str, IDelayedCall] = {}
        #: What waits for every session, against ``max_total_buffered_bytes``; an application may share it
        #: with its other connections (see :mod:`kernel_relay.budget`).
        self.budget = budget or BufferBudget(options.max_total_buffered_bytes)
        self._refusals_logged: dict[str, float] = {}
        self._resource: EngineIOResource | None = None
        #: Told of each network connection (a Twisted transport) that carries a vouched session,
        #: for a site that must choose which connections to keep when it runs out of room.
        self.on_vouched_connection: Callable[[object], None] | None = None
        #: Told ``"session_refused"`` or ``"session_evicted"`` when a session bound bites.
        self.on_event: Callable[[str], None] | None = None

    @property
    def options(self) -> EngineIOOptions:
        return self._options

    @property
    def reactor(self) -> IReactorTime:
        """The reactor that runs the server's timers (and its WebSocket connections' writes)."""
        return self._reactor

    @property
    def sessions(self) -> Mapping[str, EngineIOSession]:
        """The open sessions by sid (a snapshot)."""
        return MappingProxyType({sid: s for sid, s in self._known.items() if not s.closed})

    def resource(self) -> IResource:
        """The twisted.web resource serving this server (the same object on every call)."""
        if self._resource is None:
            self._resource = EngineIOResource(self)
        return self._resource

    def close_all(self, reason: str = SERVER_SHUTDOWN) -> None:
        """Close every open session, e.g. on shutdown; waiting polls get their close packet."""
        for session in list(self._known.values()):
            session.close(reason)

    def lookup(self, sid: str) -> EngineIOSession | None:
        return self._known.get(sid)

    @property
    def buffered_bytes(self) -> int:
        """What waits to go out to every holder of the budget together, as last counted (for metrics)."""
        return self.budget.total

    def sessions_from(self, address: str) -> int:
        """How many sessions from ``address`` the server holds now."""
        return len(self._by_address.get(address, ()))

    def admit(self, address: str) -> str | None:
        """
        Make room for a new session from ``address``: None if it may open (the oldest session nobody
        vouched for may have been closed for it), else why not. An address that holds its bound gets one
        more on probation (see :meth:`new_session`) if any of its sessions is unvouched, for it to replace.
        """
        options = self._options
        per_address = options.max_sessions_per_address
        if per_address is not None and self.sessions_from(address) >= per_address:
            if self._replaceable(address) is None:
                return self._refuse(address, f"{per_address} sessions from this address already")
        limit = options.max_sessions
        if limit is not None and len(self._known) >= limit:
            victim = next((s for s in self._known.values() if not s.vouched and not s.closed), None)
            if victim is None:
                return self._refuse(address, f"the server holds its maximum of {limit} sessions")
            self._evict(victim, f"{limit} sessions")
        return None

    def _replaceable(self, address: str) -> EngineIOSession | None:
        """The oldest session of ``address`` that is open, not vouched for, and not on probation."""
        return next(
            (
                s
                for s in self._by_address.get(address, {}).values()
                if not s.vouched and not s.closed and s.sid not in self._probation
            ),
            None,
        )

    def _put_on_probation(self, session: EngineIOSession) -> None:
        """
        A session over its address's bound (users behind one NAT or proxy): once vouched for, it replaces
        the address's oldest unvouched session; unless vouched for within SESSION_PROBATION seconds, it
        is closed. So sessions that never join anything cannot lock an address's users out.
        """
        if len(self._probation) >= MAX_SESSIONS_ON_PROBATION:
            self._end_probation(next(iter(self._probation)))
        self._probation[session.sid] = self._reactor.callLater(
            SESSION_PROBATION, self._end_probation, session.sid
        )

    def _end_probation(self, sid: str) -> None:
        call = self._probation.pop(sid, None)
        if call is not None and call.active():
            call.cancel()
        session = self._known.get(sid)
        if session is not None and not session.closed:
            self._report("session_refused")
            session.abort(SESSION_EVICTED)

    def _evict(self, victim: EngineIOSession, bound: str) -> None:
        self.log.info(
            "session {sid} from {peer} closed to make room for a new one ({bound})",
            sid=victim.sid,
            peer=victim.handshake.remote_address,
            bound=bound,
        )
        self._report("session_evicted")
        victim.abort(SESSION_EVICTED)

    def _refuse(self, address: str, why: str) -> str:
        self._report("session_refused")
        now = self._reactor.seconds()
        if now - self._refusals_logged.get(address, -REFUSAL_LOG_INTERVAL) >= REFUSAL_LOG_INTERVAL:
            if len(self._refusals_logged) > 10_000:
                self._refusals_logged.clear()
            self._refusals_logged[address] = now
            self.log.warn(
                "refused a new session from {peer}: {why} (further refusals for {interval}s unlogged)",
                peer=address,
                why=why,
                interval=REFUSAL_LOG_INTERVAL,
            )
        return f"Too many sessions: {why}"

    def _report(self, kind: str) -> None:
        if self.on_event is not None:
            self.on_event(kind)

    def new_session(self, handshake: HandshakeInfo, transport: Transport) -> EngineIOSession:
        """Register a session on ``transport``; its open packet is queued (sent if writable)."""
        sid = secrets.token_urlsafe(15)
        while sid in self._known:
            sid = secrets.token_urlsafe(15)
        session = EngineIOSession(
            sid, handshake, self._options, self._reactor, transport, self._forget
        )
        session.on_vouched = self._vouched
        if self.budget.limit is not None:
            session.on_buffered = self.budget.report
        self._known[sid] = session
        of_address = self._by_address.setdefault(handshake.remote_address, {})
        of_address[sid] = session
        per_address = self._options.max_sessions_per_address
        if per_address is not None and len(of_address) > per_address:
            self._put_on_probation(session)
        self.log.debug(
            "session {sid} opened over {transport} from {peer}",
            sid=sid,
            transport=transport.name,
            peer=handshake.remote_address,
        )
        return session

    def start_handler(self, session: EngineIOSession) -> None:
        """Give ``session`` its application handler, once its open packet is sent or queued."""
        if session.closed:
            return
        try:
            handler = self._handler_factory(session)
        except Exception:
            self.log.failure("handler factory failed for session {sid}", sid=session.sid)
            session.close(SERVER_CLOSE)
            return
        if not session.closed:
            session.attach_handler(handler)

    def _forget(self, session: EngineIOSession) -> None:
        if self._known.get(session.sid) is session:
            del self._known[session.sid]
            address = session.handshake.remote_address
            of_address = self._by_address.get(address, {})
            of_address.pop(session.sid, None)
            if not of_address:
                self._by_address.pop(address, None)
            self.budget.forget(session)
            call = self._probation.pop(session.sid, None)
            if call is not None and call.active():
                call.cancel()

    def _vouched(self, session: EngineIOSession) -> None:
        call = self._probation.pop(session.sid, None)
        if call is not None:
            if call.active():
                call.cancel()
            victim = self._replaceable(session.handshake.remote_address)
            if victim is None:
                self._report("session_refused")
                session.abort(SESSION_EVICTED)
                return
            self._evict(victim, "a newer session from its address joined")
        self.vouch_connection(session.transport.connection)

    def vouch_connection(self, connection: object | None) -> None:
        """Tell ``on_vouched_connection`` of a connection that carries a vouched session."""
        if connection is not None and self.on_vouched_connection is not None:
            self.on_vouched_connection(connection)

"""The socket.io server: namespace registration on top of an Engine.IO server."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Final

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.web.resource import IResource

from ..budget import BufferBudget
from ..engineio import SERVER_SHUTDOWN, EngineIOOptions, EngineIOServer
from .client import Client
from .interfaces import EngineSession
from .namespace import Namespace, NamespaceGroup, check_namespace_name
from .packet import DEFAULT_MAX_ATTACHMENTS
from .socket import Socket

log = Logger()

DEFAULT_ENGINEIO_OPTIONS: Final = EngineIOOptions()


class SocketIOServer:
    """
    A socket.io v5 server: mount :meth:`resource` (e.g. at ``/socket.io/``) and register handlers
    with :meth:`of`.

    The main namespace ``/`` exists, as in the reference server, unless ``main_namespace`` is False:
    then a CONNECT to ``/`` is refused as an invalid namespace and Engine.IO 3 sessions are not joined
    to it on opening, so a session must join one of the application's namespaces to count as joined.
    A client that joins no namespace within ``connect_timeout`` seconds of opening its Engine.IO
    session is closed.
    """

    def __init__(
        self,
        reactor: IReactorTime,
        *,
        engineio_options: EngineIOOptions = DEFAULT_ENGINEIO_OPTIONS,
        connect_timeout: float = 45.0,
        max_attachments: int = DEFAULT_MAX_ATTACHMENTS,
        main_namespace: bool = True,
        buffer_budget: BufferBudget | None = None,
    ) -> None:
        self._reactor = reactor
        self._connect_timeout = connect_timeout
        self._max_attachments = max_attachments
        self._exact: dict[str, NamespaceGroup] = {}
        self._patterns: dict[re.Pattern[str], NamespaceGroup] = {}
        self._namespaces: dict[str, Namespace[Socket]] = {}
        self._clients: dict[str, Client] = {}
        #: Told ``"malformed_packet"`` or ``"connect_timeout"`` when a client is closed for either.
        self.on_event: Callable[[str], None] | None = None
        self._max_payload = engineio_options.max_payload
        self.engine = EngineIOServer(
            reactor, engineio_options, self.handle_session, budget=buffer_budget
        )
        #: Does the server serve the main namespace ``/``?
        self.serves_main_namespace = main_namespace
        if main_namespace:
            self.of("/")

    def resource(self) -> IResource:
        """The twisted.web resource serving both Engine.IO transports for this server."""
        return self.engine.resource()

    @property
    def clients(self) -> Mapping[str, Client]:
        """The open clients by Engine.IO session id (read-only view)."""
        return MappingProxyType(self._clients)

    def of(self, name_or_pattern: str | re.Pattern[str]) -> NamespaceGroup:
        """
        The handler group for an exact namespace name, or for every name a compiled regex
        fullmatches.

        Calling it again with the same name or pattern object returns the same group. An exact name
        wins over patterns; among patterns, the first registered that matches wins.
        """
        if isinstance(name_or_pattern, re.Pattern):
            group = self._patterns.get(name_or_pattern)
            if group is None:
                group = self._patterns[name_or_pattern] = NamespaceGroup(name_or_pattern)
            return group
        check_namespace_name(name_or_pattern)
        group = self._exact.get(name_or_pattern)
        if group is None:
            group = self._exact[name_or_pattern] = NamespaceGroup(name_or_pattern)
            self._namespaces[name_or_pattern] = Namespace(name_or_pattern, group, {})
        return group

    def namespace(self, name: str) -> Namespace[Socket] | None:
        """The concrete namespace ``name`` if it exists now (pattern namespaces: while joined)."""
        return self._namespaces.get(name)

    def close(self, reason: str = SERVER_SHUTDOWN) -> None:
        """Disconnect every socket (clients get DISCONNECT packets) and close every session."""
        for client in list(self._clients.values()):
            for socket in client.sockets.values():
                socket.disconnect(reason)
            client.close(reason)
        self.engine.close_all(reason)

    def handle_session(self, session: EngineSession) -> Client:
        """The Engine.IO ``handler_factory``: a new :class:`Client` for a new session."""
        client = Client(
            self,
            session,
            self._reactor,
            self._connect_timeout,
            self._max_attachments,
            self._max_payload,
        )
        self._clients[session.sid] = client
        client.start()
        return client

    # -- called by its clients (the ClientHost interface) ------------------------------------------

    def resolve(self, name: str) -> Namespace[Socket] | None:
        """
        The namespace a client's socket asks to join, created for a matching pattern; None if unknown.

        For the :class:`Client` that is about to join it: a namespace created here is dropped only once
        the sockets that joined it have left.
        """
        namespace = self._namespaces.get(name)
        if namespace is not None:
            return namespace
        for group in self._patterns.values():
            params = group.match(name)
            if params is not None:
                namespace = Namespace(name, group, params, on_empty=self._drop)
                self._namespaces[name] = namespace
                return namespace
        return None

    def report(self, kind: str) -> None:
        """Tell :attr:`on_event` of a client closed for ``kind``."""
        if self.on_event is not None:
            self.on_event(kind)

    def client_closed(self, client: Client) -> None:
        """``client``'s session closed: it is no longer one of :attr:`clients`."""
        if self._clients.get(client.sid) is client:
            del self._clients[client.sid]

    def _drop(self, namespace: Namespace[Socket]) -> None:
        if self._namespaces.get(namespace.name) is namespace:
            del self._namespaces[namespace.name]

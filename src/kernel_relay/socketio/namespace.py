"""
Namespaces: a :class:`NamespaceGroup` holds the handlers registered with ``server.of(...)`` for an
exact name or a pattern; a :class:`Namespace` is one concrete name that clients have joined.

This module knows a socket only as a :class:`~.interfaces.NamespaceMember`: a :class:`Namespace` is
generic in the type of its members (``Namespace[Socket]`` for the server's), and the handlers' first
argument, the :class:`~.socket.Socket`, is typed ``Any`` here.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, Generic, TypeVar, overload

from twisted.logger import Logger

from .interfaces import SERVER_DISCONNECT, NamespaceMember
from .packet import Packet, PacketType, check_event_name, encode_packet

log = Logger()

_EVENT = PacketType.EVENT

ConnectHandler = Callable[[Any, Any], object]
"""``(socket, auth) -> None | Deferred[None] | coroutine``; raise ConnectionRefused to refuse."""

DisconnectHandler = Callable[[Any, str], object]
"""``(socket, reason) -> None``."""

EventHandler = Callable[..., Any]
"""``(socket, *args) -> value | Deferred[value] | coroutine``; the value becomes the ack."""

_C = TypeVar("_C", bound=ConnectHandler)
_D = TypeVar("_D", bound=DisconnectHandler)
_E = TypeVar("_E", bound=EventHandler)
_M = TypeVar("_M", bound=NamespaceMember)


def check_namespace_name(name: str) -> None:
    """Namespace names start with ``/`` and hold no ``,`` (the packet format ends them there)."""
    if not isinstance(name, str) or not name.startswith("/") or "," in name:
        raise ValueError(f"invalid namespace name {name!r}: it must start with '/' and hold no ','")


class NamespaceGroup:
    """
    The handlers for every namespace an exact name or a pattern matches.

    Connect handlers run in registration order and any of them may refuse; one handler per event
    name (a later registration replaces the earlier one); every disconnect handler runs.
    """

    def __init__(self, matcher: str | re.Pattern[str]) -> None:
        self.matcher = matcher
        self._connect_handlers: list[ConnectHandler] = []
        self._disconnect_handlers: list[DisconnectHandler] = []
        self._event_handlers: dict[str, EventHandler] = {}
        self._other_events: EventHandler | None = None

    def __repr__(self) -> str:
        shown = self.matcher if isinstance(self.matcher, str) else self.matcher.pattern
        return f"<NamespaceGroup {shown!r}>"

    def match(self, name: str) -> dict[str, str] | None:
        """The namespace parameters if ``name`` belongs to this group, else None."""
        if isinstance(self.matcher, str):
            return {} if name == self.matcher else None
        found = self.matcher.fullmatch(name)
        if found is None:
            return None
        return {key: value for key, value in found.groupdict().items() if value is not None}

    def on_connect(self, handler: _C) -> _C:
        """Register a connect handler (usable as a decorator)."""
        self._connect_handlers.append(handler)
        return handler

    def on_disconnect(self, handler: _D) -> _D:
        """Register a disconnect handler (usable as a decorator)."""
        self._disconnect_handlers.append(handler)
        return handler

    @overload
    def on(self, event: str) -> Callable[[_E], _E]: ...

    @overload
    def on(self, event: str, handler: _E) -> _E: ...

    def on(self, event: str, handler: _E | None = None) -> _E | Callable[[_E], _E]:
        """Register the handler of ``event``: ``group.on("x", fn)`` or ``@group.on("x")``."""
        check_event_name(event)

        def register(function: _E) -> _E:
            if event in self._event_handlers:
                log.warn(
                    "Replacing the handler of event {event!r} on {group}", event=event, group=self
                )
            self._event_handlers[event] = function
            return function

        if handler is None:
            return register
        return register(handler)

    def on_other_events(self, handler: _E) -> _E:
        """
        Register the handler of every event that has none of its own, called as ``(socket, event, *args)``;
        its value becomes the ack. Without one such events are ignored, as socket.io servers do, and a client
        that asked for an ack never gets one.
        """
        self._other_events = handler
        return handler

    # -- read by the sockets that run the handlers ------------------------------------------------

    @property
    def connect_handlers(self) -> tuple[ConnectHandler, ...]:
        """The connect handlers, in the order they run."""
        return tuple(self._connect_handlers)

    @property
    def disconnect_handlers(self) -> tuple[DisconnectHandler, ...]:
        """The disconnect handlers, in the order they run."""
        return tuple(self._disconnect_handlers)

    def event_handler(self, event: str) -> EventHandler | None:
        """The handler of ``event``, None if it has none of its own (see :attr:`other_events_handler`)."""
        return self._event_handlers.get(event)

    @property
    def other_events_handler(self) -> EventHandler | None:
        """The handler of the events that have none of their own (see :meth:`on_other_events`), if any."""
        return self._other_events


class Namespace(Generic[_M]):
    """
    One concrete namespace with its connected sockets (a server's namespaces hold ``Socket``\\ s).

    Namespaces from an exact name live as long as the server; those created for a pattern match are
    dropped when their last socket leaves, so ``server.namespace(name)`` is None again.
    """

    def __init__(
        self,
        name: str,
        group: NamespaceGroup,
        params: dict[str, str],
        on_empty: Callable[[Namespace[_M]], None] | None = None,
    ) -> None:
        self.name = name
        self.group = group
        self.params = params
        self._sockets: dict[str, _M] = {}
        self._joining_count = 0
        self._on_empty = on_empty

    def __repr__(self) -> str:
        return f"<Namespace {self.name} with {len(self._sockets)} socket(s)>"

    def __len__(self) -> int:
        """How many sockets are connected."""
        return len(self._sockets)

    @property
    def sockets(self) -> Mapping[str, _M]:
        """The connected sockets by id (read-only view)."""
        return MappingProxyType(self._sockets)

    def emit(self, event: str, *args: Any) -> None:
        """Send an event to every connected socket; the packet is encoded once for all of them."""
        check_event_name(event)
        sockets = self._sockets
        if not sockets:
            return
        encoded = encode_packet(Packet(_EVENT, self.name, [event, *args]))
        for socket in list(sockets.values()):
            socket.send_encoded(encoded)

    def disconnect_all(self, reason: str = SERVER_DISCONNECT) -> None:
        """Disconnect every socket from the server side; disconnect handlers get ``reason``."""
        for socket in list(self._sockets.values()):
            socket.disconnect(reason)

    # -- told by the sockets as they join and leave ------------------------------------------------

    def joining(self) -> None:
        """A socket began to join (its connect handlers run): the namespace is kept until it is done."""
        self._joining_count += 1

    def joined(self, socket: _M) -> None:
        """A socket that was joining is connected."""
        self._joining_count -= 1
        self._sockets[socket.id] = socket

    def left(self, socket: _M, was_connected: bool) -> None:
        """A socket left, connected or still joining; a pattern namespace left empty is dropped."""
        if was_connected:
            self._sockets.pop(socket.id, None)
        else:
            self._joining_count -= 1
        if not self._sockets and self._joining_count == 0 and self._on_empty is not None:
            self._on_empty(self)

"""
The routes that name a kernel look it up first when this relay does not know it (in a fleet, a kernel another
relay started a moment ago: see :meth:`~kernel_relay.kernels.KernelRegistry.find`), so that they answer for
it as the relay that started it would, instead of 404 (or, for a session, a new kernel).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Protocol, TypeAlias, TypeVar

from twisted.internet.defer import Deferred, succeed
from twisted.web.iweb import IRequest

from ..kernels import KernelRegistry


class _Routes(Protocol):
    _kernels: KernelRegistry


_S = TypeVar("_S", bound=_Routes)
_Answer: TypeAlias = bytes | Deferred[bytes]


def looked_up(kernels: KernelRegistry, kernel_id: str | None) -> Deferred[None]:
    """Fires once ``kernel_id`` (if any) is looked up when this relay does not know it; at once otherwise."""
    waiting = None if kernel_id is None else kernels.find(kernel_id)
    return succeed(None) if waiting is None else waiting


def kernel_found_first(
    route: Callable[[_S, IRequest, str], _Answer],
) -> Callable[[_S, IRequest, str], _Answer]:
    """A route on ``kernel_id`` that runs once an unknown kernel is looked up (at once otherwise)."""

    @functools.wraps(route)
    def found_first(routes: _S, request: IRequest, kernel_id: str) -> _Answer:
        waiting = routes._kernels.find(kernel_id)
        if waiting is None:
            return route(routes, request, kernel_id)
        return waiting.addCallback(lambda _: route(routes, request, kernel_id))

    return found_first


__all__ = ["kernel_found_first", "looked_up"]

"""
Several Klein apps on one site: each request goes to the first app with a rule for its path (whatever the
method, so that app answers 405 for a wrong one), else to the last, which answers 404 for what no app has.
"""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import unquote

from klein import Klein
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource, Resource
from werkzeug.exceptions import MethodNotAllowed, NotFound
from werkzeug.routing import MapAdapter, RequestRedirect


class KleinRoutes(Resource):
    """The routes of ``apps`` (each a Klein app and its resource) as one leaf resource."""

    isLeaf = True

    def __init__(self, apps: Sequence[tuple[Klein, IResource]]) -> None:
        super().__init__()
        if not apps:
            raise ValueError("KleinRoutes needs at least one app")
        self._apps = list(apps)
        self._adapters: list[MapAdapter] = [app.url_map.bind("relay") for app, _ in self._apps]

    def _resource_for(self, request: IRequest) -> IResource:
        path = unquote(request.path.decode("utf-8", "replace"))
        method = request.method.decode("ascii", "replace")
        for adapter, (_, resource) in zip(self._adapters[:-1], self._apps[:-1], strict=True):
            try:
                adapter.match(path, method=method)
            except NotFound:
                continue
            except (MethodNotAllowed, RequestRedirect):
                pass
            return resource
        return self._apps[-1][1]

    def render(self, request: IRequest) -> bytes | int:
        result: bytes | int = self._resource_for(request).render(request)
        return result

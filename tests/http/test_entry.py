"""The site's entry: the base URL taken off each path, and each request timed by its route template."""

from __future__ import annotations

from typing import Any

from treq.testing import StubTreq
from twisted.internet.task import Clock
from twisted.web.iweb import IRequest
from twisted.web.resource import Resource

from kernel_relay.http.entry import SiteEntry, route_of
from tests.fakes import result_of


class Echo(Resource):
    isLeaf = True

    def render(self, request: IRequest) -> bytes:
        return request.path  # type: ignore[attr-defined, no-any-return]


def _get(entry: SiteEntry, path: str) -> tuple[int, bytes]:
    stub = StubTreq(entry)
    response = result_of(stub.get("http://127.0.0.1" + path, allow_redirects=False))
    return response.code, result_of(stub.content(response))


def test_the_base_url_is_taken_off_the_path_and_nothing_outside_it_is_served() -> None:
    """Under /kernels/ the root sees /api/kernels; /kernels redirects; /api/kernels is 404."""
    entry = SiteEntry(Echo(), base="/kernels/", clock=Clock().seconds)
    assert _get(entry, "/kernels/api/kernels") == (200, b"/api/kernels")
    assert _get(entry, "/kernels/") == (200, b"/")
    assert _get(entry, "/kernels")[0] == 302
    code, body = _get(entry, "/api/kernels")
    assert code == 404 and b"base URL /kernels/" in body
    assert _get(entry, "/kernelsx/api")[0] == 404


def test_without_a_base_url_every_path_is_the_roots() -> None:
    """The default base / changes nothing."""
    entry = SiteEntry(Echo(), clock=Clock().seconds)
    assert _get(entry, "/api/kernels/abc") == (200, b"/api/kernels/abc")


def test_each_request_is_timed_by_route_template_never_by_raw_path() -> None:
    """The observer gets the method, the route's template, the status and the seconds taken."""
    seen: list[tuple[Any, ...]] = []
    entry = SiteEntry(
        Echo(), base="/k/", clock=Clock().seconds, observe=lambda *args: seen.append(args)
    )
    _get(entry, "/k/api/kernels/1234/interrupt")
    assert seen == [("GET", "/api/kernels/{id}/{action}", 200, 0.0)]


def test_route_templates() -> None:
    """Ids and names never reach a label: each path maps to its template, or "other"."""
    assert route_of(b"/api/kernels/abc/channels") == "/api/kernels/{id}/channels"
    assert route_of(b"/socket.io/") == "/socket.io/"
    assert route_of(b"/spawn/python3") == "/spawn/{name}"
    assert route_of(b"/") == "/ (demo)"
    assert route_of(b"/wp-admin.php") == "other"

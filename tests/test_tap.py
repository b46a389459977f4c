"""The service tree ``makeService`` wires, built in memory: what listens where, and what answers there."""

from __future__ import annotations

import json
from typing import Any

from treq.testing import StubTreq
from twisted.application.service import IServiceCollection
from twisted.internet.defer import Deferred
from twisted.internet.testing import MemoryReactorClock

from kernel_relay.http.site import Listener, RelaySite
from kernel_relay.kernels.heartbeat import HeartbeatMonitor
from kernel_relay.kernels.service import KernelsService
from kernel_relay.tap import Options, makeService


def service_tree(*argv: str) -> tuple[IServiceCollection, MemoryReactorClock]:
    options = Options()
    options.parseOptions(list(argv))
    reactor = MemoryReactorClock()
    tree = makeService(options, reactor=reactor)
    return IServiceCollection(tree), reactor


def resolved(deferred: Deferred[Any]) -> Any:
    """The result of a Deferred that has fired (StubTreq answers synchronously)."""
    results: list[Any] = []
    deferred.addBoth(results.append)
    assert results, "the Deferred has not fired"
    return results[0]


def children(tree: IServiceCollection) -> list[Any]:
    return list(tree)


def test_port_listens_on_loopback_only() -> None:
    """--port listens on 127.0.0.1 (and ::1 where the machine has it) with the relay's site, nowhere else."""
    tree, reactor = service_tree("--port", "3456")
    tree.privilegedStartService()  # type: ignore[attr-defined]
    tree.startService()  # type: ignore[attr-defined]
    try:
        listening = [(port, interface) for port, _, _, interface in reactor.tcpServers]
        assert (3456, "127.0.0.1") in listening
        assert {interface for _, interface in listening} <= {"127.0.0.1", "::1"}
        assert all(isinstance(factory, RelaySite) for _, factory, _, _ in reactor.tcpServers)
    finally:
        tree.stopService()  # type: ignore[attr-defined]


def test_listen_endpoints_and_the_services_beside_them() -> None:
    """Each --listen gets a listener; the kernels service and the heartbeat monitor are always there."""
    tree, reactor = service_tree(
        "--listen", "tcp:4567:interface=127.0.0.1", "--listen", "unix:/tmp/x.sock"
    )
    services = children(tree)
    kinds = [type(service) for service in services]
    assert kinds.count(Listener) == 2
    assert KernelsService in kinds and HeartbeatMonitor in kinds
    tree.privilegedStartService()  # type: ignore[attr-defined]
    assert [port for port, *_ in reactor.tcpServers] == [4567]
    assert [address for address, *_ in reactor.unixServers] == ["/tmp/x.sock"]


def test_the_site_answers_health_in_memory() -> None:
    """The site's resource tree serves /api/health without a network, with the relay's JSON."""
    tree, reactor = service_tree("--port", "3457")
    tree.privilegedStartService()  # type: ignore[attr-defined]
    site: RelaySite = reactor.tcpServers[0][1]
    stub = StubTreq(site.resource)
    response = resolved(stub.get("http://127.0.0.1:3457/api/health"))
    assert response.code == 200
    body = json.loads(resolved(stub.content(response)))
    assert body["status"] == "ok" and body["kernels"] == 0


def test_culler_only_when_asked() -> None:
    """The culler is wired only with --cull-idle-timeout."""
    plain, _ = service_tree("--port", "3458")
    culled, _ = service_tree("--port", "3459", "--cull-idle-timeout", "60")
    assert "KernelCuller" not in {type(s).__name__ for s in children(plain)}
    assert "KernelCuller" in {type(s).__name__ for s in children(culled)}


def test_a_fleet_only_with_redis_and_before_the_kernels() -> None:
    """--redis adds the fleet, ahead of the kernels service (so it stops after them); without it, none."""
    from kernel_relay.fleet import Fleet

    assert Fleet not in [type(service) for service in children(service_tree("--port", "3458")[0])]
    tree, _ = service_tree(
        "--port", "3459", "--redis", "redis://:pw@127.0.0.1:6390/4", "--fleet-secret", "s"
    )
    kinds = [type(service) for service in children(tree)]
    assert kinds.index(Fleet) < kinds.index(KernelsService)
    fleet = next(service for service in children(tree) if isinstance(service, Fleet))
    assert (fleet.store.url.port, fleet.store.url.db, fleet.store.url.password) == (6390, 4, "pw")


def test_a_redis_option_that_is_no_url_is_a_usage_error() -> None:
    import pytest
    from twisted.python import usage

    for bad in ("localhost:6379", "redis://", "redis://h/x"):
        with pytest.raises(usage.UsageError):
            Options().parseOptions(["--redis", bad])
    with pytest.raises(usage.UsageError):
        Options().parseOptions(["--fleet-lease", "0"])


def test_trusted_proxies_reach_the_sites_limiter_and_bad_ones_are_usage_errors() -> None:
    """--trusted-proxy (repeatable) and --forwarded-header configure the limiter; a name or an unknown header is refused."""
    import pytest
    from twisted.python import usage

    tree, _ = service_tree(
        "--trusted-proxy",
        "10.0.0.5",
        "--trusted-proxy",
        "192.168.0.0/16",
        "--forwarded-header",
        "Forwarded",
    )
    site = next(s for s in children(tree) if isinstance(s, Listener)).factory
    assert isinstance(site, RelaySite) and site.limiter is not None
    proxies = site.limiter.proxies
    assert proxies.header == "forwarded"
    assert proxies.trusts("10.0.0.5") and proxies.trusts("192.168.3.4")
    assert not proxies.trusts("10.0.0.6")
    for bad in (["--trusted-proxy", "proxy.example.org"], ["--forwarded-header", "x-real-ip"]):
        with pytest.raises(usage.UsageError):
            Options().parseOptions(bad)


def test_help_that_names_socketio_names_the_jupyter_front_too() -> None:
    """An option's help that names socket.io or Engine.IO also says what Jupyter clients get, unless the option is socket.io's alone."""
    socketio_only = {
        "transports",
        "ping-interval",
        "ping-timeout",
        "connect-timeout",
        "no-eio3",
        "max-sessions",
        "max-sessions-per-address",
    }
    options = Options()
    for name, doc in options.docs.items():
        if name in socketio_only or not isinstance(doc, str):
            continue
        if "socket.io" in doc or "Engine.IO" in doc:
            assert "Jupyter" in doc, f"--{name}: {doc}"
    for name in socketio_only:
        assert "socket.io" in options.docs[name] or "Engine.IO" in options.docs[name], name

"""The options of execution requests (:mod:`kernel_relay.tap.requests`): parsed, checked, and wired to the core and the REST front."""

from __future__ import annotations

import pytest
from treq.testing import StubTreq
from twisted.internet.task import Clock
from twisted.python import usage

from kernel_relay.auth import TokenAuth
from kernel_relay.metrics import RelayMetrics
from kernel_relay.relay.ledger import LedgerOptions
from kernel_relay.tap import Options
from kernel_relay.tap.clients import build_core
from kernel_relay.tap.fleet import FleetParts
from kernel_relay.tap.requests import MAX_REST_REQUESTS_PER_KERNEL, TOPIC, ledger_options
from kernel_relay.tap.site import build_routes
from tests.fakes import FakeKernel, FakeRegistry, result_of
from tests.test_settings import clean_environment, parsed

__all__ = ["clean_environment"]  # the settings tests' fixture: no setting from the environment


def test_the_defaults_are_the_ledgers_and_the_options_have_a_topic() -> None:
    """Without the options the core keeps what LedgerOptions says; --help lists them under their own topic."""
    options = parsed()
    assert ledger_options(options) == LedgerOptions()
    assert options["max-rest-requests-per-kernel"] == MAX_REST_REQUESTS_PER_KERNEL
    assert TOPIC in Options.topics
    help_text = str(options)
    for name in TOPIC[1]:
        assert f"--{name}" in help_text


def test_sizes_and_durations_take_units() -> None:
    """--requests-outputs-bytes takes a size with units, --requests-age a duration with units."""
    options = parsed(
        "--requests-kept",
        "5",
        "--requests-outputs-bytes",
        "2MiB",
        "--requests-age",
        "5m",
        "--max-rest-requests-per-kernel",
        "3",
    )
    assert ledger_options(options) == LedgerOptions(
        max_requests=5, max_bytes=2 * 1024 * 1024, max_age=300.0
    )
    assert options["max-rest-requests-per-kernel"] == 3
    assert parsed("--requests-outputs-bytes", "0")["requests-outputs-bytes"] == 0


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--requests-kept", "0"], "--requests-kept '0': must be positive"),
        (["--requests-kept", "many"], "--requests-kept 'many': not a whole number"),
        (["--requests-outputs-bytes", "-1"], "--requests-outputs-bytes '-1'"),
        (["--requests-age", "0"], "--requests-age '0': must be positive"),
        (["--requests-age", "soon"], "--requests-age 'soon'"),
        (["--max-rest-requests-per-kernel", "0"], "must be positive"),
    ],
)
def test_bad_values_are_one_clear_error(argv: list[str], message: str) -> None:
    """A bad value stops the relay with one line naming the option and what it takes."""
    with pytest.raises(usage.UsageError) as raised:
        parsed(*argv)
    assert message in str(raised.value)
    assert "\n" not in str(raised.value)


def test_the_options_reach_the_core_and_the_rest_front() -> None:
    """The relay's core keeps requests within the options' bounds, and its REST front refuses over its cap."""
    options = parsed(
        "--requests-kept", "7", "--requests-age", "9", "--max-rest-requests-per-kernel", "2"
    )
    clock, registry, metrics, auth = Clock(), FakeRegistry(), RelayMetrics(), TokenAuth()
    core = build_core(options, clock, registry, auth, metrics, FleetParts())  # type: ignore[arg-type]
    assert core.ledger.options == LedgerOptions(max_requests=7, max_age=9.0)
    registry.start(FakeKernel("k1-0000"))
    routes = build_routes(options, clock, registry, core, None, metrics, auth, FleetParts())  # type: ignore[arg-type]
    stub = StubTreq(routes)
    url = "http://127.0.0.1:3000/api/kernels/k1-0000/execute"
    codes = [result_of(stub.post(url, json={"code": "1"})).code for _ in range(3)]
    assert codes == [202, 202, 429]

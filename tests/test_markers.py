"""The ``e2e`` mark: how ``tests/conftest.py`` tells a process-starting test from an in-process one."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.conftest import Relay, starts_processes_in
from tests.fakes import FakeKernel


def start_a_relay(path: Path) -> Relay:
    return Relay(path)


def through_a_helper(path: Path) -> None:
    start_a_relay(path).stop()


def run_a_command() -> None:
    subprocess.run(["true"], check=True)


def in_process() -> None:
    FakeKernel("k1").close()


# The functions are named, not called by name, so that these tests themselves start no process.
@pytest.mark.parametrize(
    ("name", "starts"),
    [
        ("start_a_relay", True),
        ("through_a_helper", True),
        ("run_a_command", True),
        ("in_process", False),
    ],
)
def test_process_starters_are_found_directly_and_through_helpers(name: str, starts: bool) -> None:
    """Starting the relay, directly or through a function of the tests, or running a command, is found."""
    assert starts_processes_in(globals()[name]) is starts


def test_these_tests_are_in_process(request: pytest.FixtureRequest) -> None:
    """A test that only names process starters is not marked e2e."""
    assert request.node.get_closest_marker("e2e") is None

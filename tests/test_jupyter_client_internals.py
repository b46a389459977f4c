"""
kernel_relay.jupyter_client_internals against the installed jupyter_client, on real ``KernelManager``s with
real ZeroMQ sockets (no kernel runs), so that a jupyter_client release that moves what the relay relies on
fails here, loudly, rather than in a kernel's shutdown, restart or adoption.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq
from jupyter_client import manager as jupyter_manager
from jupyter_client.kernelspec import KernelSpec
from jupyter_client.manager import KernelManager

from kernel_relay.jupyter_client_internals import (
    close_control_socket,
    connect_control_socket,
    encryption_policy,
    kernelspec_supports_curve,
    mark_started,
)
from kernel_relay.kernels._sandbox import SandboxedKernelManager


@pytest.fixture
def manager(tmp_path: Path) -> Iterator[KernelManager]:
    km = KernelManager(connection_file=str(tmp_path / "kernel.json"), context=zmq.Context())
    km.write_connection_file()
    try:
        yield km
    finally:
        close_control_socket(km)
        km.cleanup_connection_file()
        km.context.term()


def test_the_control_socket_is_opened_and_closed(manager: KernelManager) -> None:
    """connect_control_socket opens the manager's control socket on its port; close_control_socket closes it."""
    connect_control_socket(manager)
    socket = manager._control_socket
    assert isinstance(socket, zmq.Socket) and not socket.closed
    assert socket.get(zmq.LAST_ENDPOINT).decode().endswith(f":{manager.control_port}")
    close_control_socket(manager)
    assert socket.closed and manager._control_socket is None
    close_control_socket(manager)  # closing again is harmless


def test_a_manager_marked_started_restarts_with_its_launch_arguments(
    manager: KernelManager,
) -> None:
    """mark_started gives the launch arguments jupyter_client's own env updates and restarts use."""
    mark_started(manager, {"independent": True, "env": {"A": "1"}})
    manager.update_env(env={"B": "2"})  # public API, which updates the launch arguments' env
    assert manager._launch_args == {"independent": True, "env": {"A": "1", "B": "2"}}
    assert manager._attempted_start is True
    # The flag jupyter_client reads to give each later call (shutdown, restart) a fresh ``ready`` future.
    assert "_attempted_start" in inspect.getsource(jupyter_manager.in_pending_state)
    assert "_launch_args" in inspect.getsource(KernelManager._async_restart_kernel)


@pytest.mark.parametrize("policy", ["auto", "required", "disabled"])
def test_the_encryption_policy_is_the_managers(policy: str) -> None:
    """encryption_policy reads the manager's transport_encryption, normalised."""
    if policy != "disabled" and not zmq.has("curve"):
        pytest.skip("this pyzmq's libzmq has no CurveZMQ")
    assert encryption_policy(KernelManager(transport_encryption=policy.upper())) == policy


def test_curve_support_is_what_the_kernelspec_declares() -> None:
    """kernelspec_supports_curve is True only for a kernelspec whose metadata declares curve."""
    declared = KernelManager()
    declared._kernel_spec = KernelSpec(argv=["x"], metadata={"supported_encryption": ["curve"]})
    silent = KernelManager()
    silent._kernel_spec = KernelSpec(argv=["x"], metadata={})
    assert kernelspec_supports_curve(declared) is True
    assert kernelspec_supports_curve(silent) is False


def test_the_launch_hook_the_sandbox_overrides_is_still_called() -> None:
    """KernelManager._async_launch_kernel(kernel_cmd, **kw) exists and is what starting a kernel awaits."""
    hook = KernelManager._async_launch_kernel
    assert inspect.iscoroutinefunction(hook)
    assert list(inspect.signature(hook).parameters) == ["self", "kernel_cmd", "kw"]
    assert "_async_launch_kernel" in inspect.getsource(KernelManager._async_start_kernel)
    assert SandboxedKernelManager._async_launch_kernel is not hook


def test_the_shutdown_hook_the_sandbox_overrides_is_what_stop_kill_and_restart_await() -> None:
    """
    KernelManager._async_shutdown_kernel(now, restart) is what shutdown_kernel runs and restarts await, and
    the sandbox's manager binds shutdown_kernel to its own (the base class binds the base function).
    """
    hook = KernelManager._async_shutdown_kernel
    assert inspect.iscoroutinefunction(hook)
    assert list(inspect.signature(hook).parameters) == ["self", "now", "restart"]
    assert "self._async_shutdown_kernel(" in inspect.getsource(KernelManager._async_restart_kernel)
    assert SandboxedKernelManager._async_shutdown_kernel is not hook
    assert SandboxedKernelManager.shutdown_kernel is not KernelManager.shutdown_kernel


def test_no_other_module_reaches_into_jupyter_client_or_txredisapi() -> None:
    """The private names the internals modules wrap appear nowhere else in the relay's sources."""
    source = Path(__file__).resolve().parents[1] / "src" / "kernel_relay"
    confined = {
        "jupyter_client_internals.py": (
            "._close_control_socket",
            "._connect_control_socket",
            "._attempted_start",
            "._launch_args",
            "_transport_encryption_policy",
            "_kernel_supports_curve_encryption",
        ),
        "txredisapi_internals.py": ("._factory",),
    }
    for home, names in confined.items():
        for module in source.rglob("*.py"):
            if module.name == home:
                continue
            text = module.read_text()
            # An object's own attributes (``self._factory`` of a class of the relay's) are no reach.
            reached = [name for name in names if re.search(r"(?<!\bself)" + re.escape(name), text)]
            assert not reached, f"{module.relative_to(source)} reaches {reached}: use {home}"

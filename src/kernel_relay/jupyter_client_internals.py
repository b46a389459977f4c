# -*- test-case-name: tests.test_jupyter_client_internals -*-
"""
Every use the relay makes of jupyter_client's internals, each behind a function named for what it does.

Some of what the relay needs of a ``KernelManager`` is in no public API: closing the control socket it keeps
open between requests (an idle kernel then costs the relay only its iopub and heartbeat sockets), opening it
again, making a manager built for a kernel another relay started behave as one that started it (a later
restart launches again as the first launch did), and the manager's CurveZMQ policy, which a provisioner of
another host needs as jupyter_client's own ``LocalProvisioner`` has it. Those are implementation details
that a release may change without notice, so they are reached here and nowhere else.

Two more are no functions: :class:`kernel_relay.kernels._sandbox.SandboxedKernelManager` overrides
``KernelManager._async_launch_kernel`` (the one place that sees the kernel's command line before it runs)
and ``_async_shutdown_kernel`` (the one place every stop, kill and restart goes through), binding
``shutdown_kernel`` to its own.

``tests/test_jupyter_client_internals.py`` checks each against the installed jupyter_client on real
managers, so a release that moves one fails there, loudly, rather than in a kernel's shutdown or restart.
This module knows jupyter_client's ``KernelManager`` only, and imports nothing of kernel_relay.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def close_control_socket(manager: Any) -> None:
    """Close the control socket ``manager`` keeps open (it opens one again when it needs it)."""
    manager._close_control_socket()


def connect_control_socket(manager: Any) -> None:
    """Open ``manager``'s control socket (as ``start_kernel`` does), for a kernel it did not start."""
    manager._connect_control_socket()


def mark_started(manager: Any, launch_args: Mapping[str, Any]) -> None:
    """
    Make ``manager`` behave as the one that started its kernel with ``launch_args``: each later call
    (shutdown, restart) gets a fresh ``ready`` future, and a restart launches with these arguments.
    """
    manager._attempted_start = True
    manager._launch_args = dict(launch_args)


def encryption_policy(manager: Any) -> str:
    """``manager``'s ``transport_encryption`` policy: auto, required or disabled."""
    policy: str = manager._transport_encryption_policy()
    return policy


def kernelspec_supports_curve(manager: Any) -> bool:
    """Whether ``manager``'s kernelspec declares CurveZMQ support."""
    return bool(manager._kernel_supports_curve_encryption())

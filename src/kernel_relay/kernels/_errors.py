"""Errors of the kernels layer; their messages are shown to end users (``{"error": ...}``)."""

from __future__ import annotations


class InvalidMessage(ValueError):
    """A client's message cannot be sent to a kernel (malformed, unencodable, nowhere to go)."""


class UnknownKernelSpec(LookupError):
    """No kernelspec of that name is installed."""


class UnknownKernel(LookupError):
    """No running kernel has that id (never started, already stopped, or died)."""


class KernelLaunchError(RuntimeError):
    """A kernel could not be started or did not become ready in time."""


class KernelShutdownError(RuntimeError):
    """A kernel could not be stopped; its process may still be running."""

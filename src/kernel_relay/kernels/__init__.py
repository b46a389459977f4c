"""
The kernels layer: kernelspecs, launching and stopping kernels, their ZMQ channels, message signing.

It knows jupyter_client, txzmq and the Jupyter message format, and nothing of HTTP or socket.io.

- ``KernelRegistry(reactor)`` starts kernels through jupyter_client (so kernelspec provisioners
  are honoured), keeps warm pools, watches them for death, restarts and stops them; blocking calls run
  in the reactor's thread pool. It is a façade over small parts, one private module each (see
  ``_registry``).
- ``Kernel`` is one running kernel: ``add_iopub_listener`` for its broadcast stream,
  ``open_client`` for a per-client connection whose replies reach only that client.
- ``KernelClient.send`` completes, checks and signs a client's message; incoming messages are
  verified with the kernel's key and dropped (logged, counted) when they are not genuine.
"""

from ._errors import (
    InvalidMessage,
    KernelLaunchError,
    KernelShutdownError,
    UnknownKernel,
    UnknownKernelSpec,
)
from ._kernel import Kernel, KernelClient, MessageCallback
from ._limits import Limits
from ._messages import (
    CHANNELS,
    CLIENT_CHANNELS,
    CONTROL,
    DEFAULT_USERNAME,
    IOPUB,
    PROTOCOL_VERSION,
    SHELL,
    STDIN,
    Frame,
    KernelMessage,
    iso_date,
    pack_json,
)
from ._observers import KernelObserver
from ._registry import LOOKUP_WAIT, KernelRegistry, KernelSpecInfo
from ._sandbox import NETWORK_POLICIES, SANDBOX_POLICIES, SandboxPolicy
from ._sandbox import unavailable as sandbox_unavailable
from ._zmq import SocketsExhausted

__all__ = [
    "CHANNELS",
    "CLIENT_CHANNELS",
    "CONTROL",
    "DEFAULT_USERNAME",
    "IOPUB",
    "LOOKUP_WAIT",
    "NETWORK_POLICIES",
    "PROTOCOL_VERSION",
    "SANDBOX_POLICIES",
    "SHELL",
    "STDIN",
    "Frame",
    "InvalidMessage",
    "Kernel",
    "KernelClient",
    "KernelLaunchError",
    "KernelMessage",
    "KernelObserver",
    "KernelRegistry",
    "KernelShutdownError",
    "KernelSpecInfo",
    "Limits",
    "MessageCallback",
    "SandboxPolicy",
    "SocketsExhausted",
    "UnknownKernel",
    "UnknownKernelSpec",
    "iso_date",
    "pack_json",
    "sandbox_unavailable",
]

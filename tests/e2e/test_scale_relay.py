"""A relay's cost per kernel: no thread per kernel, and file descriptors only for the kernel's sockets."""

from __future__ import annotations

import os
import time

from tests.conftest import Relay, relay_fixture

relay = relay_fixture("--kernel-sandbox", "off")

#: What a kernel may cost the relay in file descriptors: its iopub and heartbeat sockets, each a ZeroMQ mailbox
#: and a TCP connection (jupyter_client's control socket is closed between uses), the pipe of its stdout and
#: of its stderr, and one to spare.
FDS_PER_KERNEL = 7


def _threads(pid: int) -> int:
    """ZeroMQ's threads in the process (the thread pool's workers come and go with its work)."""
    names = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/comm") as comm:
            names.append(comm.read())
    return sum(name.startswith("ZMQbg") for name in names)


def _fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _settled(relay: Relay) -> tuple[int, int]:
    """Threads and fds once the thread pool's workers of the last spawn went back to waiting."""
    time.sleep(1.0)
    return _threads(relay.process.pid), _fds(relay.process.pid)


def test_more_kernels_cost_no_more_threads_and_few_fds(relay: Relay) -> None:
    """Three more kernels leave the relay's ZeroMQ threads as they were, and add at most a few fds each."""
    kernels = [relay.spawn()]
    try:
        threads, fds = _settled(relay)
        kernels += [relay.spawn() for _ in range(3)]
        more_threads, more_fds = _settled(relay)
        assert more_threads <= threads, f"{more_threads - threads} threads for 3 kernels"
        assert more_fds - fds <= 3 * FDS_PER_KERNEL, f"{more_fds - fds} fds for 3 kernels"
    finally:
        for kernel in kernels:
            relay.shutdown(kernel)

"""The relay's ZeroMQ contexts: shared by every kernel, as large as the file limit, and a clear error past it."""

from __future__ import annotations

import resource

import pytest
import zmq
from twisted.internet.testing import MemoryReactorClock

from kernel_relay.kernels import _zmq
from kernel_relay.kernels._sandbox import SandboxedKernelManager
from kernel_relay.kernels._zmq import SocketsExhausted, ZmqSocketOpener

URL = "tcp://127.0.0.1:9"


def test_context_holds_as_many_sockets_as_the_file_limit() -> None:
    """A context's socket limit follows the process's file limit, not pyzmq's default of 1,023."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    context = _zmq.new_context()
    try:
        expected = min(soft, int(context.get(zmq.SOCKET_LIMIT)))
        assert context.get(zmq.MAX_SOCKETS) == expected
    finally:
        context.term()


def test_kernel_managers_share_one_context() -> None:
    """Two kernel managers use the same context, so kernels cost no ZeroMQ threads of their own."""
    first, second = SandboxedKernelManager(), SandboxedKernelManager()
    assert first.context is second.context is _zmq.manager_context()


def test_running_out_of_sockets_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """Past the context's socket limit, opening a socket fails with SocketsExhausted saying what to do."""
    monkeypatch.setattr(_zmq, "file_limit", lambda: 3)
    opener = ZmqSocketOpener(MemoryReactorClock())
    opened = []
    try:
        with pytest.raises(SocketsExhausted, match="ulimit -n"):
            for _ in range(4):
                opened.append(opener.dealer(URL, b"client", lambda frames: None))
        assert len(opened) == 3
    finally:
        for socket in opened:
            socket.close()
        opener.close()

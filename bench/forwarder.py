"""
``python -m bench.forwarder SHELL_URL IOPUB_URL [--iopub]``: the round trip's structural floor, a relay that
does no work.

Any relay puts one more process between a client and its kernel: one more TCP hop, one more ZMQ socket
(with libzmq's I/O thread), and a third busy process on the machine; and it receives the kernel's iopub
messages (two status messages per request), whoever is listening. This forwarder pays exactly that and
nothing else: it passes a client's already signed Jupyter message, framed as below, to the kernel's shell
socket unchanged, and the reply back, without parsing, checking or re-encoding anything; iopub messages are
received and dropped, as by a relay whose client joined only the shell channel. What the relay takes
beyond it is the cost of its protocols (WebSocket, Engine.IO, socket.io, JSON, signing) and of Twisted;
what the forwarder takes beyond direct ZMQ is what no relay process can avoid.

Its kernel's channels are encrypted as the relay's are (CurveZMQ when the kernelspec declares it, the relay's
default): the forwarder's sockets then are Curve clients, given the kernel's key pair in the environment
(``FORWARDER_CURVE_PUBLICKEY``, ``FORWARDER_CURVE_SECRETKEY``), and pay what the relay pays to decrypt.

It needs a kernel of its own: sharing one with the relay would make it pay for the relay's work on that
kernel's iopub messages too (3-10% of a round trip, measured by stopping the relay).

With ``--iopub`` it also passes every iopub message on to its client, unchanged, as to a client that joined
iopub (a Jupyter WebSocket client does: it is sent the two statuses of every request): the floor of the
relay's Jupyter front, which the plain forwarder is not, since it sends one message per request and that
front three. Each message to the client then starts with a frame naming its channel (``shell``, ``iopub``).

It serves one client connection at a time, on a free loopback port that it prints on its first line.
A message on the TCP connection, each way, is ``!I`` frame count, ``!I`` length of each frame, then the
frames.
"""

from __future__ import annotations

import os
import socket
import struct
import sys

import zmq

_COUNT = struct.Struct("!I")


def pack(frames: list[bytes]) -> bytes:
    return struct.pack(f"!{len(frames) + 1}I", len(frames), *map(len, frames)) + b"".join(frames)


def unpack(buffer: bytes) -> tuple[list[bytes], int] | None:
    """The first whole message in ``buffer`` and the bytes it took, or None if it is not all there."""
    if len(buffer) < 4:
        return None
    (count,) = _COUNT.unpack_from(buffer)
    start = 4 + 4 * count
    if len(buffer) < start:
        return None
    lengths = struct.unpack_from(f"!{count}I", buffer, 4)
    if len(buffer) < start + sum(lengths):
        return None
    frames = []
    for length in lengths:
        frames.append(buffer[start : start + length])
        start += length
    return frames, start


def serve(
    client: socket.socket,
    kernel: zmq.Socket[bytes],
    iopub: zmq.Socket[bytes],
    pass_iopub: bool = False,
) -> None:
    """Forward shell messages until the client closes its connection; iopub messages too, or drop them."""
    shell_channel = [b"shell"] if pass_iopub else []
    poller = zmq.Poller()
    poller.register(client, zmq.POLLIN)
    poller.register(kernel, zmq.POLLIN)
    poller.register(iopub, zmq.POLLIN)
    pending = b""
    while True:
        for ready, _ in poller.poll():
            if ready is iopub:
                while iopub.getsockopt(zmq.EVENTS) & zmq.POLLIN:
                    frames = iopub.recv_multipart()
                    if pass_iopub:
                        client.sendall(pack([b"iopub", *frames]))
                continue
            if ready is kernel:
                while kernel.getsockopt(zmq.EVENTS) & zmq.POLLIN:
                    client.sendall(pack([*shell_channel, *kernel.recv_multipart()]))
                continue
            data = client.recv(1 << 16)
            if not data:
                return
            pending += data
            while (message := unpack(pending)) is not None:
                frames, used = message
                pending = pending[used:]
                kernel.send_multipart(frames)


def main(argv: list[str]) -> int:
    pass_iopub = argv[2:] == ["--iopub"]
    if len(argv) != 2 and not pass_iopub:
        print("usage: python -m bench.forwarder SHELL_URL IOPUB_URL [--iopub]", file=sys.stderr)
        return 2
    context = zmq.Context()
    kernel = context.socket(zmq.DEALER)
    kernel.linger = 0
    iopub = context.socket(zmq.SUB)
    iopub.linger = 0
    iopub.rcvhwm = 0
    iopub.setsockopt(zmq.SUBSCRIBE, b"")
    public, secret = (
        os.environ.get(f"FORWARDER_CURVE_{key}") for key in ("PUBLICKEY", "SECRETKEY")
    )
    if (
        public and secret
    ):  # an encrypted kernel: Curve clients with its key pair, as the relay's sockets
        for sock in (kernel, iopub):
            sock.curve_secretkey = secret.encode("ascii")
            sock.curve_publickey = public.encode("ascii")
            sock.curve_serverkey = public.encode("ascii")
    kernel.connect(argv[0])
    iopub.connect(argv[1])
    with socket.create_server(("127.0.0.1", 0)) as listener:
        print(listener.getsockname()[1], flush=True)
        while True:
            client, _ = listener.accept()
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with client:
                try:
                    serve(client, kernel, iopub, pass_iopub)
                except (ConnectionResetError, BrokenPipeError):
                    pass  # a client that closes with messages unread (iopub's) resets its connection


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

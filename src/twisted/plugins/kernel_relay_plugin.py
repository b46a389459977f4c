"""Registers ``twist kernel-relay``; the relay itself is imported only when that subcommand runs."""

from twisted.application.service import ServiceMaker

kernelRelay = ServiceMaker(
    "kernel-relay",
    "kernel_relay.tap",
    "Relay Jupyter kernels to web clients over socket.io and Jupyter's kernel WebSocket",
    "kernel-relay",
)

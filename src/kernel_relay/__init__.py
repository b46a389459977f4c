"""kernel-relay: Jupyter kernels for web clients, over socket.io, on Twisted."""

__version__ = "0.2.0.dev0"

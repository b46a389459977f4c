"""A socket.io v5 server layer for Twisted (see the server module); the packet codec is in ``packet``."""

"""
``twist kernel-relay``'s command line: the options of :mod:`.table`, checked together once all are read
(a typo, a contradiction or a kernelspec that is not installed stops the relay before it starts).
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Sequence
from typing import Any, cast
from urllib.parse import urlsplit

from twisted.internet.endpoints import serverFromString
from twisted.logger import Logger
from twisted.python import usage

from .. import __version__
from ..auth import TOKEN_ENV, exposed_endpoints, generate_token
from ..command_line import SettingsOptions
from ..fleet import RedisURL
from ..http.forwarded import parse_network
from . import requests
from .table import FLAGS, PARAMETERS, TOPICS
from .values import DEFAULT_PORT, FLEET_SECRET_ENV, REDIS_PASSWORD_ENV, transport_names

log = Logger(namespace="kernel_relay.tap")

#: The largest warm pool per kernelspec ``--pool`` accepts.
MAX_POOL = 32


def _read_secret(option: str, path: str) -> str:
    """A secret kept in a file (its first line), so that it is not on the command line (``ps``)."""
    try:
        with open(path, encoding="utf-8") as file:
            text = file.readline().strip()
    except (OSError, UnicodeDecodeError) as error:
        raise usage.UsageError(f"--{option} {path}: {error}") from None
    if not text:
        raise usage.UsageError(f"--{option} {path}: the file is empty")
    return text


class Options(SettingsOptions):
    synopsis = "[options] [port]"
    longdesc = (
        "Relay Jupyter kernels to web clients over socket.io and Jupyter Server's kernel API. GET "
        "/spawn/<kernelspec> starts a kernel, GET /shutdown/<id> stops it, and socket.io namespaces "
        "/shell/<id>, /stdin/<id>, /iopub/<id> and /control/<id> carry its messages as 'msg' events; "
        "JupyterLab and other Jupyter clients use /api/kernels. The relay runs code for whoever reaches it: "
        "--port listens on loopback only; use --listen for anything else."
    )

    optParameters: Sequence[Sequence[Any]] = PARAMETERS
    optFlags: Sequence[Sequence[Any]] = FLAGS

    topics = TOPICS
    sizes = frozenset(
        {
            "max-payload",
            "max-message-size",
            "max-buffered-bytes",
            "max-total-buffered-bytes",
            "iopub-replay-bytes",
            *requests.SIZES,
        }
    )
    durations = frozenset(
        {
            "ping-interval",
            "ping-timeout",
            "connect-timeout",
            "shutdown-timeout",
            "launch-timeout",
            "fleet-lease",
            "header-timeout",
            "body-timeout",
            "iopub-replay-age",
            "heartbeat-interval",
            "heartbeat-timeout",
            "cull-idle-timeout",
            "cull-interval",
            *requests.DURATIONS,
        }
    )
    secrets = frozenset({"token", "fleet-secret"})
    placeholders = {
        "listen": "ENDPOINT",
        "allow-origin": "ORIGIN",
        "pool": "NAME=N",
        "trusted-proxy": "ADDRESS",
        "kernel-env-allow": "NAMES",
        "allow-kernelspec": "NAME",
        "default-kernel": "NAME",
        "base-url": "PATH",
        "kernel-limits": "NAME=VALUE,...",
        **requests.PLACEHOLDERS,
    }
    together = (frozenset({"fleet-secret", "fleet-secret-file"}),)

    def __init__(self) -> None:
        super().__init__()
        # An option method's docstring is its help text, line breaks and indentation included; the help
        # wraps text itself, so runs of whitespace would show as gaps in the middle of a line.
        self.docs = {
            name: " ".join(doc.split()) if isinstance(doc, str) else doc
            for name, doc in self.docs.items()
        }
        self["listen"] = []
        self["allow-origin"] = []
        self["allow-host"] = []
        self["trusted-proxy"] = []
        self["pool"] = {}
        self["allow-kernelspec"] = []

    def opt_pool(self, value: str) -> None:
        """Keep N started, ready kernels of kernelspec NAME for instant starts (NAME=N, repeatable): /spawn,
        and POST /api/kernels or /api/sessions when they set no env."""
        name, sep, count = value.partition("=")
        name = name.strip()
        try:
            size = int(count)
        except ValueError:
            size = -1
        if not sep or not name or not 1 <= size <= MAX_POOL:
            raise usage.UsageError(
                f"--pool takes NAME=N with N from 1 to {MAX_POOL} (e.g. --pool python3=2), not {value!r}"
            )
        self["pool"][name] = size

    def opt_allow_kernelspec(self, name: str) -> None:
        """Allow kernels of this kernelspec only (repeatable; by default every installed one): the others
        are not listed, and starting one is refused with 403 (/spawn, POST /api/kernels, POST
        /api/sessions)."""
        self["allow-kernelspec"].append(name.strip())

    def opt_listen(self, description: str) -> None:
        """Listen on a Twisted endpoint (repeatable), e.g. tcp:3000:interface=0.0.0.0,
        ssl:3443:privateKey=key.pem:certKey=cert.pem or unix:/run/kernel-relay.sock."""
        self["listen"].append(description)

    def opt_allow_origin(self, origin: str) -> None:
        """Let web pages from this origin use the relay (repeatable): an exact origin such as
        https://app.example.com, a pattern such as https://*.example.com, or * for any. By default only
        same-origin pages and clients sending no Origin (curl, Node, Python) are served."""
        value = origin.strip()
        parts = urlsplit(value)
        if value != "*" and (
            not parts.scheme or not parts.netloc or parts.path not in ("", "/") or parts.query
        ):
            raise usage.UsageError(
                f"--allow-origin {origin!r} is not an origin: it is scheme://host[:port] (a browser's "
                "Origin header), for example https://app.example.com or https://*.example.com, or *"
            )
        self["allow-origin"].append(origin)

    def opt_allow_host(self, name: str) -> None:
        """Without a token, also answer requests for this host name (repeatable), or * for any. By default
        a relay without a token answers only localhost and IP addresses, so that a web page cannot reach it
        through DNS rebinding. A relay with a token answers every name."""
        self["allow-host"].append(name)

    def opt_trusted_proxy(self, address: str) -> None:
        """Believe the --forwarded-header of connections from this reverse proxy (repeatable): an address
        or a network, e.g. 127.0.0.1 or 10.0.0.0/8. Its clients then count by their own address for the
        per-address bounds, and logs show them; the rightmost address in the header that is not a trusted
        proxy is the client."""
        try:
            parse_network(address)
        except ValueError as error:
            raise usage.UsageError(f"--trusted-proxy: {error}") from None
        self["trusted-proxy"].append(address)

    def opt_version(self) -> None:
        """Print the versions of kernel-relay and of what it runs on, and exit."""
        from importlib.metadata import version

        import zmq

        print(f"kernel-relay {__version__}")
        stack = ", ".join(
            f"{name} {version(name)}"
            for name in ("Twisted", "autobahn", "pyzmq", "txzmq", "klein", "jupyter_client")
        )
        print(f"{stack} (libzmq {zmq.zmq_version()})")
        sys.exit(0)

    def opt_generate_token(self) -> None:
        """Print a new random token (for --token or $KERNEL_RELAY_TOKEN) and exit."""
        print(generate_token())
        sys.exit(0)

    def parseArgs(self, port: str | None = None) -> None:
        """Accept the original kernel-relay's positional ``[port]``."""
        if port is not None:
            if self["port"] is not None:
                raise usage.UsageError("give the port either as --port or as an argument, not both")
            try:
                self["port"] = usage.portCoerce(port)
            except ValueError as error:
                raise usage.UsageError(f"invalid port {port!r}: {error}") from None

    def postOptions(self) -> None:
        if isinstance(self["transports"], str):
            self["transports"] = transport_names(self["transports"])
        if self["port"] is None and not self["listen"]:
            self["port"] = DEFAULT_PORT
        if self["token"] is not None and not self["token"].strip():
            raise usage.UsageError("--token must not be empty")
        if self["token"] is not None and self["no-auth"]:
            raise usage.UsageError(
                "--no-auth and a token (--token or $KERNEL_RELAY_TOKEN) contradict"
            )
        for description in self["listen"]:
            # A typo must be named as such here, not taken for an exposed endpoint below or fail with a
            # traceback at start. Twisted's own parsers need no reactor to parse.
            try:
                serverFromString(cast(Any, None), description)
            except (ValueError, TypeError, OSError) as error:
                raise usage.UsageError(f"--listen {description}: {error}") from None
            except Exception:
                pass  # a plugin's parser may need the reactor: it fails at start, if at all
        exposed = exposed_endpoints(self.endpoints())
        if exposed and self["token"] is None and not self["no-auth"]:
            raise usage.UsageError(
                f"refusing to listen on {', '.join(exposed)} without a token (protected mode): "
                "anyone who can reach the relay can run code on this machine. Set --token or "
                f"${TOKEN_ENV} (twist kernel-relay --generate-token makes one), or pass --no-auth "
                "if something else guards the relay."
            )
        self._fleet_options()
        self._kernelspecs()
        if self["heartbeat-timeout"] <= self["heartbeat-interval"]:
            raise usage.UsageError("--heartbeat-timeout must be longer than --heartbeat-interval")
        if self["max-message-size"] is not None:
            self["max-payload"] = self["max-message-size"]
        if self["ping-timeout"] >= self["ping-interval"] * 10:
            log.warn("--ping-timeout is much longer than --ping-interval; dead clients linger")

    def _kernelspecs(self) -> None:
        """Every kernelspec named in the settings is installed and allowed: a typo stops the relay here."""
        named = [
            *(f"--pool {name}={size}" for name, size in self["pool"].items()),
            *(f"--allow-kernelspec {name}" for name in self["allow-kernelspec"]),
            *([f"--default-kernel {self['default-kernel']}"] if self["default-kernel"] else []),
        ]
        if not named:
            return
        from jupyter_client.kernelspec import KernelSpecManager

        installed = set(KernelSpecManager().find_kernel_specs())
        allowed = set(self["allow-kernelspec"]) or installed
        for setting in named:
            name = (
                setting.split(" ", 1)[1].rsplit("=", 1)[0]
                if "--pool" in setting
                else setting.split(" ", 1)[1]
            )
            if name not in installed:
                raise usage.UsageError(
                    f"{setting}: no kernelspec named {name!r} is installed "
                    f"(installed: {', '.join(sorted(installed)) or 'none'}; jupyter kernelspec list)"
                )
            if name not in allowed:
                raise usage.UsageError(f"{setting}: {name!r} is not in --allow-kernelspec")
        total = sum(self["pool"].values())
        if self["max-kernels"] is not None and total > self["max-kernels"]:
            raise usage.UsageError(
                f"--pool keeps {total} kernels warm, more than --max-kernels {self['max-kernels']}"
            )

    def _fleet_options(self) -> None:
        """The fleet's secret and Redis password, from a file, the environment or (secret) the token."""
        if self["fleet-secret-file"] is not None:
            if self["fleet-secret"] is not None:
                raise usage.UsageError("give --fleet-secret or --fleet-secret-file, not both")
            self["fleet-secret"] = _read_secret("fleet-secret-file", self["fleet-secret-file"])
        secret = self["fleet-secret"] or os.environ.get(FLEET_SECRET_ENV) or self["token"]
        url: RedisURL | None = self["redis"]
        if url is None:
            return
        if not secret or not secret.strip():
            raise usage.UsageError(
                f"a fleet (--redis) needs a secret its relays share: --fleet-secret-file, "
                f"${FLEET_SECRET_ENV} or the token (--token or ${TOKEN_ENV}). Without one, anyone who "
                "reaches Redis could act as a relay of the fleet."
            )
        self["fleet-secret"] = secret
        password = None
        if self["redis-password-file"] is not None:
            password = _read_secret("redis-password-file", self["redis-password-file"])
        elif url.password is None:
            password = os.environ.get(REDIS_PASSWORD_ENV) or None
        if password is not None:
            if url.password is not None:
                raise usage.UsageError(
                    "give the Redis password in --redis or in --redis-password-file, not both"
                )
            self["redis"] = dataclasses.replace(url, password=password)

    def endpoints(self, ipv6_loopback: bool = False) -> list[str]:
        """
        Every endpoint description to listen on; ``--port`` listens on ``::1`` too if ``ipv6_loopback``
        (whether the machine has it is the wiring's to find out, not the parser's).
        """
        descriptions = list(self["listen"])
        if self["port"] is not None:
            descriptions.append(f"tcp:{self['port']}:interface=127.0.0.1")
            if ipv6_loopback:
                descriptions.append(f"tcp6:{self['port']}:interface=\\:\\:1")
        return descriptions

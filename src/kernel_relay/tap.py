"""
``twist kernel-relay`` / ``twistd kernel-relay``: command-line options and the service tree. Wiring only.
"""

from __future__ import annotations

import dataclasses
import gc
import os
import re
import socket
import sys
from collections.abc import Sequence
from typing import Any, cast
from urllib.parse import urlsplit

import zmq
from twisted.application.service import IService, MultiService
from twisted.internet.defer import succeed
from twisted.internet.endpoints import serverFromString
from twisted.logger import Logger
from twisted.python import usage

from . import __version__
from .auth import TOKEN_ENV, TokenAuth, exposed_endpoints, generate_token
from .budget import BufferBudget
from .command_line import SettingsOptions
from .demo import demo_resources
from .engineio import EngineIOOptions
from .fleet import Fleet, FleetStore, RedisURL
from .fleet.numbering import stream_length
from .fleet.secrets import FleetKeys
from .fronts.jupyter import JupyterFront
from .fronts.socketio import SocketIOFront
from .http.api import RelayAPI
from .http.connections import ConnectionBounds, ConnectionLimiter, raise_open_file_limit
from .http.entry import SiteEntry, base_url
from .http.forwarded import HEADERS, TrustedProxies, parse_network
from .http.guards import AuthGuard, OriginGuard
from .http.hosts import HostPolicy
from .http.jupyter_api import EnvPolicy, JupyterAPI, threaded_resource_reader
from .http.origins import OriginPolicy
from .http.routes import KleinRoutes
from .http.sessions import SessionsAPI
from .http.site import DEFAULT_MAX_BODY, Listener, RelayRoot, RelaySite
from .http.spawning import Spawner
from .kernels import (
    NETWORK_POLICIES,
    SANDBOX_POLICIES,
    KernelRegistry,
    Limits,
    SandboxPolicy,
    sandbox_unavailable,
)
from .kernels.culling import KernelCuller
from .kernels.heartbeat import HeartbeatMonitor
from .kernels.service import KernelsService
from .logs import FORMATS, LEVELS
from .memory import MemoryGiveBack
from .metrics import RelayMetrics
from .relay.core import RelayCore, RelayLimits, ReplayOptions
from .socketio import SocketIOServer

log = Logger()

DEFAULT_PORT = 3000
TRANSPORTS = ("polling", "websocket")


def _positive(kind: type[float] | type[int]) -> Any:
    def coerce(text: str) -> float | int:
        try:
            value = kind(text)
        except ValueError:
            raise ValueError("not a whole number" if kind is int else "not a number") from None
        if value <= 0:
            raise ValueError(f"must be positive, not {text}")
        return value

    coerce.coerceDoc = "Must be positive."  # type: ignore[attr-defined]
    return coerce


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ValueError("not a whole number") from None
    if value < 0:
        raise ValueError(f"must not be negative, not {text}")
    return value


_non_negative_int.coerceDoc = "Must not be negative."  # type: ignore[attr-defined]


def _transports(text: str) -> tuple[str, ...]:
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    unknown = [name for name in names if name not in TRANSPORTS]
    if not names or unknown:
        raise ValueError(f"transports are a comma-separated subset of {','.join(TRANSPORTS)}")
    return names


_transports.coerceDoc = "A comma-separated subset of polling,websocket."  # type: ignore[attr-defined]


def _refuse_to_start(reactor: Any, reason: str) -> None:
    """Stop the relay, which must not run as it is (another fleet's secret), with a non-zero exit status."""
    log.critical("{reason}", reason=reason)

    def leave() -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(os.EX_CONFIG)

    reactor.addSystemEventTrigger("after", "shutdown", leave)
    reactor.stop()


def _base_url(text: str) -> str:
    return base_url(text)


_base_url.coerceDoc = ""  # type: ignore[attr-defined]


def _redis_url(text: str) -> RedisURL:
    return RedisURL.parse(text)


_redis_url.coerceDoc = "A redis:// or rediss:// URL."  # type: ignore[attr-defined]


ENCRYPTION_POLICIES = ("auto", "required", "disabled")
FLEET_SECRET_ENV = "KERNEL_RELAY_FLEET_SECRET"
REDIS_PASSWORD_ENV = "KERNEL_RELAY_REDIS_PASSWORD"


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


def _encryption(text: str) -> str:
    policy = text.strip().lower()
    if policy not in ENCRYPTION_POLICIES:
        raise ValueError(f"--kernel-encryption is one of {', '.join(ENCRYPTION_POLICIES)}")
    if policy != "disabled" and not zmq.has("curve"):
        raise ValueError(
            f"--kernel-encryption {policy} needs CurveZMQ, which this pyzmq's libzmq lacks (built without "
            "libsodium): install a pyzmq wheel, or pass --kernel-encryption disabled"
        )
    return policy


_encryption.coerceDoc = "One of auto, required, disabled."  # type: ignore[attr-defined]


def _kernel_transport(text: str) -> str:
    transport = text.strip().lower()
    if transport not in ("tcp", "ipc"):
        raise ValueError("--kernel-transport is tcp or ipc")
    return transport


_kernel_transport.coerceDoc = "tcp or ipc."  # type: ignore[attr-defined]


def _forwarded_header(text: str) -> str:
    value = text.strip().lower()
    if value not in HEADERS:
        raise ValueError(f"{text!r} is not one of {', '.join(HEADERS)}")
    return value


_forwarded_header.coerceDoc = "x-forwarded-for or forwarded."  # type: ignore[attr-defined]


def _choice(option: str, choices: Sequence[str]) -> Any:
    def coerce(text: str) -> str:
        value = text.strip().lower()
        if value not in choices:
            raise ValueError(f"--{option} is one of {', '.join(choices)}")
        return value

    coerce.coerceDoc = f"One of {', '.join(choices)}."  # type: ignore[attr-defined]
    return coerce


def _kernel_limits(text: str) -> Limits:
    return Limits().with_text(text)


_kernel_limits.coerceDoc = (  # type: ignore[attr-defined]
    "Comma-separated name=value: memory (RLIMIT_DATA per process, default a quarter of RAM), processes "
    "(RLIMIT_NPROC, default 256, at most 1024), open_files (1024), file_size (1G), cpu_time (seconds, none), "
    "tmp_size (its /tmp, 64M), home_size (its working directory, 1G; as root); 'none' lifts a limit. A "
    "kernelspec's metadata.kernel_relay.limits overrides."
)


#: The options by topic, for ``--help`` and ``--generate-config`` (any other goes under "Other").
TOPICS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Listening", ("port", "listen", "base-url", "access-log", "no-demo")),
    (
        "Access",
        ("token", "no-auth", "allow-origin", "allow-host", "trusted-proxy", "forwarded-header"),
    ),
    (
        "Kernels",
        (
            "allow-kernelspec",
            "default-kernel",
            "pool",
            "max-kernels",
            "launch-timeout",
            "shutdown-timeout",
            "kernel-env-allow",
            "kernel-encryption",
            "kernel-transport",
            "heartbeat-interval",
            "heartbeat-timeout",
            "cull-idle-timeout",
            "cull-interval",
            "cull-connected",
        ),
    ),
    ("Kernel sandbox", ("kernel-sandbox", "kernel-network", "kernel-limits")),
    (
        "Clients and limits",
        (
            "transports",
            "ping-interval",
            "ping-timeout",
            "connect-timeout",
            "no-eio3",
            "max-payload",
            "max-message-size",
            "max-clients-per-kernel",
            "max-buffered-bytes",
            "max-total-buffered-bytes",
            "max-connections",
            "max-connections-per-address",
            "max-sessions",
            "max-sessions-per-address",
            "header-timeout",
            "body-timeout",
            "iopub-replay-bytes",
            "iopub-replay-age",
        ),
    ),
    ("Logging", ("log-format", "log-level")),
    (
        "Fleet (several relays sharing kernels through Redis)",
        (
            "redis",
            "redis-password-file",
            "fleet-secret",
            "fleet-secret-file",
            "fleet-lease",
        ),
    ),
)


class Options(SettingsOptions):
    synopsis = "[options] [port]"
    longdesc = (
        "Relay Jupyter kernels to web clients over socket.io and Jupyter Server's kernel API. GET "
        "/spawn/<kernelspec> starts a kernel, GET /shutdown/<id> stops it, and socket.io namespaces "
        "/shell/<id>, /stdin/<id>, /iopub/<id> and /control/<id> carry its messages as 'msg' events; "
        "JupyterLab and other Jupyter clients use /api/kernels. The relay runs code for whoever reaches it: "
        "--port listens on loopback only; use --listen for anything else."
    )

    optParameters: Sequence[Sequence[Any]] = [
        [
            "port",
            "p",
            None,
            f"TCP port to listen on, on loopback only (127.0.0.1 and ::1). [default: {DEFAULT_PORT} "
            "unless --listen is given]",
            usage.portCoerce,
        ],
        ["ping-interval", None, 25.0, "Seconds between Engine.IO heartbeats.", _positive(float)],
        [
            "ping-timeout",
            None,
            20.0,
            "Seconds a client may take to answer a heartbeat before it is dropped.",
            _positive(float),
        ],
        [
            "max-payload",
            None,
            16 * 1024 * 1024,
            "Largest message, in bytes, a client may send in one packet or polling request.",
            _positive(int),
        ],
        ["transports", None, ",".join(TRANSPORTS), "Engine.IO transports to offer.", _transports],
        [
            "connect-timeout",
            None,
            45.0,
            "Seconds a client may stay connected without joining a namespace.",
            _positive(float),
        ],
        [
            "kernel-encryption",
            None,
            "auto",
            "CurveZMQ encryption of the kernels' ZeroMQ channels: auto (for kernelspecs that declare "
            "support, as ipykernel 7 does; others run unencrypted, logged and shown in /api/kernels), "
            "required (a kernelspec without support fails to start), or disabled.",
            _encryption,
        ],
        [
            "kernel-transport",
            None,
            "tcp",
            "ZeroMQ transport of local kernels: tcp (loopback ports), or ipc (UNIX sockets in the relay's "
            "private directory, which only its user can enter).",
            _kernel_transport,
        ],
        [
            "kernel-sandbox",
            None,
            "auto",
            "Sandbox (bubblewrap) around every local kernel: auto (wherever bwrap works; otherwise the kernel "
            "runs unsandboxed, logged and shown in /api/kernels), required (a kernel that cannot be sandboxed "
            "fails to start), or off.",
            _choice("kernel-sandbox", SANDBOX_POLICIES),
        ],
        [
            "kernel-network",
            None,
            "none",
            "Network of a sandboxed kernel: none (its own namespace; channels on UNIX sockets), or host (the "
            "machine's network, loopback services included: see docs/security.rst).",
            _choice("kernel-network", NETWORK_POLICIES),
        ],
        ["kernel-limits", None, "", "Limits of each sandboxed kernel.", _kernel_limits],
        [
            "kernel-env-allow",
            None,
            None,
            "Comma-separated environment variables a client may set for a kernel it starts with POST "
            "/api/kernels, besides KERNEL_* (which are always allowed).",
        ],
        [
            "shutdown-timeout",
            None,
            5.0,
            "Seconds a kernel gets to honour a shutdown_request before it is killed.",
            _positive(float),
        ],
        [
            "launch-timeout",
            None,
            60.0,
            "Seconds a new kernel gets to become ready before the spawn fails.",
            _positive(float),
        ],
        [
            "access-log",
            None,
            None,
            "Write an HTTP access log (combined format) to this file.",
        ],
        [
            "redis",
            None,
            None,
            "Join the fleet of relays that share this Redis: redis://[:password@]host[:port][/db], or "
            "rediss:// for TLS. Every relay of a fleet serves every kernel of it, and a relay's kernels "
            "outlive it: another relay adopts them. The relays must share a secret (--fleet-secret or the "
            "token); what Redis holds of the kernels' keys is sealed with it.",
            _redis_url,
        ],
        [
            "redis-password-file",
            None,
            None,
            f"Read the Redis password from this file (its first line), not from the URL; or set "
            f"${REDIS_PASSWORD_ENV}.",
        ],
        [
            "fleet-secret",
            None,
            None,
            f"The secret the relays of a fleet share (they prove it before they act; Redis alone is not "
            f"enough to join or to read the kernels' keys). Better: --fleet-secret-file or "
            f"${FLEET_SECRET_ENV} (not seen in ps). Default: the token.",
        ],
        [
            "fleet-secret-file",
            None,
            None,
            "Read the fleet's secret from this file (its first line).",
        ],
        [
            "fleet-lease",
            None,
            5.0,
            "Seconds a relay of a fleet stays its kernels' owner without renewing its lease in Redis "
            "(renewed every third of it); when a relay's lease runs out, another adopts its kernels.",
            _positive(float),
        ],
        [
            "token",
            None,
            None,
            "Require this token on every REST route (but /api/health and /api/health/ready), "
            f"socket.io namespace connect and Jupyter kernel WebSocket; default: ${TOKEN_ENV}. Needed "
            "to listen beyond loopback.",
        ],
        [
            "max-kernels",
            None,
            None,
            "Most kernels running at once (spawns over it fail)",
            _positive(int),
        ],
        [
            "max-clients-per-kernel",
            None,
            None,
            "Most clients (socket.io or Jupyter WebSocket) connected to one kernel (further connects are refused)",
            _positive(int),
        ],
        [
            "max-message-size",
            None,
            None,
            "Largest message in bytes, both ways: sets --max-payload for clients, and kernel messages "
            "over it are not forwarded (their clients are told instead: an 'error' event on socket.io, "
            "a stderr stream message on the Jupyter WebSocket)",
            _positive(int),
        ],
        [
            "max-buffered-bytes",
            None,
            64 * 1024 * 1024,
            "Most bytes waiting to go out to one client; a client that does not read is disconnected "
            "('slow client').",
            _positive(int),
        ],
        [
            "max-total-buffered-bytes",
            None,
            1024 * 1024 * 1024,
            "Most bytes waiting to go out to all clients together; over it, the clients with the most "
            "waiting are disconnected ('slow client') until the rest fit.",
            _positive(int),
        ],
        [
            "max-connections",
            None,
            None,
            "Most open connections (HTTP, WebSocket). When full, the oldest connection that presented "
            "no token and joined no kernel is closed for a new one. [default: the open-file limit, "
            "raised to its hard limit at start, less a reserve for kernels]",
            _positive(int),
        ],
        [
            "max-connections-per-address",
            None,
            None,
            "Most open connections from one client address without a valid token (one more that "
            "presents one takes the place of the oldest that did not). [default: a quarter of "
            "--max-connections]",
            _positive(int),
        ],
        [
            "forwarded-header",
            None,
            "x-forwarded-for",
            "The header a --trusted-proxy names its client in: x-forwarded-for or forwarded (RFC 7239). "
            "Only this one is read: a client may send the other through the proxy.",
            _forwarded_header,
        ],
        [
            "max-sessions",
            None,
            None,
            "Most Engine.IO sessions at once. When full, the oldest session that joined no kernel "
            "namespace is closed for a new one. [default: --max-connections]",
            _positive(int),
        ],
        [
            "max-sessions-per-address",
            None,
            None,
            "Most Engine.IO sessions from one client address. [default: --max-connections-per-address]",
            _positive(int),
        ],
        [
            "header-timeout",
            None,
            10.0,
            "Seconds a request's line and headers may take to arrive.",
            _positive(float),
        ],
        [
            "body-timeout",
            None,
            60.0,
            "Seconds a request's body may take to arrive after its headers.",
            _positive(float),
        ],
        [
            "iopub-replay-bytes",
            None,
            8 * 1024 * 1024,
            "Most bytes of recent iopub messages kept per kernel for clients that reconnect "
            "(socket.io's CONNECT auth {since: N}, a Jupyter client's session_id); 0 keeps none.",
            _non_negative_int,
        ],
        [
            "iopub-replay-age",
            None,
            600.0,
            "Seconds an iopub message is kept for clients that reconnect.",
            _positive(float),
        ],
        [
            "heartbeat-interval",
            None,
            5.0,
            "Seconds between two pings of each kernel's heartbeat channel.",
            _positive(float),
        ],
        [
            "heartbeat-timeout",
            None,
            30.0,
            "Seconds without a heartbeat echo before a kernel's clients are told it is unreachable "
            "(frozen, or its ports gone).",
            _positive(float),
        ],
        [
            "cull-idle-timeout",
            None,
            None,
            "Shut down kernels idle (no messages) for this many seconds. [default: never]",
            _positive(float),
        ],
        [
            "cull-interval",
            None,
            60.0,
            "Seconds between two looks for idle kernels.",
            _positive(float),
        ],
        [
            "base-url",
            None,
            "/",
            "Serve everything under this path (behind a proxy at https://host/kernels/: /kernels/): the "
            "REST routes, the demo page, socket.io (path /kernels/socket.io/) and the Jupyter channels.",
            _base_url,
        ],
        [
            "default-kernel",
            None,
            None,
            "The kernelspec POST /api/kernels starts when the request names none (and the default "
            "that /api/kernelspecs gives). [default: python3 if allowed and installed, else the first]",
        ],
        [
            "log-format",
            None,
            "text",
            "The log's format: text (for people), or json (one object a line; fields in "
            "docs/operating.rst). kernel-relay only: twist takes its own --log-format before kernel-relay.",
            _choice("log-format", FORMATS),
        ],
        [
            "log-level",
            None,
            "info",
            "The least level logged: debug, info, warn, error or critical. kernel-relay only (as "
            "--log-format).",
            _choice("log-level", LEVELS),
        ],
    ]

    optFlags: Sequence[Sequence[Any]] = [
        ["no-demo", None, "Do not serve the demo page at / (and its files under /demo/)."],
        [
            "no-eio3",
            None,
            "Refuse Engine.IO protocol 3 clients (socket.io-client 1.x/2.x); serve protocol 4 only.",
        ],
        [
            "no-auth",
            None,
            "Allow listening beyond loopback without a token (something else must guard the relay).",
        ],
        [
            "cull-connected",
            None,
            "Cull idle kernels even when clients are connected to them.",
        ],
    ]

    topics = TOPICS
    sizes = frozenset(
        {
            "max-payload",
            "max-message-size",
            "max-buffered-bytes",
            "max-total-buffered-bytes",
            "iopub-replay-bytes",
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
        """Keep N started, ready kernels of kernelspec NAME for instant /spawn (NAME=N, repeatable)."""
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
        are not listed, and starting one is refused with 403 (/spawn, POST /api/kernels)."""
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
            self["transports"] = _transports(self["transports"])
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


def ipv6_loopback_available() -> bool:
    """Can this machine listen on ``::1``?"""
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


#: The largest warm pool per kernelspec ``--pool`` accepts.
MAX_POOL = 32


def connection_bounds(options: Options) -> ConnectionBounds:
    """
    ``--max-connections`` and ``--max-connections-per-address``, each defaulting to what the open-file
    limit allows once its soft value is raised to the hard one.
    """
    nofile = raise_open_file_limit()
    derived = ConnectionBounds.from_file_limit(nofile)
    total = options["max-connections"] or derived.max_connections
    per_address = options["max-connections-per-address"] or min(derived.max_per_address, total)
    log.info(
        "Open-file limit {nofile}: at most {total} connections, {per_address} per address",
        nofile=nofile,
        total=total,
        per_address=per_address,
    )
    return ConnectionBounds(total, per_address, derived.max_probation)


def kernel_sandbox(options: Options) -> SandboxPolicy:
    """``--kernel-sandbox``, ``--kernel-network`` and ``--kernel-limits``; says at start if it cannot work here."""
    limits = options["kernel-limits"]
    policy = SandboxPolicy(
        options["kernel-sandbox"],
        options["kernel-network"],
        limits if isinstance(limits, Limits) else Limits(),
    )
    if policy.mode != "off":
        reason = sandbox_unavailable()
        if reason is None:
            log.info(
                "Local kernels run sandboxed (bubblewrap; network {network}; limits {limits})",
                network=policy.network,
                limits=policy.limits.describe(),
            )
        elif policy.mode == "required":
            log.error(
                "No local kernel can start: {reason}, and --kernel-sandbox is required",
                reason=reason,
            )
        else:
            log.warn(
                "LOCAL KERNELS RUN UNSANDBOXED: {reason}. Each can read the relay's and other kernels' "
                "files and reach the network (docs/security.rst)",
                reason=reason,
            )
    return policy


def _freeze_what_lives() -> None:
    gc.collect()
    gc.freeze()


def makeService(options: Options, reactor: Any = None) -> IService:
    """
    The relay's service tree for ``options``, on ``reactor`` (the global one by default; a test passes a
    ``MemoryReactorClock``).
    """
    if reactor is None:
        from twisted.internet import reactor

    origins = OriginPolicy.from_options(options["allow-origin"])
    bounds = connection_bounds(options)
    kernels = KernelRegistry(
        reactor,
        shutdown_timeout=options["shutdown-timeout"],
        launch_timeout=options["launch-timeout"],
        encryption=options["kernel-encryption"],
        transport=options["kernel-transport"],
        sandbox=kernel_sandbox(options),
        # A fleet's kernels outlive their relay, for another relay to adopt them.
        independent=options["redis"] is not None,
    )
    # One bound on what waits for every client, whichever front it came by.
    budget = BufferBudget(options["max-total-buffered-bytes"])
    give_back = MemoryGiveBack(reactor)
    budget.on_released = give_back.released
    socketio = SocketIOServer(
        reactor,
        engineio_options=EngineIOOptions(
            ping_interval=options["ping-interval"],
            ping_timeout=options["ping-timeout"],
            max_payload=options["max-payload"],
            transports=options["transports"],
            origins=origins,
            allow_eio3=not options["no-eio3"],
            max_buffered_bytes=options["max-buffered-bytes"],
            max_total_buffered_bytes=options["max-total-buffered-bytes"],
            max_sessions=options["max-sessions"] or bounds.max_connections,
            max_sessions_per_address=options["max-sessions-per-address"] or bounds.max_per_address,
        ),
        connect_timeout=options["connect-timeout"],
        # With a token, / would be a namespace anyone may join without one: the relay has no use for it.
        main_namespace=not options["token"],
        buffer_budget=budget,
    )
    auth = TokenAuth(options["token"])
    metrics = RelayMetrics()
    fleet = None
    if options["redis"] is not None:
        fleet = Fleet(
            FleetStore(options["redis"], reactor, FleetKeys(options["fleet-secret"])),
            kernels,
            auth,
            reactor,
            lease=options["fleet-lease"],
            launch_timeout=options["launch-timeout"],
            shutdown_timeout=options["shutdown-timeout"],
            keep=stream_length(options["iopub-replay-bytes"]),
            keep_bytes=options["iopub-replay-bytes"],
            keep_seconds=options["iopub-replay-age"],
        )
        metrics.watch_fleet(fleet.fleet_view)
        fleet.env_allowed = EnvPolicy.from_option(options["kernel-env-allow"]).allowed
        fleet.on_refused = lambda reason: _refuse_to_start(reactor, reason)
    socketio.on_event = metrics.error
    socketio.engine.on_event = metrics.error
    limiter = ConnectionLimiter(
        bounds,
        on_event=metrics.error,
        clock=reactor,
        proxies=TrustedProxies.from_options(options["trusted-proxy"], options["forwarded-header"]),
    )
    # A connection that carries a session which joined a kernel is never evicted for a newcomer.
    socketio.engine.on_vouched_connection = limiter.trust
    metrics.watch_load(
        lambda: limiter.open_connections,
        lambda: len(socketio.engine.sessions),
        budget.measure,
    )
    relay = RelayCore(
        kernels,
        reactor,
        auth=auth,
        limits=RelayLimits(
            max_clients_per_kernel=options["max-clients-per-kernel"],
            max_message_size=options["max-message-size"],
        ),
        metrics=metrics,
        replay=ReplayOptions(
            max_bytes=options["iopub-replay-bytes"], max_age=options["iopub-replay-age"]
        ),
        numbering=fleet.numbering if fleet is not None else None,
    )
    front = SocketIOFront(socketio, relay)
    jupyter_front = JupyterFront(
        relay,
        reactor,
        origins=origins,
        max_payload=options["max-payload"],
        max_buffered_bytes=options["max-buffered-bytes"],
        budget=budget,
    )

    kernels.add_observer(jupyter_front)  # its sessions' marks go with their kernel
    if fleet is not None:
        jupyter_front.share_marks(fleet)

    def handing_off() -> bool:
        return fleet is not None and fleet.hand_off()

    def stopping() -> None:
        # Each kernel's iopub clients see it dead before every client is disconnected (unless the kernels
        # live on, for the fleet's other relays to adopt).
        if not handing_off():
            relay.stopping()
        front.close()
        jupyter_front.close()
        give_back.stop()

    spawner = Spawner(
        kernels,
        metrics,
        options["max-kernels"],
        fleet=fleet,
        allowed=frozenset(options["allow-kernelspec"]) or None,
    )
    api = RelayAPI(
        kernels,
        metrics=metrics,
        auth=auth,
        spawner=spawner,
        fleet=fleet.fleet_view if fleet is not None else None,
        ready=(lambda: fleet.ready) if fleet is not None else (lambda: True),
    )
    jupyter_api = JupyterAPI(
        kernels,
        spawner,
        relay.client_count,
        env_policy=EnvPolicy.from_option(options["kernel-env-allow"]),
        read_resource=threaded_resource_reader(reactor),
        default_spec=options["default-kernel"],
        base_url=options["base-url"],
    )
    sessions_api = SessionsAPI(kernels, jupyter_api)
    routes = KleinRoutes(
        [
            (jupyter_api.app, jupyter_api.resource()),
            (sessions_api.app, sessions_api.resource()),
            (api.app, api.resource()),
        ]
    )
    root = RelayRoot(
        OriginGuard(
            AuthGuard(routes, auth, on_refused=lambda: metrics.error("auth")),
            origins,
        ),
        socketio.resource(),
        demo=None if options["no-demo"] else demo_resources(),
        hosts=HostPolicy.from_options(options["allow-host"], token_required=auth.enabled),
        channels=jupyter_front.resource(),
    )
    site = RelaySite(
        SiteEntry(root, base=options["base-url"], clock=reactor.seconds, observe=metrics.request),
        logPath=options["access-log"],
        reactor=reactor,
        limiter=limiter,
    )
    site.header_timeout = options["header-timeout"]
    site.body_timeout = options["body-timeout"]
    # The largest body any route takes is an Engine.IO polling payload.
    site.max_body = max(options["max-payload"], DEFAULT_MAX_BODY)

    top = MultiService()
    if fleet is not None:
        # Before the kernels: it stops after them, so that the kernels' ends still reach Redis.
        fleet.setServiceParent(top)
    KernelsService(
        kernels,
        options["pool"],
        stopping=stopping,
        keep_running=handing_off,
        prepare=fleet.prepare_stop if fleet is not None else lambda: succeed(None),
        finish=fleet.leave if fleet is not None else lambda: succeed(None),
    ).setServiceParent(top)
    HeartbeatMonitor(
        kernels,
        reactor,
        relay,
        interval=options["heartbeat-interval"],
        timeout=options["heartbeat-timeout"],
    ).setServiceParent(top)
    if options["cull-idle-timeout"] is not None:
        KernelCuller(
            reactor,
            kernels,
            relay.client_count,
            idle_timeout=options["cull-idle-timeout"],
            cull_connected=options["cull-connected"],
            interval=options["cull-interval"],
            metrics=metrics,
        ).setServiceParent(top)
    endpoints = options.endpoints(ipv6_loopback_available())
    for description in endpoints:
        Listener(description, serverFromString(reactor, description), site).setServiceParent(top)
    # Everything alive once the reactor runs (modules, the application) lives as long as the process:
    # keep it out of the garbage collector's full collections, which would scan it again and again. Only
    # that: the garbage of the start is collected first (a frozen cycle is never freed), and connections,
    # which come later, are freed by reference counting as they close (they leave no cycles).
    reactor.callWhenRunning(_freeze_what_lives)
    log.info(
        "kernel-relay {version} listening on {endpoints} ({auth}): open {urls}",
        version=__version__,
        endpoints=", ".join(endpoints),
        auth="token required" if auth.enabled else "no token: loopback only",
        urls=", ".join(endpoint_urls(endpoints, options["base-url"])),
    )
    return top


def endpoint_urls(descriptions: Sequence[str], base: str = "/") -> list[str]:
    """The URLs a user opens for these endpoints (one per address; a UNIX socket as ``unix:PATH``)."""
    urls: list[str] = []
    for description in descriptions:
        kind, _, rest = description.partition(":")
        fields = dict(part.split("=", 1) for part in re.split(r"(?<!\\):", rest)[1:] if "=" in part)
        if kind == "unix":
            url = f"unix:{rest.split(':', 1)[0]}"
        elif kind in ("tcp", "tcp6", "ssl"):
            host = fields.get("interface", "").replace("\\", "") or socket.gethostname()
            if host in ("0.0.0.0", "::"):
                host = socket.gethostname()
            if ":" in host:
                host = f"[{host}]"
            scheme = "https" if kind == "ssl" else "http"
            url = f"{scheme}://{host}:{rest.split(':', 1)[0]}{base}"
        else:
            url = description
        if url not in urls:
            urls.append(url)
    return urls

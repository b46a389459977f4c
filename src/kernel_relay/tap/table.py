"""
The relay's options: each one's name, default, help and coercion, and the topics ``--help``, the generated
reference (``docs/options.rst``) and ``--generate-config`` group them by. Every help text speaks for both
fronts (socket.io and the Jupyter kernel WebSocket) unless it names one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from twisted.python import usage

from ..auth import TOKEN_ENV
from ..kernels import NETWORK_POLICIES, SANDBOX_POLICIES
from ..logs import FORMATS, LEVELS
from . import requests
from .values import (
    DEFAULT_PORT,
    FLEET_SECRET_ENV,
    REDIS_PASSWORD_ENV,
    TRANSPORTS,
    base_path,
    choice,
    encryption,
    forwarded_header,
    kernel_limits,
    kernel_transport,
    non_negative_int,
    positive,
    redis_url,
    transport_names,
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
    requests.TOPIC,
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


PARAMETERS: Sequence[Sequence[Any]] = [
    [
        "port",
        "p",
        None,
        f"TCP port to listen on, on loopback only (127.0.0.1 and ::1). [default: {DEFAULT_PORT} "
        "unless --listen is given]",
        usage.portCoerce,
    ],
    [
        "ping-interval",
        None,
        25.0,
        "Seconds between Engine.IO heartbeats (socket.io clients).",
        positive(float),
    ],
    [
        "ping-timeout",
        None,
        20.0,
        "Seconds a socket.io client may take to answer a heartbeat before it is dropped.",
        positive(float),
    ],
    [
        "max-payload",
        None,
        16 * 1024 * 1024,
        "Largest message, in bytes, a client may send: a socket.io packet or polling request, or a "
        "Jupyter WebSocket message.",
        positive(int),
    ],
    [
        "transports",
        None,
        ",".join(TRANSPORTS),
        "Engine.IO transports to offer socket.io clients (Jupyter clients use a WebSocket).",
        transport_names,
    ],
    [
        "connect-timeout",
        None,
        45.0,
        "Seconds a socket.io client may stay connected without joining a kernel's namespace.",
        positive(float),
    ],
    [
        "kernel-encryption",
        None,
        "auto",
        "CurveZMQ encryption of the kernels' ZeroMQ channels: auto (for kernelspecs that declare "
        "support, as ipykernel 7 does; others run unencrypted, logged and shown in /api/kernels), "
        "required (a kernelspec without support fails to start), or disabled.",
        encryption,
    ],
    [
        "kernel-transport",
        None,
        "tcp",
        "ZeroMQ transport of local kernels: tcp (loopback ports), or ipc (UNIX sockets in the relay's "
        "private directory, which only its user can enter).",
        kernel_transport,
    ],
    [
        "kernel-sandbox",
        None,
        "auto",
        "Sandbox (bubblewrap) around every local kernel: auto (wherever bwrap works; otherwise the kernel "
        "runs unsandboxed, logged and shown in /api/kernels), required (a kernel that cannot be sandboxed "
        "fails to start), or off.",
        choice("kernel-sandbox", SANDBOX_POLICIES),
    ],
    [
        "kernel-network",
        None,
        "none",
        "Network of a sandboxed kernel: none (its own namespace; channels on UNIX sockets), or host (the "
        "machine's network, loopback services included: see docs/security.rst).",
        choice("kernel-network", NETWORK_POLICIES),
    ],
    ["kernel-limits", None, "", "Limits of each sandboxed kernel.", kernel_limits],
    [
        "kernel-env-allow",
        None,
        None,
        "Comma-separated environment variables a client may set for a kernel it starts with POST "
        "/api/kernels (its env), besides KERNEL_* (which are always allowed).",
    ],
    [
        "shutdown-timeout",
        None,
        5.0,
        "Seconds a kernel gets to honour a shutdown_request before it is killed.",
        positive(float),
    ],
    [
        "launch-timeout",
        None,
        60.0,
        "Seconds a new kernel gets to become ready before its start fails.",
        positive(float),
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
        redis_url,
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
        positive(float),
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
        "Most kernels running or starting at once, over every relay of a fleet; a start over it is "
        "refused (/spawn, POST /api/kernels, POST /api/sessions).",
        positive(int),
    ],
    [
        "max-clients-per-kernel",
        None,
        None,
        "Most clients (socket.io or Jupyter WebSocket) connected to one kernel (further connects are refused)",
        positive(int),
    ],
    [
        "max-message-size",
        None,
        None,
        "Largest message in bytes, both ways: sets --max-payload for clients, and kernel messages "
        "over it are not forwarded (their clients are told instead: an 'error' event on socket.io, "
        "a stderr stream message on the Jupyter WebSocket)",
        positive(int),
    ],
    [
        "max-buffered-bytes",
        None,
        64 * 1024 * 1024,
        "Most bytes waiting to go out to one client; a client that does not read is disconnected "
        "('slow client').",
        positive(int),
    ],
    [
        "max-total-buffered-bytes",
        None,
        1024 * 1024 * 1024,
        "Most bytes waiting to go out to all clients together; over it, the clients with the most "
        "waiting are disconnected ('slow client') until the rest fit.",
        positive(int),
    ],
    [
        "max-connections",
        None,
        None,
        "Most open connections (HTTP, WebSocket). When full, the oldest connection that presented "
        "no token and joined no kernel is closed for a new one. [default: the open-file limit, "
        "raised to its hard limit at start, less a reserve for kernels]",
        positive(int),
    ],
    [
        "max-connections-per-address",
        None,
        None,
        "Most open connections from one client address without a valid token (one more that "
        "presents one takes the place of the oldest that did not). [default: a quarter of "
        "--max-connections]",
        positive(int),
    ],
    [
        "forwarded-header",
        None,
        "x-forwarded-for",
        "The header a --trusted-proxy names its client in: x-forwarded-for or forwarded (RFC 7239). "
        "Only this one is read: a client may send the other through the proxy.",
        forwarded_header,
    ],
    [
        "max-sessions",
        None,
        None,
        "Most Engine.IO sessions (socket.io clients) at once. When full, the oldest session that "
        "joined no kernel namespace is closed for a new one. [default: --max-connections]",
        positive(int),
    ],
    [
        "max-sessions-per-address",
        None,
        None,
        "Most Engine.IO sessions (socket.io clients) from one client address. [default: "
        "--max-connections-per-address]",
        positive(int),
    ],
    [
        "header-timeout",
        None,
        10.0,
        "Seconds a request's line and headers may take to arrive.",
        positive(float),
    ],
    [
        "body-timeout",
        None,
        60.0,
        "Seconds a request's body may take to arrive after its headers.",
        positive(float),
    ],
    [
        "iopub-replay-bytes",
        None,
        8 * 1024 * 1024,
        "Most bytes of recent iopub messages kept per kernel for clients that reconnect "
        "(socket.io's CONNECT auth {since: N}, a Jupyter client's session_id); 0 keeps none.",
        non_negative_int,
    ],
    [
        "iopub-replay-age",
        None,
        600.0,
        "Seconds an iopub message is kept for clients that reconnect.",
        positive(float),
    ],
    [
        "heartbeat-interval",
        None,
        5.0,
        "Seconds between two pings of each kernel's heartbeat channel.",
        positive(float),
    ],
    [
        "heartbeat-timeout",
        None,
        30.0,
        "Seconds without a heartbeat echo before a kernel's clients are told it is unreachable "
        "(frozen, or its ports gone).",
        positive(float),
    ],
    [
        "cull-idle-timeout",
        None,
        None,
        "Shut down kernels idle (no messages) for this many seconds. [default: never]",
        positive(float),
    ],
    [
        "cull-interval",
        None,
        60.0,
        "Seconds between two looks for idle kernels.",
        positive(float),
    ],
    [
        "base-url",
        None,
        "/",
        "Serve everything under this path (behind a proxy at https://host/kernels/: /kernels/): the "
        "REST routes, the demo page, socket.io (path /kernels/socket.io/) and the Jupyter channels.",
        base_path,
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
        choice("log-format", FORMATS),
    ],
    [
        "log-level",
        None,
        "info",
        "The least level logged: debug, info, warn, error or critical. kernel-relay only (as "
        "--log-format).",
        choice("log-level", LEVELS),
    ],
    *requests.PARAMETERS,
]

FLAGS: Sequence[Sequence[Any]] = [
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

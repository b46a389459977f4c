"""
What each of the relay's options accepts: the coercions of ``--help``'s values (each names what it takes in
its ``coerceDoc``) and the choices they are checked against.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import zmq

from ..fleet import RedisURL
from ..http.entry import base_url
from ..http.forwarded import HEADERS
from ..kernels import Limits

DEFAULT_PORT = 3000
TRANSPORTS = ("polling", "websocket")


def positive(kind: type[float] | type[int]) -> Any:
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


def non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ValueError("not a whole number") from None
    if value < 0:
        raise ValueError(f"must not be negative, not {text}")
    return value


non_negative_int.coerceDoc = "Must not be negative."  # type: ignore[attr-defined]


def transport_names(text: str) -> tuple[str, ...]:
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    unknown = [name for name in names if name not in TRANSPORTS]
    if not names or unknown:
        raise ValueError(f"transports are a comma-separated subset of {','.join(TRANSPORTS)}")
    return names


transport_names.coerceDoc = "A comma-separated subset of polling,websocket."  # type: ignore[attr-defined]


def base_path(text: str) -> str:
    return base_url(text)


base_path.coerceDoc = ""  # type: ignore[attr-defined]


def redis_url(text: str) -> RedisURL:
    return RedisURL.parse(text)


redis_url.coerceDoc = "A redis:// or rediss:// URL."  # type: ignore[attr-defined]


ENCRYPTION_POLICIES = ("auto", "required", "disabled")
FLEET_SECRET_ENV = "KERNEL_RELAY_FLEET_SECRET"
REDIS_PASSWORD_ENV = "KERNEL_RELAY_REDIS_PASSWORD"


def encryption(text: str) -> str:
    policy = text.strip().lower()
    if policy not in ENCRYPTION_POLICIES:
        raise ValueError(f"--kernel-encryption is one of {', '.join(ENCRYPTION_POLICIES)}")
    if policy != "disabled" and not zmq.has("curve"):
        raise ValueError(
            f"--kernel-encryption {policy} needs CurveZMQ, which this pyzmq's libzmq lacks (built without "
            "libsodium): install a pyzmq wheel, or pass --kernel-encryption disabled"
        )
    return policy


encryption.coerceDoc = "One of auto, required, disabled."  # type: ignore[attr-defined]


def kernel_transport(text: str) -> str:
    transport = text.strip().lower()
    if transport not in ("tcp", "ipc"):
        raise ValueError("--kernel-transport is tcp or ipc")
    return transport


kernel_transport.coerceDoc = "tcp or ipc."  # type: ignore[attr-defined]


def forwarded_header(text: str) -> str:
    value = text.strip().lower()
    if value not in HEADERS:
        raise ValueError(f"{text!r} is not one of {', '.join(HEADERS)}")
    return value


forwarded_header.coerceDoc = "x-forwarded-for or forwarded."  # type: ignore[attr-defined]


def choice(option: str, choices: Sequence[str]) -> Any:
    def coerce(text: str) -> str:
        value = text.strip().lower()
        if value not in choices:
            raise ValueError(f"--{option} is one of {', '.join(choices)}")
        return value

    coerce.coerceDoc = f"One of {', '.join(choices)}."  # type: ignore[attr-defined]
    return coerce


def kernel_limits(text: str) -> Limits:
    return Limits().with_text(text)


kernel_limits.coerceDoc = (  # type: ignore[attr-defined]
    "Comma-separated name=value: memory (RLIMIT_DATA per process, default a quarter of RAM), processes "
    "(RLIMIT_NPROC, default 256, at most 1024), open_files (1024), file_size (1G), cpu_time (seconds, none), "
    "tmp_size (its /tmp, 64M), home_size (its working directory, 1G; as root); 'none' lifts a limit. A "
    "kernelspec's metadata.kernel_relay.limits overrides."
)

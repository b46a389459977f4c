# -*- test-case-name: tests.fleet.test_secrets -*-
"""
The fleet's secret, and the keys derived from it: what makes Redis alone not enough to be a relay of the fleet.

Whoever reaches Redis can read and write every key; only the relays hold the secret (the admin token or
``--fleet-secret``). From it come, each for one use only (HKDF, one ``info`` per use, after a slow scrypt so
that the check value below does not let a Redis reader test guesses of a weak secret cheaply):

- the *check value*, kept in Redis at the first join: a relay whose secret gives another refuses to join;
- the *sealing key* (AES-256-GCM): kernel records, leases, token entries, mailbox messages, the kernels'
  output streams, sessions' marks and reservations are sealed with it, so that what Redis holds of kernels'
  keys, ``env`` and token digests is unreadable, and anything
  written without the secret (or moved from another key: the key's name is in the authenticated data) fails
  to open and is ignored;
- the *token key*: the name under which a token's digest is kept is a keyed hash of it;
- the *tag key*: a value a Lua script compares (a kernel's owner) is kept with a keyed hash of it, the same
  each time, so the script compares strings while a value written without the secret is known forged.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

#: What a sealed value starts with: the format's version (``SEALED_BYTES``: the same, unencoded, for values
#: that Redis keeps as bytes: the stream's messages, which base64 would make a third larger).
SEALED: Final = "s1."
SEALED_BYTES: Final = b"s1:"
_NONCE_BYTES: Final = 12
#: How much longer :meth:`FleetKeys.seal_bytes` makes a value: its prefix, nonce and tag.
SEALED_OVERHEAD: Final = len(SEALED_BYTES) + _NONCE_BYTES + 16
#: scrypt's cost: about 30 ms once per relay start; each guess of a secret costs an attacker as much.
_SCRYPT_N: Final = 2**14
_SALT: Final = b"kernel-relay fleet secret v1"


class Forged(ValueError):
    """A value in Redis that was not written by a relay holding the fleet's secret (or was moved)."""


class FleetKeys:
    """The keys derived from the fleet's secret (see the module docstring)."""

    def __init__(self, secret: str | bytes) -> None:
        raw = secret.encode("utf-8") if isinstance(secret, str) else bytes(secret)
        if not raw.strip():
            raise ValueError("the fleet's secret must not be empty")
        master = Scrypt(salt=_SALT, length=32, n=_SCRYPT_N, r=8, p=1).derive(raw)
        self._aead = AESGCM(self._derive(master, b"seal"))
        self._token_key = self._derive(master, b"token")
        self._tag_key = self._derive(master, b"tag")
        self.check = hmac.new(
            self._derive(master, b"check"), b"kernel-relay fleet member", hashlib.sha256
        ).hexdigest()
        """What Redis keeps to tell relays of this fleet from relays with another secret."""

    @staticmethod
    def _derive(master: bytes, use: bytes) -> bytes:
        return HKDF(
            algorithm=hashes.SHA256(), length=32, salt=None, info=b"kernel-relay fleet " + use
        ).derive(master)

    def seal(self, where: str, plain: bytes) -> str:
        """``plain`` encrypted and authenticated for the place ``where`` (a Redis key and field) only."""
        return SEALED + base64.urlsafe_b64encode(self._encrypt(where, plain)).decode("ascii")

    def open(self, where: str, value: str) -> bytes:
        """What :meth:`seal` sealed for ``where``; Forged when it was not, or was sealed for elsewhere."""
        if not value.startswith(SEALED):
            raise Forged(f"{where!r} holds a value that is not sealed")
        try:
            raw = base64.urlsafe_b64decode(value[len(SEALED) :].encode("ascii"))
        except ValueError:
            raw = b""
        return self._decrypt(where, raw)

    def seal_bytes(self, where: str, plain: bytes) -> bytes:
        """As :meth:`seal`, unencoded (for Redis values that may be any bytes)."""
        return SEALED_BYTES + self._encrypt(where, plain)

    def open_bytes(self, where: str, value: bytes) -> bytes:
        """What :meth:`seal_bytes` sealed for ``where``; Forged when it was not."""
        if not value.startswith(SEALED_BYTES):
            raise Forged(f"{where!r} holds a value that is not sealed")
        return self._decrypt(where, value[len(SEALED_BYTES) :])

    def _encrypt(self, where: str, plain: bytes) -> bytes:
        """A fresh nonce, then ``plain`` encrypted and authenticated for ``where``."""
        nonce = os.urandom(_NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, plain, where.encode("utf-8"))

    def _decrypt(self, where: str, raw: bytes) -> bytes:
        """What :meth:`_encrypt` made ``raw`` of for ``where``; Forged when it did not."""
        if len(raw) < _NONCE_BYTES + 16:
            raise Forged(f"{where!r} holds a value not sealed with the fleet's secret")
        try:
            return self._aead.decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], where.encode("utf-8"))
        except InvalidTag:
            raise Forged(f"{where!r} holds a value not sealed with the fleet's secret") from None

    def tag(self, where: str, value: str) -> str:
        """
        ``value`` with a keyed hash of it for ``where``: the same each time, so that a Lua script can compare
        it as a string (a kernel's owner); only a relay holding the secret can make it.
        """
        mac = hmac.new(self._tag_key, f"{where}\x00{value}".encode(), hashlib.sha256).hexdigest()
        return f"{value} {mac[:32]}"

    def untag(self, where: str, tagged: str) -> str:
        """The value :meth:`tag` made ``tagged`` of for ``where``; Forged when it did not."""
        value, _, _ = tagged.rpartition(" ")
        if not hmac.compare_digest(
            self.tag(where, value).encode(), tagged.encode("utf-8", "replace")
        ):
            raise Forged(f"{where!r} holds a value not tagged with the fleet's secret")
        return value

    def token_name(self, kernel_id: str, digest: bytes) -> str:
        """Where a token's digest is kept: a keyed hash, so that a Redis reader cannot test guesses."""
        return hmac.new(
            self._token_key, kernel_id.encode("utf-8") + b"\x00" + digest, hashlib.sha256
        ).hexdigest()

    def matches(self, check: str) -> bool:
        """Whether a check value found in Redis is this secret's."""
        return hmac.compare_digest(self.check.encode("ascii"), check.encode("utf-8", "replace"))


class ForgeryLog:
    """Warns of values that failed to open, at most once per ``every`` seconds (with how many were quiet)."""

    def __init__(self, log: Logger, clock: IReactorTime, every: float = 10.0) -> None:
        self._log = log
        self._clock = clock
        self._every = every
        self._last: float | None = None
        self._quiet = 0
        self.count = 0

    def __call__(self, error: Forged) -> None:
        self.count += 1
        now = self._clock.seconds()
        if self._last is not None and now - self._last < self._every:
            self._quiet += 1
            return
        self._log.warn(
            "Ignored what Redis holds without the fleet's secret ({quiet} more since the last "
            "warning): {error}. Something that is not a relay of this fleet writes to its Redis.",
            quiet=self._quiet,
            error=str(error),
        )
        self._last, self._quiet = now, 0


__all__ = ["SEALED", "SEALED_BYTES", "SEALED_OVERHEAD", "FleetKeys", "Forged", "ForgeryLog"]

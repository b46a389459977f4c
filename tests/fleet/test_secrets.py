"""The keys derived from the fleet's secret, in process: sealed values open only where they were sealed."""

from __future__ import annotations

import pytest
from twisted.internet.task import Clock
from twisted.logger import Logger, LogLevel

from kernel_relay.fleet.secrets import SEALED, FleetKeys, Forged, ForgeryLog

KEYS = FleetKeys("the fleet's secret")


def test_a_sealed_value_opens_where_it_was_sealed_and_hides_what_it_holds() -> None:
    """What is sealed for a place opens there, and its text is not in what Redis keeps."""
    sealed = KEYS.seal("kernel-relay:kernel:k1\x00about", b"hmac key 0123456789")
    assert sealed.startswith(SEALED)
    assert "0123456789" not in sealed
    assert KEYS.open("kernel-relay:kernel:k1\x00about", sealed) == b"hmac key 0123456789"
    # Each seal is new (a random nonce): equal values are not seen to be equal.
    assert KEYS.seal("p", b"x") != KEYS.seal("p", b"x")


@pytest.mark.parametrize(
    "value",
    [
        "plain text",
        SEALED + "!!!not base64",
        SEALED,
        SEALED + "AAAA",
    ],
)
def test_what_was_not_sealed_does_not_open(value: str) -> None:
    """A value written without the secret, or malformed, is Forged, never a crash."""
    with pytest.raises(Forged):
        KEYS.open("kernel-relay:kernel:k1\x00about", value)


def test_a_moved_tampered_or_foreign_value_does_not_open() -> None:
    """A value moved to another key, changed by one bit, or sealed with another secret is Forged."""
    sealed = KEYS.seal("kernel-relay:kernel:k1\x00about", b"{}")
    with pytest.raises(Forged):
        KEYS.open("kernel-relay:kernel:k2\x00about", sealed)
    with pytest.raises(Forged):
        KEYS.open("kernel-relay:kernel:k1\x00env", sealed)
    body = bytearray(sealed.encode())
    body[-3] ^= 1
    with pytest.raises(Forged):
        KEYS.open("kernel-relay:kernel:k1\x00about", body.decode())
    other = FleetKeys("another secret")
    with pytest.raises(Forged):
        other.open("kernel-relay:kernel:k1\x00about", sealed)


def test_the_check_value_tells_secrets_apart_and_the_token_names_are_keyed() -> None:
    """Relays with the same secret agree on the check value and token names; another secret does not."""
    same, other = FleetKeys("the fleet's secret"), FleetKeys("another secret")
    assert same.check == KEYS.check and KEYS.matches(same.check)
    assert not KEYS.matches(other.check) and not KEYS.matches("")
    digest = bytes(32)
    assert same.token_name("k1", digest) == KEYS.token_name("k1", digest)
    assert other.token_name("k1", digest) != KEYS.token_name("k1", digest)
    assert KEYS.token_name("k2", digest) != KEYS.token_name("k1", digest)
    assert digest.hex() not in KEYS.token_name("k1", digest)


def test_an_empty_secret_is_refused() -> None:
    """A fleet's secret of nothing but blanks protects nothing."""
    with pytest.raises(ValueError):
        FleetKeys("  ")


def test_forgeries_are_logged_at_most_once_per_period() -> None:
    """A flood of forged values makes one warning per period, which counts the others."""
    events: list[dict[str, object]] = []
    clock = Clock()
    log = ForgeryLog(Logger(observer=events.append), clock, every=10)
    for _ in range(50):
        log(Forged("x"))
    clock.advance(11)
    log(Forged("y"))
    warnings = [e for e in events if e["log_level"] == LogLevel.warn]
    assert len(warnings) == 2 and warnings[1]["quiet"] == 49
    assert log.count == 51


@pytest.mark.parametrize("value", [b"", b"plain output", b"s1:short", b"s1:" + b"\x00" * 40])
def test_bytes_sealed_open_only_where_they_were_sealed(value: bytes) -> None:
    """Bytes sealed unencoded open where they were sealed; anything else (unsealed, short, moved) is Forged."""
    sealed = KEYS.seal_bytes("kernel-relay:journal:k1\x00m1\x001.000", b"\x00output\xff")
    assert b"output" not in sealed
    assert KEYS.open_bytes("kernel-relay:journal:k1\x00m1\x001.000", sealed) == b"\x00output\xff"
    for where, bad in (("kernel-relay:journal:k1\x00m1\x001.000", value), ("elsewhere", sealed)):
        with pytest.raises(Forged):
            KEYS.open_bytes(where, bad)


def test_a_tag_is_the_same_each_time_and_only_the_secret_makes_it() -> None:
    """A tagged value is stable (a script compares it), untags where it was made only, and not without the secret."""
    tagged = KEYS.tag("kernel-relay:kernel:k1\x00owner", "relay A")
    assert tagged == KEYS.tag("kernel-relay:kernel:k1\x00owner", "relay A")
    assert KEYS.untag("kernel-relay:kernel:k1\x00owner", tagged) == "relay A"
    for where, value in (
        ("kernel-relay:kernel:k2\x00owner", tagged),
        ("kernel-relay:kernel:k1\x00owner", "relay A"),
        (
            "kernel-relay:kernel:k1\x00owner",
            FleetKeys("another").tag("kernel-relay:kernel:k1\x00owner", "relay A"),
        ),
    ):
        with pytest.raises(Forged):
            KEYS.untag(where, value)

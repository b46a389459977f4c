"""Which client a forwarded request came from: X-Forwarded-For and Forwarded, read from the right."""

from __future__ import annotations

import pytest

from kernel_relay.http.forwarded import (
    FORWARDED,
    TrustedProxies,
    forwarded_entries,
    parse_address,
    parse_network,
)

PROXY = "10.0.0.5"
proxies = TrustedProxies.from_options([PROXY, "192.168.0.0/16"])


def test_an_untrusted_peer_is_the_client_whatever_its_header_says() -> None:
    """A peer that is no trusted proxy is the client; its X-Forwarded-For is ignored."""
    assert proxies.client("203.0.113.9", ["198.51.100.1"]) == "203.0.113.9"
    assert TrustedProxies().client(PROXY, ["198.51.100.1"]) == PROXY


def test_the_rightmost_untrusted_entry_is_the_client() -> None:
    """Entries a client wrote itself (on the left) are ignored: the proxy's appended entry wins."""
    assert proxies.client(PROXY, ["198.51.100.1"]) == "198.51.100.1"
    assert proxies.client(PROXY, ["6.6.6.6, 198.51.100.1"]) == "198.51.100.1"
    # Through two trusted proxies: the inner one's entry is skipped.
    assert proxies.client(PROXY, ["6.6.6.6, 198.51.100.1, 192.168.1.2"]) == "198.51.100.1"
    # Several header lines are one list, in order.
    assert proxies.client(PROXY, ["6.6.6.6", "198.51.100.1"]) == "198.51.100.1"


def test_a_chain_of_only_trusted_proxies_or_none_ends_at_the_last_trusted_hop() -> None:
    """No header, an empty one or only trusted hops: the leftmost trusted hop is the client."""
    assert proxies.client(PROXY, []) == PROXY
    assert proxies.client(PROXY, [""]) == PROXY
    assert proxies.client(PROXY, ["192.168.7.7"]) == "192.168.7.7"


def test_an_entry_that_is_no_address_stops_at_the_hop_that_wrote_it() -> None:
    """unknown, an obfuscated name or garbage ends the walk at the trusted hop that added it."""
    assert proxies.client(PROXY, ["198.51.100.1, unknown"]) == PROXY
    assert proxies.client(PROXY, ["198.51.100.1, <script>, 192.168.1.2"]) == "192.168.1.2"


@pytest.mark.parametrize(
    ("entry", "address"),
    [
        ("198.51.100.1", "198.51.100.1"),
        (" 198.51.100.1:4711 ", "198.51.100.1"),
        ("2001:db8::1", "2001:db8::1"),
        ("[2001:db8::1]:4711", "2001:db8::1"),
        ('"[2001:db8::1]:4711"', "2001:db8::1"),
        ("::ffff:198.51.100.1", "198.51.100.1"),
        ("unknown", None),
        ("_hidden", None),
        ("", None),
        ("[2001:db8::1", None),
    ],
)
def test_addresses_of_entries(entry: str, address: str | None) -> None:
    """Ports, brackets, quotes and IPv4-mapped forms are read; anything else is no address."""
    parsed = parse_address(entry)
    assert (str(parsed) if parsed is not None else None) == address


def test_forwarded_for_values_are_read_with_quotes_and_other_parameters() -> None:
    """RFC 7239: for= of each element, quoted strings keep their commas and semicolons."""
    assert forwarded_entries(
        ['for=192.0.2.60;proto=http;by=203.0.113.43, For="[2001:db8:cafe::17]:4711"', "proto=https"]
    ) == ["192.0.2.60", '"[2001:db8:cafe::17]:4711"', ""]
    assert forwarded_entries(['for="a,b;c";host=x, for=198.51.100.1']) == [
        '"a,b;c"',
        "198.51.100.1",
    ]


def test_the_forwarded_header_is_read_only_when_chosen() -> None:
    """With Forwarded chosen, its rightmost untrusted for= is the client; X-Forwarded-For is another header."""
    chosen = TrustedProxies.from_options([PROXY], FORWARDED)
    assert chosen.client(PROXY, ["for=6.6.6.6, for=198.51.100.1"]) == "198.51.100.1"
    assert chosen.client(PROXY, ['for="[2001:db8::1]:80"']) == "2001:db8::1"
    assert chosen.client(PROXY, ["for=_hidden"]) == PROXY


def test_bad_options_are_refused() -> None:
    """A trusted proxy must be an address or a network, the header one of the two."""
    assert str(parse_network("10.0.0.0/8")) == "10.0.0.0/8"
    assert str(parse_network("10.1.2.3/8")) == "10.0.0.0/8"
    with pytest.raises(ValueError, match="not an IP address"):
        parse_network("proxy.example.org")
    with pytest.raises(ValueError):
        TrustedProxies.from_options([], "x-real-ip")
    assert proxies.trusts("192.168.3.4") and not proxies.trusts("unix")

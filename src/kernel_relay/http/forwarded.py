# -*- test-case-name: tests.http.test_forwarded -*-
"""
Which client a request came from when it came through a reverse proxy: the operator's ``--trusted-proxy``
addresses and networks, and the one forwarding header they write (``X-Forwarded-For`` or RFC 7239
``Forwarded``).

A client can send either header itself, and a proxy appends to what it was sent, so only the entries a
trusted proxy added can be believed. :meth:`TrustedProxies.client` reads the chain from the right: the
connection's peer must be trusted for the header to count at all, each entry to the left of a trusted hop is
that hop's peer, and the first entry that is not a trusted proxy is the client. An entry that is not an IP
address (``unknown``, an obfuscated ``_name``, garbage) ends the walk at the trusted hop that wrote it.

Only one header is read: a proxy that writes ``X-Forwarded-For`` passes a client's ``Forwarded`` along
unchanged (and the other way round), so believing both would let any client choose its address.

Pure: strings in, strings out; no I/O, no Twisted.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

X_FORWARDED_FOR: Final = "x-forwarded-for"
FORWARDED: Final = "forwarded"
HEADERS: Final = (X_FORWARDED_FOR, FORWARDED)

#: Entries of a forwarding chain looked at, from the right: more hops than any deployment has.
MAX_HOPS: Final = 32


def parse_network(text: str) -> IPNetwork:
    """An address (``10.0.0.5``, ``::1``) or a network (``10.0.0.0/8``); ValueError says what is wrong."""
    try:
        return ipaddress.ip_network(text.strip(), strict=False)
    except ValueError:
        raise ValueError(
            f"{text!r} is not an IP address or network (e.g. 10.0.0.5, 10.0.0.0/8, ::1)"
        ) from None


def parse_address(text: str) -> IPAddress | None:
    """
    An entry of a forwarding header as an address: ``192.0.2.1``, ``192.0.2.1:4711``, ``2001:db8::1``,
    ``[2001:db8::1]:4711``, quoted or not; an IPv4-mapped IPv6 address as IPv4. None for anything else.
    """
    value = text.strip().strip('"').strip()
    if value.startswith("["):
        value = value[1 : value.find("]")] if "]" in value else ""
    elif value.count(":") == 1:  # IPv4 with a port
        value = value.partition(":")[0]
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def x_forwarded_for_entries(values: Sequence[str]) -> list[str]:
    """The entries of every ``X-Forwarded-For`` line, in order (a list of comma-separated addresses)."""
    return [entry.strip() for value in values for entry in value.split(",")]


def forwarded_entries(values: Sequence[str]) -> list[str]:
    """
    The ``for=`` value of each element of every RFC 7239 ``Forwarded`` line, in order (an element without
    one counts as an unknown hop: ``""``). Commas and semicolons inside quoted strings do not split.
    """
    entries = []
    for value in values:
        for element in _split_outside_quotes(value, ","):
            found = ""
            for pair in _split_outside_quotes(element, ";"):
                name, _, item = pair.partition("=")
                if name.strip().lower() == "for":
                    found = item.strip()
            entries.append(found)
    return entries


def _split_outside_quotes(text: str, separator: str) -> list[str]:
    parts: list[str] = []
    current: list[str] = []
    quoted = escaped = False
    for char in text:
        if escaped:
            escaped = False
        elif quoted and char == "\\":
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == separator and not quoted:
            parts.append("".join(current))
            current = []
            continue
        current.append(char)
    parts.append("".join(current))
    return parts


@dataclass(frozen=True)
class TrustedProxies:
    """The proxies whose forwarding ``header`` the relay believes (none: every peer is the client)."""

    networks: tuple[IPNetwork, ...] = ()
    header: str = X_FORWARDED_FOR

    def __post_init__(self) -> None:
        if self.header not in HEADERS:
            raise ValueError(f"the forwarding header is one of {', '.join(HEADERS)}")

    @classmethod
    def from_options(
        cls, addresses: Iterable[str], header: str = X_FORWARDED_FOR
    ) -> TrustedProxies:
        """``--trusted-proxy`` (repeatable) and ``--forwarded-header``; ValueError for a bad value."""
        return cls(tuple(parse_network(text) for text in addresses), header.strip().lower())

    def __bool__(self) -> bool:
        return bool(self.networks)

    def trusts(self, host: str) -> bool:
        """Whether ``host`` (an address as a string) is one of the trusted proxies."""
        if not self.networks:
            return False
        address = parse_address(host)
        return address is not None and self._trusted(address)

    def client(self, peer: str, header_values: Sequence[str]) -> str:
        """
        The client's address: ``peer`` itself unless it is a trusted proxy, else the rightmost entry of the
        header lines ``header_values`` that is not a trusted proxy (see the module's docstring).
        """
        peer_address = parse_address(peer)
        if peer_address is None or not self._trusted(peer_address):
            return peer
        if self.header == X_FORWARDED_FOR:
            entries = x_forwarded_for_entries(header_values)
        else:
            entries = forwarded_entries(header_values)
        hop = peer_address
        for entry in reversed(entries[-MAX_HOPS:]):
            address = parse_address(entry)
            if address is None:
                break  # not an address: the hop that wrote it is as far as the chain can be believed
            hop = address
            if not self._trusted(address):
                break
        return str(hop)

    def _trusted(self, address: IPAddress) -> bool:
        return any(address in network for network in self.networks)

"""Addresses: decide from the resolved IP (never the URL text) whether a host may be contacted.

IPv4-mapped, NAT64, 6to4 and Teredo IPv6 forms are unwrapped to the IPv4 address they carry,
and legacy IPv4 spellings (``2130706433``, ``127.1``, ``0x7f.1``) are read as the address they
name, so none of them can smuggle a loopback or private address past the check.
"""

from __future__ import annotations

__all__ = ["AddressPolicy", "literal_address", "refusal_reason"]

import ipaddress
import socket
from dataclasses import dataclass

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))
_SHARED = ipaddress.ip_network("100.64.0.0/10")
_METADATA = {
    ipaddress.ip_address("169.254.169.254"),
    ipaddress.ip_address("fd00:ec2::254"),
    ipaddress.ip_address("100.100.100.200"),
}


def literal_address(host: str) -> IPAddress | None:
    """The IP address a URL host names literally, in any spelling; None for a name."""
    text = host.strip("[]")
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        pass
    if (
        text
        and all(char in "0123456789abcdefxABCDEFX." for char in text)
        and any(c.isdigit() for c in text)
    ):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(text))
        except OSError:
            return None
    return None


def _unwrap(address: IPAddress) -> IPAddress:
    """The IPv4 address carried inside an IPv6 transition form, or the address itself."""
    if isinstance(address, ipaddress.IPv4Address):
        return address
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    for network in _NAT64:
        if address in network:
            return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address


def refusal_reason(address: IPAddress) -> str | None:
    """Why ``address`` may not be contacted by default, or None when it is a public address."""
    inner = _unwrap(address)
    for candidate in (inner, address):  # the carried IPv4 address gives the precise reason
        if candidate in _METADATA:
            return "a cloud metadata address"
        if candidate.is_loopback:
            return "a loopback address"
        if candidate.is_link_local:
            return "a link-local address"
        if isinstance(candidate, ipaddress.IPv4Address) and candidate in _SHARED:
            return "a shared (carrier-grade NAT) address"
        if candidate.is_multicast:
            return "a multicast address"
        if candidate.is_unspecified:
            return "an unspecified address"
        if candidate.is_private:
            return "a private address"
        if candidate.is_reserved or not candidate.is_global:
            return "a reserved address"
    return None


@dataclass(frozen=True)
class AddressPolicy:
    """Which hosts may be contacted, and which may use plain http.

    The guard is always on. ``allow_hosts`` opens named hosts (exact host names or IP literals,
    lower case) even when they resolve to loopback or private addresses, and allows plain http
    to them: for tests and local demos.
    """

    allow_hosts: frozenset[str] = frozenset()

    def is_allowed_host(self, host: str) -> bool:
        """Whether ``host`` is on the explicit allow list."""
        return host.lower().strip("[]") in self.allow_hosts

    def check(self, host: str, address: IPAddress) -> str | None:
        """Why ``address`` (resolved for ``host``) may not be contacted, or None."""
        if self.is_allowed_host(host):
            return None
        reason = refusal_reason(address)
        return None if reason is None else f"{host} resolves to {address}, {reason}"

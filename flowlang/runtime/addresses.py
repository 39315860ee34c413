"""Addresses: decide from the resolved IP (never the URL text) whether a host may be contacted.

The refused blocks are explicit tables taken from IANA's IPv4 and IPv6 Special-Purpose Address
Registries (``IPV4_REFUSED``, ``IPV6_REFUSED``; IPv6 outside 2000::/3 is refused too), not
Python's ``is_*`` flags, which differ between Python versions. IPv4-mapped, NAT64 and 6to4 IPv6
forms are judged by the IPv4 address they carry, Teredo is refused, and legacy IPv4 spellings
(``2130706433``, ``127.1``, ``0x7f.1``) are read as the address they name, so none of them can
smuggle a loopback or private address past the check.
"""

from __future__ import annotations

__all__ = [
    "IPV4_REFUSED",
    "IPV6_ALLOWED",
    "IPV6_REFUSED",
    "AddressPolicy",
    "carried_ipv4",
    "literal_address",
    "refusal_reason",
]

import ipaddress
import socket
from dataclasses import dataclass

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_METADATA = {
    ipaddress.ip_address("169.254.169.254"),
    ipaddress.ip_address("fd00:ec2::254"),
    ipaddress.ip_address("100.100.100.200"),
}

#: IPv4 blocks refused, from IANA's IPv4 Special-Purpose Address Registry (every block that is
#: not globally reachable) plus multicast and the reserved 240.0.0.0/4. Explicit, because
#: Python's ``is_*`` flags differ between versions. First match gives the reason.
IPV4_REFUSED: tuple[tuple[str, str], ...] = (
    ("0.0.0.0/8", "an unspecified ('this network') address"),
    ("10.0.0.0/8", "a private address"),
    ("100.64.0.0/10", "a shared (carrier-grade NAT) address"),
    ("127.0.0.0/8", "a loopback address"),
    ("169.254.0.0/16", "a link-local address"),
    ("172.16.0.0/12", "a private address"),
    ("192.0.0.0/24", "a reserved address (IETF protocol assignments)"),
    ("192.0.2.0/24", "a reserved address (documentation)"),
    ("192.88.99.0/24", "a reserved address (6to4 relay anycast, deprecated)"),
    ("192.168.0.0/16", "a private address"),
    ("198.18.0.0/15", "a reserved address (benchmarking)"),
    ("198.51.100.0/24", "a reserved address (documentation)"),
    ("203.0.113.0/24", "a reserved address (documentation)"),
    ("224.0.0.0/4", "a multicast address"),
    ("255.255.255.255/32", "a broadcast address"),
    ("240.0.0.0/4", "a reserved address"),
)

#: Globally reachable IPv6 blocks inside refused ones (IANA marks them so): allowed.
IPV6_ALLOWED: tuple[str, ...] = (
    "2001:1::1/128",  # Port Control Protocol anycast
    "2001:1::2/128",  # TURN anycast
    "2001:1::3/128",  # DNS-SD service registration anycast
    "2001:3::/32",  # AMT
    "2001:4:112::/48",  # AS112-v6
    "2001:20::/28",  # ORCHIDv2
    "2001:30::/28",  # drone remote ID
)

#: IPv6 blocks refused, from IANA's IPv6 Special-Purpose Address Registry; everything outside
#: the global unicast space 2000::/3 is refused as well (after the IPv4-carrying forms
#: ::ffff:0:0/96, 64:ff9b::/96 and 2002::/16 are judged by the IPv4 address they carry).
IPV6_REFUSED: tuple[tuple[str, str], ...] = (
    ("::1/128", "a loopback address"),
    ("::/128", "an unspecified address"),
    ("fe80::/10", "a link-local address"),
    ("fec0::/10", "a site-local address (deprecated, private)"),
    ("fc00::/7", "a private (unique local) address"),
    ("ff00::/8", "a multicast address"),
    ("64:ff9b:1::/48", "a private address (local-use NAT64)"),
    ("100::/64", "a reserved address (discard only)"),
    ("100:0:0:1::/64", "a reserved address (dummy prefix)"),
    ("5f00::/16", "a reserved address (SRv6 segment identifiers)"),
    ("2001::/32", "a Teredo address"),
    ("2001:db8::/32", "a reserved address (documentation)"),
    ("3fff::/20", "a reserved address (documentation)"),
    ("2001::/23", "a reserved address (IETF protocol assignments)"),
)

_GLOBAL_UNICAST = ipaddress.IPv6Network("2000::/3")
_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_SIXTOFOUR = ipaddress.IPv6Network("2002::/16")


def _ranges(table: tuple[tuple[str, str], ...]) -> tuple[tuple[int, int, str], ...]:
    networks = ((ipaddress.ip_network(text), reason) for text, reason in table)
    return tuple(
        (int(net.network_address), int(net.broadcast_address), reason) for net, reason in networks
    )


_V4 = _ranges(IPV4_REFUSED)
_V6 = _ranges(IPV6_REFUSED)
_V6_ALLOWED = _ranges(tuple((text, "") for text in IPV6_ALLOWED))


def _lookup(value: int, table: tuple[tuple[int, int, str], ...]) -> str | None:
    for low, high, reason in table:
        if low <= value <= high:
            return reason
    return None


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


def carried_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv4-mapped, NAT64 (64:ff9b::/96) or 6to4 address carries, or None."""
    if address in _MAPPED:
        return address.ipv4_mapped
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address in _SIXTOFOUR:
        return address.sixtofour
    return None


def refusal_reason(address: IPAddress) -> str | None:
    """Why ``address`` may not be contacted by default, or None when it is a public address."""
    if address in _METADATA:
        return "a cloud metadata address"
    if isinstance(address, ipaddress.IPv6Address):
        if address.scope_id is not None:
            return "an address with a zone index"
        inner = carried_ipv4(address)
        if inner is not None:
            address = inner
        else:
            value = int(address)
            if _lookup(value, _V6_ALLOWED) is not None:
                return None
            reason = _lookup(value, _V6)
            if reason is None and address not in _GLOBAL_UNICAST:
                reason = "a reserved address (outside global unicast)"
            return reason
    if address in _METADATA:
        return "a cloud metadata address"
    return _lookup(int(address), _V4)


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

"""Which addresses a media download may connect to: the IANA special-purpose address registries, as data.

Pure: no I/O. ``ipaddress``'s ``is_global`` is not enough on Python 3.11 (it calls most of 192.0.0.0/24
global, for one), so the rule is the registries themselves: an address inside a special-purpose block is
refused unless the most specific block holding it is marked globally reachable; multicast is refused; an
IPv6 address outside 2000::/3 (the only block of the IPv6 address space allocated as global unicast) is
refused. IPv6 forms that carry an IPv4 address (IPv4-mapped, the NAT64 well-known prefix, 6to4) are judged
by the IPv4 address inside.

Sources: https://www.iana.org/assignments/iana-ipv4-special-registry (2024-11 edition),
https://www.iana.org/assignments/iana-ipv6-special-registry (2025-06 edition),
https://www.iana.org/assignments/ipv6-address-space, and the multicast registries.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class SpecialBlock:
    network: Network
    name: str
    globally_reachable: bool


def _blocks(rows: tuple[tuple[str, str, bool], ...]) -> tuple[SpecialBlock, ...]:
    blocks = [SpecialBlock(ipaddress.ip_network(net), name, reach) for net, name, reach in rows]
    # Most specific first, so the first block that holds an address is the one that decides.
    return tuple(sorted(blocks, key=lambda b: -b.network.prefixlen))


# "Globally Reachable" column; N/A (deprecated or context-dependent blocks) is treated as False.
IPV4_SPECIAL = _blocks(
    (
        ("0.0.0.0/8", "This network", False),
        ("0.0.0.0/32", "This host on this network", False),
        ("10.0.0.0/8", "Private-Use", False),
        ("100.64.0.0/10", "Shared Address Space", False),
        ("127.0.0.0/8", "Loopback", False),
        ("169.254.0.0/16", "Link Local", False),
        ("172.16.0.0/12", "Private-Use", False),
        ("192.0.0.0/24", "IETF Protocol Assignments", False),
        ("192.0.0.0/29", "IPv4 Service Continuity Prefix", False),
        ("192.0.0.8/32", "IPv4 dummy address", False),
        ("192.0.0.9/32", "Port Control Protocol Anycast", True),
        ("192.0.0.10/32", "Traversal Using Relays around NAT Anycast", True),
        ("192.0.0.170/32", "NAT64/DNS64 Discovery", False),
        ("192.0.0.171/32", "NAT64/DNS64 Discovery", False),
        ("192.0.2.0/24", "Documentation (TEST-NET-1)", False),
        ("192.31.196.0/24", "AS112-v4", True),
        ("192.52.193.0/24", "AMT", True),
        ("192.88.99.0/24", "Deprecated (6to4 Relay Anycast)", False),
        ("192.88.99.2/32", "6a44-relay anycast address", False),
        ("192.168.0.0/16", "Private-Use", False),
        ("192.175.48.0/24", "Direct Delegation AS112 Service", True),
        ("198.18.0.0/15", "Benchmarking", False),
        ("198.51.100.0/24", "Documentation (TEST-NET-2)", False),
        ("203.0.113.0/24", "Documentation (TEST-NET-3)", False),
        ("240.0.0.0/4", "Reserved", False),
        ("255.255.255.255/32", "Limited Broadcast", False),
        ("224.0.0.0/4", "Multicast (IPv4 Multicast Address Space registry)", False),
    )
)

IPV6_SPECIAL = _blocks(
    (
        ("::1/128", "Loopback Address", False),
        ("::/128", "Unspecified Address", False),
        ("::ffff:0:0/96", "IPv4-mapped Address", False),
        ("64:ff9b::/96", "IPv4-IPv6 Translat.", True),
        ("64:ff9b:1::/48", "IPv4-IPv6 Translat. (local use)", False),
        ("100::/64", "Discard-Only Address Block", False),
        ("100:0:0:1::/64", "Dummy IPv6 Prefix", False),
        ("2001::/23", "IETF Protocol Assignments", False),
        ("2001::/32", "TEREDO", False),
        ("2001:1::1/128", "Port Control Protocol Anycast", True),
        ("2001:1::2/128", "Traversal Using Relays around NAT Anycast", True),
        ("2001:1::3/128", "DNS-SD Service Registration Protocol Anycast", True),
        ("2001:2::/48", "Benchmarking", False),
        ("2001:3::/32", "AMT", True),
        ("2001:4:112::/48", "AS112-v6", True),
        ("2001:10::/28", "Deprecated (previously ORCHID)", False),
        ("2001:20::/28", "ORCHIDv2", True),
        ("2001:30::/28", "Drone Remote ID Protocol Entity Tags (DETs) Prefix", True),
        ("2001:db8::/32", "Documentation", False),
        ("2002::/16", "6to4", False),
        ("2620:4f:8000::/48", "Direct Delegation AS112 Service", True),
        ("3fff::/20", "Documentation", False),
        ("5f00::/16", "Segment Routing (SRv6) SIDs", False),
        ("fc00::/7", "Unique-Local", False),
        ("fe80::/10", "Link-Local Unicast", False),
        ("ff00::/8", "Multicast (IPv6 Address Space registry)", False),
    )
)

GLOBAL_UNICAST_V6 = ipaddress.IPv6Network("2000::/3")
_NAT64_WKP = ipaddress.IPv6Network("64:ff9b::/96")
_SIX_TO_FOUR = ipaddress.IPv6Network("2002::/16")


def special_block(ip: Address) -> SpecialBlock | None:
    """The most specific special-purpose block holding ``ip``, if any."""
    for block in IPV4_SPECIAL if isinstance(ip, ipaddress.IPv4Address) else IPV6_SPECIAL:
        if ip in block.network:
            return block
    return None


def is_public(ip: Address) -> bool:
    """True when ``ip`` is a globally reachable unicast address a server may connect to for a client."""
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(ip)
        if embedded is not None:
            return is_public(embedded)
        block = special_block(ip)
        if block is not None:
            return block.globally_reachable
        return ip in GLOBAL_UNICAST_V6
    block = special_block(ip)
    return block is None or block.globally_reachable


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip in _NAT64_WKP:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip in _SIX_TO_FOUR:
        return ip.sixtofour
    return None

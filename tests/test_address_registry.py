"""The private-address rule against the IANA special-purpose address registries, as a pure function.

Each row below is copied from the registries (IPv4: 2024-11, IPv6: 2025-06) with its "Globally Reachable"
column (N/A counted as not reachable). For every row the first, a middle and the last address of the block
are checked, except where a more specific row takes over. Nothing here connects anywhere.
"""

from __future__ import annotations

import ipaddress

import pytest

from videosynth.media.fetch import is_forbidden_address

IPV4_REGISTRY = [
    ("0.0.0.0/8", False), ("0.0.0.0/32", False), ("10.0.0.0/8", False), ("100.64.0.0/10", False),
    ("127.0.0.0/8", False), ("169.254.0.0/16", False), ("172.16.0.0/12", False),
    ("192.0.0.0/24", False), ("192.0.0.0/29", False), ("192.0.0.8/32", False), ("192.0.0.9/32", True),
    ("192.0.0.10/32", True), ("192.0.0.170/32", False), ("192.0.0.171/32", False), ("192.0.2.0/24", False),
    ("192.31.196.0/24", True), ("192.52.193.0/24", True), ("192.88.99.0/24", False), ("192.88.99.2/32", False),
    ("192.168.0.0/16", False), ("192.175.48.0/24", True), ("198.18.0.0/15", False), ("198.51.100.0/24", False),
    ("203.0.113.0/24", False), ("240.0.0.0/4", False), ("255.255.255.255/32", False),
    ("224.0.0.0/4", False),  # multicast
]  # fmt: skip

IPV6_REGISTRY = [
    ("::1/128", False), ("::/128", False), ("64:ff9b:1::/48", False), ("100::/64", False),
    ("100:0:0:1::/64", False), ("2001::/23", False), ("2001::/32", False), ("2001:1::1/128", True),
    ("2001:1::2/128", True), ("2001:1::3/128", True), ("2001:2::/48", False), ("2001:3::/32", True),
    ("2001:4:112::/48", True), ("2001:10::/28", False), ("2001:20::/28", True), ("2001:30::/28", True),
    ("2001:db8::/32", False), ("2620:4f:8000::/48", True), ("3fff::/20", False), ("5f00::/16", False),
    ("fc00::/7", False), ("fe80::/10", False),
    ("ff00::/8", False),  # multicast
]  # fmt: skip

_ALL = [(ipaddress.ip_network(n), reach) for n, reach in IPV4_REGISTRY + IPV6_REGISTRY]


def _decides(address: ipaddress.IPv4Address | ipaddress.IPv6Address, network: ipaddress._BaseNetwork) -> bool:
    """True when no more specific registry row holds ``address``."""
    return not any(
        address in other and other.prefixlen > network.prefixlen
        for other, _ in _ALL
        if other.version == network.version
    )


def _samples() -> list[tuple[str, bool]]:
    out = []
    for network, reachable in _ALL:
        for address in {network[0], network[network.num_addresses // 2], network[-1]}:
            if _decides(address, network):
                out.append((str(address), reachable))
    return out


@pytest.mark.parametrize(("address", "reachable"), _samples())
def test_each_registry_block(address: str, reachable: bool) -> None:
    assert is_forbidden_address(address) is not reachable


@pytest.mark.parametrize("address", ["192.0.0.8", "192.0.0.192", "192.0.0.1", "192.0.0.255", "192.0.0.170"])
def test_the_ietf_protocol_block_found_open(address: str) -> None:
    assert is_forbidden_address(address)


@pytest.mark.parametrize(
    "address",
    [
        "::808:808",  # IPv4-compatible (::/96, in ::/8 reserved by the IETF)
        "fec0::1",  # site-local, deprecated (outside 2000::/3)
        "4000::1",  # reserved by the IETF
        "::ffff:192.0.0.8",  # IPv4-mapped: judged by the IPv4 inside
        "64:ff9b::c000:8",  # NAT64 of 192.0.0.8
        "2002:c000:8::1",  # 6to4 around 192.0.0.8
    ],
)
def test_ipv6_outside_global_unicast_or_wrapping_a_special_ipv4(address: str) -> None:
    assert is_forbidden_address(address)


@pytest.mark.parametrize(
    "address", ["8.8.8.8", "1.1.1.1", "192.0.1.1", "192.0.3.1", "2606:4700:4700::1111", "64:ff9b::808:808"]
)
def test_public_neighbours_stay_open(address: str) -> None:
    assert not is_forbidden_address(address)

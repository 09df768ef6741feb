"""Who a request really comes from when relaydesk runs behind reverse proxies (``server.trusted_proxies``).

A proxy appends the address it got the request from to ``X-Forwarded-For``. Only the entries added by
proxies we trust are believed: reading the header from the right, each hop that is a trusted proxy
hands over to the address before it, and the first address that is not a trusted proxy is the client.
Anything to its left was written by the client itself and is ignored (it can write anything there).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def parse_networks(values: Iterable[str]) -> tuple[Network, ...]:
    """Addresses (``10.0.0.5``) or networks (``10.0.0.0/8``, ``fd00::/8``); raises ValueError on a bad one."""
    return tuple(ipaddress.ip_network(value.strip(), strict=False) for value in values)


def _address(text: str) -> Address | None:
    """An address from one hop of the header: ``1.2.3.4``, ``1.2.3.4:5678``, ``::1`` or ``[::1]:5678``."""
    text = text.strip()
    if text.startswith("["):
        text = text[1:].split("]", 1)[0]
    elif text.count(":") == 1:
        text = text.split(":", 1)[0]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _trusted(address: Address, networks: Sequence[Network]) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in network for network in networks)


def client_address(peer: str | None, forwarded_for: Iterable[str], trusted: Sequence[Network]) -> str | None:
    """The client's address: ``peer`` itself, unless ``peer`` is a trusted proxy (then see the module doc).

    ``forwarded_for`` holds every ``X-Forwarded-For`` header of the request, in order. An entry that is
    not an address ends the walk: the last trusted hop before it counts as the client.
    """
    if peer is None or not trusted:
        return peer
    current = _address(peer)
    if current is None or not _trusted(current, trusted):
        return peer
    hops = [hop for header in forwarded_for for hop in header.split(",")]
    client = peer
    for hop in reversed(hops):
        address = _address(hop)
        if address is None:
            break
        client = str(address)
        if not _trusted(address, trusted):
            break
    return client

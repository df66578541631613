"""Node addresses: one spelling per address, and the networks that may be registered.

One node must never look like two: ``127.0.0.1``, ``::ffff:127.0.0.1`` and
``[::FFFF:7F00:1]`` are one address, as are ``Redis.Example.`` and
``redis.example``. Every address is normalised before it is compared or
stored.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Sequence

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Loopback and the private ranges (RFC 1918, RFC 4193): what RegisterInstance
# may reach unless the operator says otherwise.
DEFAULT_REGISTER_NETWORKS = "127.0.0.0/8,::1/128,10.0.0.0/8,172.16.0.0/12,192.168.0.0/16,fc00::/7"


def normalize_host(host: str) -> str:
    """The canonical spelling: an IP address compressed (IPv4-mapped IPv6 as IPv4),
    a name lower-cased without its trailing dot."""
    text = host.strip().removeprefix("[").removesuffix("]")
    try:
        address = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return text.lower().rstrip(".")
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


def parse_networks(text: str) -> list[IpNetwork]:
    """``10.0.0.0/8,::1`` as networks; ``ValueError`` on a malformed entry."""
    return [
        ipaddress.ip_network(part.strip(), strict=False) for part in text.split(",") if part.strip()
    ]


def allowed(host: str, networks: Sequence[IpNetwork]) -> bool:
    """Whether ``host`` (an IP address, normalised) lies in one of ``networks``."""
    try:
        address = ipaddress.ip_address(normalize_host(host))
    except ValueError:
        return False
    return any(address in network for network in networks)


class OutsideNetworks(Exception):
    """An address that stands for an IP address outside the allowed networks."""


def allowed_address(host: str, port: int, networks: Sequence[IpNetwork]) -> str:
    """The IP address to connect to for ``host``, if every address it stands for lies
    in ``networks`` (``OutsideNetworks`` if not, ``OSError`` when it resolves to none).

    Checked before any connection, to an address given or one a node or a Sentinel
    names. A name is resolved once, here, and the connection goes to the address
    found, so that it cannot point inside the networks when checked and elsewhere
    when used.
    """
    addresses = resolve(host, port)
    if not addresses or not all(allowed(a, networks) for a in addresses):
        raise OutsideNetworks(f"{normalize_host(host)}:{port}")
    return addresses[0]


def resolve(host: str, port: int) -> list[str]:
    """The IP addresses ``host`` stands for, normalised (``OSError`` when it resolves to none)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    found: list[str] = []
    for info in infos:
        address = normalize_host(str(info[4][0]))
        if address not in found:
            found.append(address)
    return found

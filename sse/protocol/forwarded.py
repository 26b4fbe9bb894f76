"""Who the client is behind proxies: X-Forwarded-For and Forwarded (RFC 7239), believed with care.

Pure. Each proxy appends the address it received from, so the list is read
from the right: addresses of trusted proxies are skipped, and the first one
that is not trusted is the client. A client can write anything at the left
of the list, but never past the proxy that appended its real address.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping, Sequence

__all__ = ["Networks", "client_address", "is_trusted", "parse_networks"]

Networks = Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network]
# for=192.0.2.60, for="[2001:db8::1]:4711", for=unknown, for=_hidden (RFC 7239 section 6)
_FOR = re.compile(r'for\s*=\s*("?)([^;,"]*)\1', re.IGNORECASE)
# A header this long is not from a proxy chain we run; it is not read at all.
_MAX_CHARS = 2048


def parse_networks(cidrs: Sequence[str]) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """The --trusted-proxy values as networks (a bare address is a /32 or /128).

    Raises:
        ValueError: a value is neither an address nor a CIDR block.
    """
    return [ipaddress.ip_network(cidr, strict=False) for cidr in cidrs]


def client_address(peer: str, headers: Mapping[str, str], trusted: Networks) -> str:
    """The client's address: `peer`, or what trusted proxies say it was.

    A proxy passes on the header it does not set, so when both are present one
    of them may be the client's own writing, and which cannot be told: if they
    name different clients (or one is too long to read), neither is believed.
    """
    if not trusted or not is_trusted(peer, trusted):
        return peer
    named = {None if hops is None else _client(hops, peer, trusted) for hops in _chains(headers)}
    only = named.pop() if len(named) == 1 else None
    return peer if only is None else only


def _client(hops: Sequence[str], peer: str, trusted: Networks) -> str:
    for hop in reversed(hops):
        if not is_trusted(hop, trusted):
            return hop
    # Every hop was a proxy of ours (or the header was empty): the first one's
    # own address is as near to the client as we know.
    return hops[0] if hops else peer


def _chains(headers: Mapping[str, str]) -> list[list[str] | None]:
    """The hops of each header present; None for one too long to be read."""
    chains: list[list[str] | None] = []
    forwarded = headers.get("forwarded")
    if forwarded is not None:
        fits = len(forwarded) <= _MAX_CHARS
        chains.append([_strip(m.group(2)) for m in _FOR.finditer(forwarded)] if fits else None)
    xff = headers.get("x-forwarded-for")
    if xff is not None:
        fits = len(xff) <= _MAX_CHARS
        chains.append([_strip(part) for part in xff.split(",") if part.strip()] if fits else None)
    return chains


def _strip(value: str) -> str:
    """An address without port or brackets: "[2001:db8::1]:4711" -> "2001:db8::1"."""
    value = value.strip()
    if value.startswith("["):
        return value[1 : value.find("]")] if "]" in value else value
    if value.count(":") == 1:  # IPv4 with a port
        return value.split(":", 1)[0]
    return value


def is_trusted(address: str, trusted: Networks) -> bool:
    """Whether `address` is in one of the `trusted` networks (garbage never is)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False  # "unknown", "_hidden", garbage: never one of our proxies
    return any(ip in network for network in trusted)

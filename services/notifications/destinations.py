"""Which webhook URLs the service may call: not its own network, unless allowed.

A webhook URL is chosen by a user, and the worker POSTs to it from inside the
deployment: pointed at a loopback, private or link-local address it would reach
the project's own databases, Redis or a cloud metadata endpoint (server-side
request forgery). Unless ``notifications.webhook_allow_private`` is set (a local
receiver in development, the tests), such URLs are refused: a literal address or
``localhost`` when the endpoint is created (422), and any host whose addresses
include one when a delivery is about to be made (the delivery is abandoned).
Known gap: a host whose DNS answer changes between that lookup and the
connection (DNS rebinding) is not caught.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import urlsplit

_LOCAL_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"})


def _refused_address(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return (
        address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
    )


def refused_literal(url: str) -> str | None:
    """Why ``url`` may not be called, judging by its text alone, or None."""
    host = (urlsplit(url).hostname or "").rstrip(".").lower()
    if not host:
        return "the URL has no host"
    if host in _LOCAL_NAMES or host.endswith(".localhost"):
        return "the URL names this machine"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    return "the URL names a private, loopback or reserved address" if _refused_address(address) else None


async def refused_resolved(url: str) -> str | None:
    """Why ``url`` may not be called once its host is resolved, or None. A host
    that does not resolve is left to the HTTP client (a failed attempt)."""
    reason = refused_literal(url)
    if reason is not None:
        return reason
    parts = urlsplit(url)
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(parts.hostname, parts.port, type=socket.SOCK_STREAM)
    except OSError:
        return None
    for info in infos:
        if _refused_address(ipaddress.ip_address(info[4][0])):
            return "the URL's host resolves to a private, loopback or reserved address"
    return None

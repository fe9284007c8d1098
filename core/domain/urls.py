"""Rules for URLs taskgate will call: backend endpoints and webhooks.

taskgate runs inside a cloud account, so a URL it calls must never reach the instance
metadata service (the classic SSRF prize). Private and loopback addresses stay allowed: a
GPU fleet usually lives on them. Hostnames are checked again, resolved, at call time.
"""

from __future__ import annotations

import ipaddress
import socket
import time
import unicodedata
from urllib.parse import urlsplit

from core.errors import ValidationError

METADATA_HOSTS = frozenset(
    {
        "metadata",
        "metadata.google.internal",
        "metadata.goog",
        "metadata.azure.com",
        "instance-data",
        "instance-data.ec2.internal",
    }
)
METADATA_NETWORKS = (
    ipaddress.ip_network("169.254.0.0/16"),  # link-local: AWS, GCP, Azure, ECS metadata
    ipaddress.ip_network("fe80::/10"),
    ipaddress.ip_network("fd00:ec2::/32"),  # AWS IMDS over IPv6
    ipaddress.ip_network("100.100.100.200/32"),  # Alibaba Cloud
)


# Dots that IDNA-aware resolvers treat as '.' (ideographic, fullwidth, halfwidth).
_DOTS = str.maketrans({"\u3002": ".", "\uff0e": ".", "\uff61": "."})


def normalize_host(host: str) -> str:
    """The host as a resolver would read it: NFKC (fullwidth digits), IDNA dots, no final dot."""
    return unicodedata.normalize("NFKC", host).translate(_DOTS).rstrip(".").lower()


def _as_ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    # Legacy IPv4 spellings (2852039166, 0xa9fea9fe, 0251.0376.0251.0376) that resolvers accept.
    if host and all(c in "0123456789abcdefx." for c in host.lower()):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    return None


def is_metadata_address(address: str) -> bool:
    ip = _as_ip(address)
    if ip is None:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip in net for net in METADATA_NETWORKS)


def check_url(url: str, field: str) -> str:
    """Return `url` if taskgate may call it, else raise a ValidationError naming `field`."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ValidationError(f"Invalid field {field}: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise ValidationError(f"Invalid field {field}: only http and https URLs are allowed")
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise ValidationError(f"Invalid field {field}: credentials are not allowed in the URL")
    host = normalize_host(parts.hostname or "")
    if not host:
        raise ValidationError(f"Invalid field {field}: the URL has no host")
    if port == 0:
        raise ValidationError(f"Invalid field {field}: port 0 is not allowed")
    if host in METADATA_HOSTS or is_metadata_address(host):
        raise ValidationError(f"Invalid field {field}: cloud metadata addresses are not allowed")
    return url


_RESOLVED: dict[str, tuple[float, bool]] = {}
_RESOLVE_TTL_S = 60.0


def resolves_safely(url: str) -> bool:
    """At call time: the URL's host does not resolve to a metadata address (a hostname that
    passed registration may point there later). Cached for a minute per host."""
    host = normalize_host(urlsplit(url).hostname or "")
    cached = _RESOLVED.get(host)
    if cached is not None and cached[0] > time.monotonic():
        return cached[1]
    if _as_ip(host) is not None:
        safe = not is_metadata_address(host)
    else:
        try:
            addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
        except OSError:
            addresses = set()  # unresolvable: the call itself will fail and say so
        safe = not any(is_metadata_address(str(a).split("%")[0]) for a in addresses)
    _RESOLVED[host] = (time.monotonic() + _RESOLVE_TTL_S, safe)
    return safe

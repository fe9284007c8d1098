"""Rules for URLs taskgate will call: backend endpoints (registered by admins) and webhooks
(given by users).

A URL is parsed once, strictly, into a `Target`, and only its normalised form is stored and
called: a spelling two parsers could read differently (a `\\`, a `%` or `@` in the host, a
control character, a port that is not plain digits) is refused rather than interpreted, so the
host checked here is the host the HTTP client is given. The call itself connects to an
address checked by `core.http.guard` at call time, never to what the client would resolve.

Backends may live on private networks (a GPU fleet usually does) but never on a cloud metadata
address. Webhooks are the user's: only public addresses, unless the operator allows networks
(`WEBHOOK_ALLOWED_NETWORKS`).
"""

from __future__ import annotations

import ipaddress
import re
import socket
import unicodedata
from dataclasses import dataclass
from urllib.parse import urlsplit

from core.errors import ValidationError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

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
# IPv6 prefixes that carry an IPv4 address (or reach one through a gateway): a webhook there
# could reach any IPv4 network, so they are refused whole rather than decoded.
EMBEDDING_NETWORKS = (
    ipaddress.ip_network("::/96"),  # IPv4-compatible (deprecated)
    ipaddress.ip_network("::ffff:0:0/96"),  # IPv4-mapped
    ipaddress.ip_network("64:ff9b::/96"),  # NAT64, well-known prefix
    ipaddress.ip_network("64:ff9b:1::/48"),  # NAT64, local use
    ipaddress.ip_network("2002::/16"),  # 6to4
    ipaddress.ip_network("2001::/32"),  # Teredo
)
SHARED_ADDRESS_SPACE = ipaddress.ip_network("100.64.0.0/10")  # CGNAT
LOOPBACK_NETWORKS: tuple[IPNetwork, ...] = (
    ipaddress.ip_network("127.0.0.0/8"),
    ipaddress.ip_network("::1/128"),
)

# Dots that IDNA-aware resolvers treat as '.' (ideographic, fullwidth, halfwidth).
_DOTS = str.maketrans({"\u3002": ".", "\uff0e": ".", "\uff61": "."})
# The authority after the scheme: a bracketed IPv6 literal or a name, then digits for a port.
_AUTHORITY = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[^\[\]:@%\\]+)(?::([0-9]{1,5}))?$")
_LABEL = re.compile(r"^[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?$")
_DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True)
class Target:
    """A URL as taskgate calls it: every part in the one form both HTTP clients read alike."""

    scheme: str
    host: str  # lower-case ASCII name (IDNA) or canonical IP, IPv6 without brackets
    port: int
    path: str  # path and query, starting with '/'
    explicit_port: bool

    @property
    def ip(self) -> IPAddress | None:
        try:
            return ipaddress.ip_address(self.host)
        except ValueError:
            return None

    @property
    def host_literal(self) -> str:
        return f"[{self.host}]" if ":" in self.host else self.host

    @property
    def host_header(self) -> str:
        """`Host` (and the name TLS verifies): the original host, never the address used."""
        if self.port == _DEFAULT_PORTS[self.scheme]:
            return self.host_literal
        return f"{self.host_literal}:{self.port}"

    @property
    def url(self) -> str:
        port = f":{self.port}" if self.explicit_port else ""
        return f"{self.scheme}://{self.host_literal}{port}{self.path}"

    def url_at(self, address: str) -> str:
        """The same URL with the host replaced by `address` (the one that was checked)."""
        literal = f"[{address}]" if ":" in address else address
        return f"{self.scheme}://{literal}:{self.port}{self.path}"


def normalize_host(host: str) -> str:
    """The host as a resolver would read it: NFKC (fullwidth digits), IDNA dots, no final dot."""
    return unicodedata.normalize("NFKC", host).translate(_DOTS).rstrip(".").lower()


def _as_ip(host: str) -> IPAddress | None:
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


def _invalid(field: str, why: str) -> ValidationError:
    return ValidationError(f"Invalid field {field}: {why}")


def parse_target(url: str, field: str) -> Target:
    """Parse `url` strictly; a ValidationError naming `field` for anything ambiguous."""
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise _invalid(field, str(exc)) from None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise _invalid(field, "only http and https URLs are allowed")
    if any(ord(c) <= 0x20 or ord(c) == 0x7F or c == "\\" for c in url):
        raise _invalid(field, "spaces, control characters and backslashes are not allowed in the URL")
    if "@" in parts.netloc:
        raise _invalid(field, "credentials are not allowed in the URL")
    if not parts.netloc:
        raise _invalid(field, "the URL has no host")
    if "%" in parts.netloc:
        raise _invalid(field, "percent-encoding is not allowed in the host")
    authority = _AUTHORITY.match(parts.netloc)
    if authority is None:
        raise _invalid(field, "the host and port are not in a form every HTTP client reads alike")
    raw_host, raw_port = authority.groups()
    port = int(raw_port) if raw_port is not None else _DEFAULT_PORTS[scheme]
    if not 0 < port < 65536:
        raise _invalid(field, "Port out of range 1-65535" if port else "port 0 is not allowed")
    host = _host(raw_host, field)
    path = parts.path or "/"
    if parts.query:
        path = f"{path}?{parts.query}"
    return Target(scheme, host, port, path, explicit_port=raw_port is not None)


def _host(raw: str, field: str) -> str:
    if raw.startswith("["):
        try:
            return str(ipaddress.IPv6Address(raw[1:-1]))
        except ValueError:
            raise _invalid(field, "not a valid IPv6 address") from None
    host = normalize_host(raw)
    if not host:
        raise _invalid(field, "the URL has no host")
    if host in METADATA_HOSTS:
        raise _invalid(field, "cloud metadata addresses are not allowed")
    ip = _as_ip(host)
    if ip is not None:
        return str(ip)
    try:
        ascii_host = host.encode("idna").decode("ascii")
    except UnicodeError:
        raise _invalid(field, "the host is not a valid name") from None
    if len(ascii_host) > 253 or not all(_LABEL.match(label) for label in ascii_host.split(".")):
        raise _invalid(field, "the host is not a valid name")
    if ascii_host in METADATA_HOSTS:
        raise _invalid(field, "cloud metadata addresses are not allowed")
    return ascii_host


def _unmapped(ip: IPAddress) -> IPAddress:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def is_metadata_address(address: str | IPAddress) -> bool:
    ip = _as_ip(address) if isinstance(address, str) else address
    if ip is None:
        return False
    ip = _unmapped(ip)
    return any(ip in net for net in METADATA_NETWORKS)


def is_public_address(ip: IPAddress) -> bool:
    """Globally routable unicast: not loopback, private, link-local, CGNAT, multicast,
    reserved, unspecified, documentation, nor an IPv6 form that embeds an IPv4 address."""
    if isinstance(ip, ipaddress.IPv6Address):
        if any(ip in net for net in EMBEDDING_NETWORKS) or ip.is_site_local:
            return False
    elif ip in SHARED_ADDRESS_SPACE:
        return False
    return ip.is_global and not (ip.is_multicast or ip.is_reserved or ip.is_link_local)


def backend_refusal(ip: IPAddress) -> str | None:
    """Why a backend may not be called at `ip` (None: it may)."""
    return "a cloud metadata address" if is_metadata_address(ip) else None


@dataclass(frozen=True)
class WebhookPolicy:
    """Where webhooks may go: public addresses, and the networks the operator allows."""

    allowed: tuple[IPNetwork, ...] = ()

    def refusal(self, ip: IPAddress) -> str | None:
        if is_metadata_address(ip):
            return "a cloud metadata address"
        if any(ip.version == net.version and ip in net for net in self.allowed):
            return None
        if not is_public_address(ip):
            return "a private, loopback, link-local or reserved address"
        return None

    def allows_loopback(self) -> bool:
        return self.refusal(ipaddress.ip_address("127.0.0.1")) is None


def check_url(url: str, field: str) -> str:
    """A backend endpoint: the normalised URL if taskgate may call it, else a ValidationError
    naming `field`. Private and loopback addresses are allowed, metadata ones never."""
    target = parse_target(url, field)
    ip = target.ip
    if ip is not None and (why := backend_refusal(ip)):
        raise _invalid(field, f"{why} is not allowed")
    return target.url


def check_webhook_url(url: str, field: str, policy: WebhookPolicy) -> str:
    """A user's webhook: the normalised URL, or a ValidationError. An IP literal is checked
    now, a name when it is resolved at each attempt (`core.http.guard`)."""
    target = parse_target(url, field)
    ip = target.ip
    if ip is not None and (why := policy.refusal(ip)):
        raise _invalid(field, f"{why} is not allowed for webhooks")
    if ip is None and _is_localhost_name(target.host) and not policy.allows_loopback():
        raise _invalid(field, "a loopback address is not allowed for webhooks")
    return target.url


def _is_localhost_name(host: str) -> bool:
    return host == "localhost" or host.endswith(".localhost")

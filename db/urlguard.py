"""The SSRF guard for webhook URLs, shared by the API (registration) and workers (send time).

Only http(s) URLs whose host resolves exclusively to public addresses pass, unless the host
name, or every address it resolves to, is allowlisted (SERVEPLANE_WEBHOOK_ALLOWED_HOSTS:
exact host names, IP addresses or CIDRs, separated by commas). Nothing here opens a
connection: resolution goes through `socket.getaddrinfo` only.
"""

from __future__ import annotations

import ipaddress
import socket
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

MAX_URL_LENGTH = 2048
RESOLVE_TIMEOUT = 3.0
# Ranges Python's flags miss or that embed an IPv4 address we must judge on its own.
_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))
# getaddrinfo has no timeout of its own; a few threads bound how long a lookup may block.
_resolver = ThreadPoolExecutor(max_workers=8, thread_name_prefix="urlguard-dns")


class UnsafeUrl(ValueError):
    """The URL may not receive webhooks; `reason` says why in words a user can act on."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Allowlist:
    """Host names and networks exempt from the private-address rule."""

    hosts: frozenset[str]
    networks: tuple[IPNetwork, ...]

    def allows_host(self, host: str) -> bool:
        """True when the host name itself is allowlisted."""
        return _normal_host(host) in self.hosts

    def allows_address(self, address: IPAddress) -> bool:
        """True when the address falls in an allowlisted IP or CIDR."""
        return any(address.version == net.version and address in net for net in self.networks)


@dataclass(frozen=True)
class Target:
    """A vetted URL: its parts, and the addresses a sender may connect to (in order)."""

    url: str
    scheme: str
    host: str
    port: int
    addresses: tuple[str, ...]
    host_allowlisted: bool


def parse_allowlist(raw: str | Allowlist | None) -> Allowlist:
    """Parse `host,10.0.0.0/8,::1` into an Allowlist (an Allowlist passes through)."""
    if isinstance(raw, Allowlist):
        return raw
    hosts: set[str] = set()
    networks: list[IPNetwork] = []
    for item in (raw or "").split(","):
        entry = item.strip()
        if not entry:
            continue
        try:
            networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
        except ValueError:
            hosts.add(_normal_host(entry))
    return Allowlist(frozenset(hosts), tuple(networks))


def _normal_host(host: str) -> str:
    return host.strip().strip("[]").rstrip(".").lower()


def blocked_reason(address: IPAddress) -> str | None:
    """Why an address may not receive webhooks (private, loopback, …), or None if public."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            inner = blocked_reason(embedded)
            return f"an IPv6 address embedding {embedded}, {inner}" if inner else None
    checks = (
        (address.is_loopback, "a loopback address"),
        (address.is_unspecified, "an unspecified address"),
        (address.is_link_local, "a link-local address"),
        (address.is_multicast, "a multicast address"),
        (address.version == 4 and address in _CGNAT, "a carrier-grade NAT address"),
        (address.is_reserved, "a reserved address"),
        (address.is_private, "a private address"),
        (not address.is_global, "not a public address"),
    )
    for hit, why in checks:
        if hit:
            return why
    return None


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address inside a mapped, 6to4, NAT64 or Teredo IPv6 address, if any."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    for prefix in _NAT64:
        if address in prefix:
            return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def split_url(url: str) -> tuple[SplitResult, str, int]:
    """Syntax checks: http(s), a host, no whitespace; returns the parts, host and port."""
    if not isinstance(url, str) or not url:
        raise UnsafeUrl("must be an http or https URL")
    if len(url) > MAX_URL_LENGTH:
        raise UnsafeUrl(f"must be at most {MAX_URL_LENGTH} characters")
    if any(ch.isspace() or ord(ch) < 32 or ord(ch) == 127 for ch in url):
        raise UnsafeUrl("must not contain whitespace or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UnsafeUrl(f"is not a valid URL ({exc})") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise UnsafeUrl("must use http or https")
    host = _normal_host(parts.hostname or "")
    if not host:
        raise UnsafeUrl("must name a host")
    return parts, host, port or (443 if scheme == "https" else 80)


def resolve(host: str, port: int, timeout: float = RESOLVE_TIMEOUT) -> list[IPAddress]:
    """Every address `host` resolves to (all getaddrinfo results); UnsafeUrl if none."""
    try:
        literal = ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        return [literal]
    future = _resolver.submit(socket.getaddrinfo, host, port, 0, socket.SOCK_STREAM)
    try:
        infos = future.result(timeout=timeout)
    except FutureTimeout:
        raise UnsafeUrl(f"host {host!r} did not resolve within {timeout:g}s") from None
    except (socket.gaierror, UnicodeError, OSError) as exc:
        raise UnsafeUrl(f"host {host!r} does not resolve ({exc})") from None
    addresses: list[IPAddress] = []
    for info in infos:
        # An IPv6 sockaddr may carry a zone id ("fe80::1%eth0"); judge the address itself.
        raw = str(info[4][0]).split("%", 1)[0]
        address = ipaddress.ip_address(raw)
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise UnsafeUrl(f"host {host!r} does not resolve")
    return addresses


def check_addresses(host: str, addresses: list[IPAddress], allowlist: Allowlist) -> None:
    """Refuse unless every address is public or allowlisted."""
    for address in addresses:
        why = blocked_reason(address)
        if why and not allowlist.allows_address(address):
            shown = host if _same_address(host, address) else f"{host} resolves to {address}, which"
            raise UnsafeUrl(f"{shown} is {why}; webhooks may only go to public addresses")


def _same_address(host: str, address: IPAddress) -> bool:
    try:
        return ipaddress.ip_address(host) == address
    except ValueError:
        return False


def vet_url(url: str, allowed_hosts: str | Allowlist | None) -> Target:
    """Check `url` and resolve its host now; the Target lists the addresses to connect to."""
    parts, host, port = split_url(url)
    allowlist = parse_allowlist(allowed_hosts)
    addresses = resolve(host, port)
    host_allowlisted = allowlist.allows_host(host)
    if not host_allowlisted:
        check_addresses(host, addresses, allowlist)
    return Target(
        url=url,
        scheme=parts.scheme.lower(),
        host=host,
        port=port,
        addresses=tuple(str(a) for a in addresses),
        host_allowlisted=host_allowlisted,
    )


def check_url(url: str, allowed_hosts: str | Allowlist | None) -> None:
    """Raise UnsafeUrl(reason) unless `url` may receive webhooks (resolves its host)."""
    vet_url(url, allowed_hosts)

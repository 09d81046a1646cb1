"""Where a service may connect to: stream hosts on an allow-list, and no private addresses.

Pure decisions (plus one resolver) for the two things users or TikTok's answers can point the
services at: a stream URL (and every redirect from it) and a proxy. The httpx side, which
applies them to every request, is ``shared.tiktok.guards``.

- A host is matched on label boundaries: ``tiktokcdn.com`` allows ``tiktokcdn.com`` and
  ``pull-flv-l1.tiktokcdn.com``, never ``evil-tiktokcdn.com``. Hosts are compared lower-cased,
  IDNA-encoded (A-labels), without brackets or a trailing dot. An IP address on the list
  allows that address only, never "suffixes" of it.
- A host that looks numeric but is no plain IP address (``2130706433``, ``127.1``,
  ``0x7f.0.0.1``) is refused outright: the C resolver reads those as IP addresses.
- Private means every address a request from inside the deployment must not reach: private,
  loopback, link-local, unspecified (``0.0.0.0``, ``::``), unique-local (``fc00::/7``),
  CGNAT/shared (``100.64.0.0/10``), multicast, reserved, documentation and benchmarking
  ranges; an IPv6 address that carries an IPv4 one (IPv4-mapped, IPv4-compatible, 6to4,
  NAT64 ``64:ff9b::/96``) is judged by the IPv4 address it carries.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Where TikTok serves live streams from (pull-flv-*, pull-hls-*, pull-f5-*, *.fcdn.eu.*):
# ../shared/docs/TIKTOK.md §2.0 and §2.3. Nothing broader (not tiktok.com, not image CDNs).
DEFAULT_STREAM_HOST_SUFFIXES: Final = ("tiktokcdn.com", "tiktokcdn-eu.com", "tiktokcdn-us.com")
STREAM_SCHEMES: Final = frozenset({"http", "https"})
RESOLVE_TIMEOUT_S: Final = 5.0

_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_COMPAT = ipaddress.IPv6Network("::/96")  # IPv4-compatible (deprecated), minus :: and ::1
_CGNAT = ipaddress.IPv4Network("100.64.0.0/10")


class Refusal(StrEnum):
    """Why a destination is refused (a log field; never shown to API users as such)."""

    SCHEME = "scheme"  # a stream URL that is not http(s)
    BAD_HOST = "bad_host"  # no host, or not a host name nor an IP address
    HOST_NOT_ALLOWED = "host_not_allowed"  # not on the allow-list
    PRIVATE_ADDRESS = "private_address"  # an IP address that is private (see above)
    RESOLVES_PRIVATE = "resolves_private"  # a name with a private address among its answers


def canonical_host(host: str) -> str:
    """``host`` as it is compared: lower case, A-labels, no brackets, no trailing dot.

    Raises:
        ValueError: not a host name nor an IP address, or a numeric-looking name.
    """
    text = host.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    ip = _parse_ip(text)
    if ip is not None:
        return str(ip)
    if not text.isascii():
        try:
            text = text.encode("idna").decode("ascii")
        except UnicodeError:
            msg = "not a valid international host name"
            raise ValueError(msg) from None
    text = text.lower().removesuffix(".")  # a fully qualified name is the same host
    labels = text.split(".")
    if len(text) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        msg = "not a host name (letters, digits and '-' in dot-separated labels)"
        raise ValueError(msg)
    if labels[-1].isdigit() or _inet_aton_reads(text):
        # 127.1, 2130706433 or 0x7f000001 are IP addresses to the C resolver.
        msg = "a numeric host that is not a plain IP address"
        raise ValueError(msg)
    return text


def _inet_aton_reads(text: str) -> bool:
    try:
        socket.inet_aton(text)
    except OSError:
        return False
    return True


def ip_of(host: str) -> IPAddress | None:
    """The IP address ``host`` (canonical, or bracketed IPv6) is, or None for a name."""
    text = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    return _parse_ip(text)


def _parse_ip(text: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def is_private(ip: IPAddress) -> bool:
    """True for an address a request must not reach (see the module's docstring)."""
    if isinstance(ip, ipaddress.IPv6Address):
        carried = _carried_ipv4(ip)
        if carried is not None:
            return is_private(carried)
    if isinstance(ip, ipaddress.IPv4Address) and ip in _CGNAT:
        return True
    return (
        not ip.is_global
        or ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_unspecified
        or ip.is_multicast
        or ip.is_reserved
    )


def _carried_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in _NAT64 or (ip in _COMPAT and int(ip) > 1):
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def parse_host_list(entries: Iterable[str]) -> tuple[str, ...]:
    """Allow-list entries, canonical and de-duplicated (order kept).

    Raises:
        ValueError: naming the first bad entry, or for an empty list.
    """
    out: list[str] = []
    for entry in entries:
        bare = entry.strip().strip("[]")
        if "/" in entry or (":" in bare and _parse_ip(bare) is None):
            msg = f"{entry!r} is not a host name or an IP address (no scheme, port or path)"
            raise ValueError(msg)
        if entry.strip().startswith(("*", ".")):
            msg = f"{entry!r}: write the domain itself; its subdomains are allowed with it"
            raise ValueError(msg)
        try:
            host = canonical_host(entry)
        except ValueError as exc:
            msg = f"{entry!r}: {exc}"
            raise ValueError(msg) from None
        if host not in out:
            out.append(host)
    if not out:
        msg = "the list is empty: name at least one host"
        raise ValueError(msg)
    return tuple(out)


def host_allowed(host: str, allowed: Iterable[str]) -> bool:
    """``host`` (canonical) is an entry of ``allowed`` (canonical) or a subdomain of a name
    entry; an IP address only ever matches itself."""
    if ip_of(host) is not None:
        return host in allowed
    return any(
        host == entry or (ip_of(entry) is None and host.endswith("." + entry)) for entry in allowed
    )


@dataclass(frozen=True, slots=True)
class StreamPolicy:
    """Where stream GETs (and their redirects) may go: ``suffixes`` (canonical, see
    :func:`parse_host_list`), and private addresses only when ``allow_private``."""

    suffixes: tuple[str, ...] = DEFAULT_STREAM_HOST_SUFFIXES
    allow_private: bool = False

    def refusal(self, scheme: str, host: str) -> Refusal | None:
        """What is wrong with a GET of ``scheme://host``, judged without resolving."""
        if scheme.lower() not in STREAM_SCHEMES:
            return Refusal.SCHEME
        try:
            canonical = canonical_host(host)
        except ValueError:
            return Refusal.BAD_HOST
        if not host_allowed(canonical, self.suffixes):
            return Refusal.HOST_NOT_ALLOWED
        ip = ip_of(canonical)
        if ip is not None and not self.allow_private and is_private(ip):
            return Refusal.PRIVATE_ADDRESS
        return None

    def address_refusal(self, addresses: Iterable[IPAddress]) -> Refusal | None:
        """What is wrong with connecting to a name that resolved to ``addresses``: one
        private address among them is enough (the connection may pick any of them)."""
        if self.allow_private:
            return None
        return Refusal.RESOLVES_PRIVATE if any(is_private(a) for a in addresses) else None


def proxy_refusal(host: str, *, allow_private: bool) -> Refusal | None:
    """What is wrong with a proxy on ``host``, judged without resolving."""
    try:
        canonical = canonical_host(host)
    except ValueError:
        return Refusal.BAD_HOST
    ip = ip_of(canonical)
    if ip is not None and not allow_private and is_private(ip):
        return Refusal.PRIVATE_ADDRESS
    return None


async def resolve(host: str, port: int, *, timeout: float = RESOLVE_TIMEOUT_S) -> list[IPAddress]:
    """Every address ``host`` resolves to, as a connection to it would resolve it.

    Raises:
        OSError: the name does not resolve (socket.gaierror).
        TimeoutError: no answer within ``timeout``.
    """
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(timeout):
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    found: list[IPAddress] = []
    for *_, sockaddr in infos:
        ip = _parse_ip(str(sockaddr[0]).split("%", 1)[0])  # fe80::1%eth0: the scope goes
        if ip is not None and ip not in found:
            found.append(ip)
    return found

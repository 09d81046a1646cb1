"""What the API accepts in a field: room ids, TikTok targets, proxies, cookies, templates, times."""

from __future__ import annotations

import ipaddress
import re
from datetime import UTC, datetime
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import AfterValidator, BeforeValidator, Field, WithJsonSchema

from shared.egress import canonical_host, ip_of, is_private, resolve
from shared.naming import validate_template

PROXY_SCHEMES = frozenset({"http", "https", "socks5", "socks5h"})
MAX_URL = 300
# A proxy's name is resolved for at most this long while a request waits for its answer.
PROXY_RESOLVE_TIMEOUT_S = 2.0
PRIVATE_PROXY = (
    "proxy must not be on a private, loopback or link-local address "
    "(this deployment does not allow it: ALLOW_PRIVATE_PROXIES)"
)
ROOM_ID_PATTERN = r"^[0-9]{15,20}$"
COOKIES_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}(/[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}){0,7}$"
_ROOM_ID = re.compile(ROOM_ID_PATTERN)
# TikTok usernames: letters, digits, '_' and '.', at most 24, never starting or ending in '.'.
_NAME = r"[A-Za-z0-9_](?:[A-Za-z0-9_.]{0,22}[A-Za-z0-9_])?"
_USER = re.compile(rf"@?{_NAME}")
# A query as TikTok's share links carry (?lang=en&...): plain, percent-encoded characters.
_QUERY = r"(?:\?[A-Za-z0-9._~%&=+-]{0,256})?"
_TIKTOK_URL = re.compile(
    # Profile, live, share/live/<room id> and /t/<code> on www, m and the bare host.
    rf"https://(?i:(?:www\.|m\.)?tiktok\.com)"
    rf"/(?:@{_NAME}(?:/live)?|share/live/[0-9]{{15,20}}|t/[A-Za-z0-9]{{1,32}})/?{_QUERY}"
    # Short links on vm.
    rf"|https://(?i:vm\.tiktok\.com)/[A-Za-z0-9]{{1,32}}/?{_QUERY}"
)
_COOKIES = re.compile(COOKIES_PATTERN)
_ISO_DATETIME = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}"
    r"(?:[Tt ][0-9]{2}:[0-9]{2}(?::[0-9]{2}(?:\.[0-9]{1,9})?)?(?:[Zz]|[+-][0-9]{2}:?[0-9]{2})?)?"
)
_PLACEHOLDER = re.compile(r"\{[A-Za-z_]+\}")
_TEMPLATE_PUNCT = frozenset(" -_.,+=@()[]/")
_HOST_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOSTNAME = re.compile(rf"{_HOST_LABEL}(?:\.{_HOST_LABEL})*\.?")
# RFC 3986 userinfo: unreserved, percent-encoded and sub-delims; it is never seen by a shell.
_USERINFO = re.compile(r"[A-Za-z0-9._~%!$&'()*+,;=:-]*")


def check_room_id(value: str) -> str:
    """``value`` if it is a room id; ValueError otherwise."""
    if not _ROOM_ID.fullmatch(value):
        msg = "room_id must be 15 to 20 digits"
        raise ValueError(msg)
    return value


def check_target_url(value: str) -> str:
    """An https TikTok live, profile or share link (www, m, vm hosts) or an @user name;
    nothing else reaches TikTok. A bare user name comes back as ``@user``."""
    if _USER.fullmatch(value):
        return value if value.startswith("@") else f"@{value}"
    if len(value) > MAX_URL or not _TIKTOK_URL.fullmatch(value):
        msg = (
            "url must be @user (letters, digits, '_' and '.', at most 24) or an https URL "
            "https://www.tiktok.com/@user[/live], https://m.tiktok.com/@user[/live] or "
            "https://vm.tiktok.com/<code>"
        )
        raise ValueError(msg)
    return value


def check_proxy(value: str) -> str:
    """``scheme://[user:password@]host:port`` with scheme http, https, socks5 or socks5h."""
    shape = (
        "proxy must be http://, https:// or socks5:// with a host and a port, "
        "like http://user:pass@host:8080"
    )
    if len(value) > 500 or not value.isascii() or not value.isprintable() or " " in value:
        raise ValueError(shape)
    parts = urlsplit(value)
    try:
        port = parts.port
    except ValueError:
        port = None
    if parts.scheme not in PROXY_SCHEMES or not parts.hostname or not port:
        raise ValueError(shape)
    if not (_is_ip(parts.hostname) or _HOSTNAME.fullmatch(parts.hostname)) or not _plain(
        parts.hostname
    ):
        msg = "proxy host must be a host name or an IP address"
        raise ValueError(msg)
    if not _USERINFO.fullmatch(parts.netloc.rpartition("@")[0]):
        msg = "proxy user and password must be percent-encoded"
        raise ValueError(msg)
    if parts.path not in ("", "/") or parts.query or parts.fragment or "?" in value or "#" in value:
        msg = "proxy must be only scheme, host and port (no path, query or fragment)"
        raise ValueError(msg)
    return value


def _plain(host: str) -> bool:
    """Not a numeric form a resolver reads as an address (2130706433, 127.1, 0x7f000001)."""
    try:
        canonical_host(host)
    except ValueError:
        return False
    return True


async def check_proxy_destination(
    value: str, *, allow_private: bool, timeout: float = PROXY_RESOLVE_TIMEOUT_S
) -> None:
    """Refuse a proxy (already :func:`check_proxy`'d) on a private, loopback or link-local
    address unless ``allow_private`` (ALLOW_PRIVATE_PROXIES): ValueError, worded like the
    other field errors.

    A literal address is judged as it is; a name is resolved, within ``timeout`` seconds,
    and every address it has must be public. A name that does not resolve here (or not in
    time) is accepted: the gateway need not share the recorders' DNS (a proxy known only
    inside their network), and the recorders and the scheduler check the proxy again,
    resolving it themselves, before anything goes through it.
    """
    if allow_private:
        return
    host = urlsplit(value).hostname or ""
    ip = ip_of(host)
    if ip is not None:
        addresses = [ip]
    else:
        try:
            addresses = await resolve(host, 0, timeout=timeout)
        except OSError:  # TimeoutError included
            return
    if any(is_private(a) for a in addresses):
        raise ValueError(PRIVATE_PROXY)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def check_cookies_name(value: str) -> str:
    """A file in COOKIES_DIR: a name, or a relative path of plain names (no '..')."""
    if len(value) > 255 or not _COOKIES.fullmatch(value):
        msg = (
            "cookies must name a file in the cookies folder (COOKIES_DIR): letters, digits, "
            "'_', '-' and '.', '/' between folders; not absolute, no '..'"
        )
        raise ValueError(msg)
    return value


def _iso_text(value: object) -> object:
    """Only ISO 8601 text: pydantic alone also reads numbers (``0``) as Unix timestamps."""
    if isinstance(value, str) and _ISO_DATETIME.fullmatch(value):
        return value
    if isinstance(value, datetime):
        return value
    msg = "must be an ISO 8601 date-time such as 2026-03-01T12:00:00Z (no offset = UTC)"
    raise ValueError(msg)


def _in_utc(value: datetime) -> datetime:
    """The same instant in UTC (naive means UTC); ValueError when it falls outside the years
    a datetime can hold, as 0001-01-01T00:00:00+14:00 does."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError:
        msg = "must fall between years 1 and 9999 once in UTC"
        raise ValueError(msg) from None


def _template(value: str) -> str:
    """A safe template (see shared.naming), whose literal text is also plain: no shell or
    glob characters in a file name, even though no shell ever sees one."""
    validate_template(value)
    literal = _PLACEHOLDER.sub("", value)
    if not all(c.isalnum() or c in _TEMPLATE_PUNCT for c in literal):
        msg = (
            "output_template may hold, besides {placeholders}, only letters, digits, "
            f"spaces and {' '.join(sorted(_TEMPLATE_PUNCT - {' '}))}"
        )
        raise ValueError(msg)
    return value


RoomId = Annotated[
    str,
    AfterValidator(check_room_id),
    WithJsonSchema({"type": "string", "pattern": ROOM_ID_PATTERN}),
]
TargetUrl = Annotated[str, AfterValidator(check_target_url)]
ProxyUrl = Annotated[str, AfterValidator(check_proxy)]
CookiesName = Annotated[
    str,
    AfterValidator(check_cookies_name),
    WithJsonSchema({"type": "string", "pattern": COOKIES_PATTERN, "maxLength": 255}),
]
OutputTemplate = Annotated[str, Field(max_length=300), AfterValidator(_template)]
IsoDatetime = Annotated[
    datetime,
    BeforeValidator(_iso_text),
    AfterValidator(_in_utc),
    WithJsonSchema({"type": "string", "format": "date-time"}),
]

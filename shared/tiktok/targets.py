"""Classify what a user asked to record: a room id, a username, a TikTok URL or a short link."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

TargetKind = Literal["room_id", "user", "short_link"]

# Room ids are 19-digit int64 today; 15-20 leaves room either way. A shorter all-digit string
# is a username (TikTok allows those); a username of 15-20 digits needs its '@'.
_ROOM_ID_RE = re.compile(r"\d{15,20}")
# TikTok unique ids: letters, digits, '_' and '.', at most 24 characters.
_UNIQUE_ID_RE = re.compile(r"[A-Za-z0-9_.]{1,24}")
TIKTOK_HOST = "tiktok.com"
# Hosts that only ever redirect (vm/vt short links); www.tiktok.com/t/<code> is one too.
SHORT_LINK_HOSTS = frozenset({"vm.tiktok.com", "vt.tiktok.com"})


@dataclass(frozen=True, slots=True)
class Target:
    """A parsed target: ``value`` is a room id, a unique id (no '@') or a short-link URL."""

    kind: TargetKind
    value: str


def is_room_id(value: str) -> bool:
    return _ROOM_ID_RE.fullmatch(value) is not None


def is_tiktok_host(host: str | None) -> bool:
    """tiktok.com or one of its subdomains (``tiktok.com.evil.example`` is not)."""
    if not host:
        return False
    host = host.lower().rstrip(".")
    return host == TIKTOK_HOST or host.endswith("." + TIKTOK_HOST)


def parse_target(target: str) -> Target:
    """Classify ``target``; raise ValueError for anything that is not a TikTok target.

    Accepted: a 15-20 digit room id; ``@user`` or ``user``; URLs on tiktok.com hosts
    (``/@user``, ``/@user/live``, ``/@user/video/<id>``, ``/share/live/<room id>``; with or
    without scheme); short links ``vm.tiktok.com/<code>``, ``vt.tiktok.com/<code>`` and
    ``www.tiktok.com/t/<code>``, which the client resolves by following redirects.
    """
    text = target.strip()
    if not text:
        msg = "empty target"
        raise ValueError(msg)
    if is_room_id(text):
        return Target("room_id", text)
    if "/" in text or ":" in text:
        return parse_url(text)
    return Target("user", unique_id_of(text))


def parse_url(url: str) -> Target:
    """Classify a TikTok URL (see parse_target); other hosts and schemes raise ValueError."""
    if "://" not in url:
        url = "https://" + url  # people paste "www.tiktok.com/@user/live"
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:
        msg = "not a valid URL"
        raise ValueError(msg) from None
    if parts.scheme not in ("http", "https") or not is_tiktok_host(host):
        msg = f"not a TikTok URL: host {host!r}"
        raise ValueError(msg)
    segments = [s for s in parts.path.split("/") if s]
    if segments and segments[0].startswith("@"):
        return Target("user", unique_id_of(segments[0]))
    if host in SHORT_LINK_HOSTS or (segments[:1] == ["t"] and len(segments) == 2):
        if not segments:
            msg = "short link without a code"
            raise ValueError(msg)
        return Target("short_link", f"https://{host}{parts.path}")
    if len(segments) == 3 and segments[:2] == ["share", "live"] and is_room_id(segments[2]):
        return Target("room_id", segments[2])
    msg = "TikTok URL names no user or room (expected /@user or /@user/live)"
    raise ValueError(msg)


def unique_id_of(value: str) -> str:
    """``value`` without its '@', checked to be a TikTok username (ValueError otherwise)."""
    name = value.removeprefix("@")
    if not _UNIQUE_ID_RE.fullmatch(name):
        msg = f"not a TikTok username: {value!r}"
        raise ValueError(msg)
    return name

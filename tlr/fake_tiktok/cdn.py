"""The fake CDN's URL scheme: qualities and their suffixes, URL signing, main and backup paths."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

FLV_SUFFIXES = ("", "_uhd5", "_hd5", "_sd5", "_ld5")


@dataclass(frozen=True)
class Quality:
    """One `sdk_key` of stream_data and the matching CDN suffix / legacy flv_pull_url key."""

    sdk_key: str
    suffix: str
    name: str
    level: int
    legacy_key: str | None
    resolution: str
    vbitrate: int
    above_720p: bool


# Nominal values from real captures. Every suffix serves the room's single rendition, so only
# `origin` describes the actual media; the others are there for shape and selection logic.
QUALITIES = (
    Quality("origin", "", "Original", 10, None, "", 0, True),
    Quality("uhd", "_uhd5", "1080p", 6, "FULL_HD1", "1920x1080", 4_000_000, True),
    Quality("hd", "_hd5", "720p", 3, "HD1", "1280x720", 1_600_000, False),
    Quality("sd", "_sd5", "540p", 2, "SD2", "960x540", 1_000_000, False),
    Quality("ld", "_ld5", "360p", 1, "SD1", "640x360", 600_000, False),
)
# The legacy map is partial in the wild: FULL_HD1 is usually missing.
LEGACY_KEYS = ("HD1", "SD2", "SD1")
CDN_PREFIX = "/game/"
BACKUP_CDN_PREFIX = "/bk/game/"  # the fake's second CDN; real backups sit on another host


def stream_sign(sid: str, suffix: str, expire: int) -> str:
    """The `sign` query value this fake issues (and checks) for a stream URL."""
    return hashlib.md5(f"{sid}{suffix}{expire}".encode(), usedforsecurity=False).hexdigest()


@dataclass(frozen=True)
class UrlMaker:
    """Absolute stream URLs pointing back at this server, shaped like the real CDN's.

    `with_backup`: stream_data qualities also list a `backup` (scenario `backup_urls`).
    """

    base_url: str
    expire: int
    with_backup: bool = False

    def _query(self, sid: str, suffix: str) -> str:
        return f"expire={self.expire}&sign={stream_sign(sid, suffix, self.expire)}"

    def _cdn(self, backup: bool) -> str:
        return self.base_url + (BACKUP_CDN_PREFIX if backup else CDN_PREFIX)

    def flv(self, sid: str, suffix: str = "", *, backup: bool = False) -> str:
        return f"{self._cdn(backup)}stream-{sid}{suffix}.flv?{self._query(sid, suffix)}"

    def hls(self, sid: str, suffix: str = "", *, backup: bool = False) -> str:
        # HLS is not served by the fake (404); the URL exists so response shapes are complete.
        query = self._query(sid, suffix)
        return f"{self._cdn(backup)}stream-{sid}{suffix}/playlist.m3u8?{query}"


def listed_qualities(cap_720: bool) -> list[Quality]:
    return [q for q in QUALITIES if not (cap_720 and q.above_720p)]


def top_quality(cap_720: bool) -> Quality:
    """The best listed quality: its main URL is also rtmp_pull_url (and dies on `dead_top_rung`)."""
    return listed_qualities(cap_720)[0]

"""What the TikTok client returns: a resolved room reference, room details and stream variants."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

# Room status codes of webcast/room/info (TIKTOK.md §2.2).
STATUS_LIVE = 2
STATUS_PAUSED = 3
STATUS_ENDED = 4

# Where a stream URL was listed: stream_data's main or backup CDN, or the older flv_pull_url.
StreamSource = Literal["main", "backup", "legacy", "unknown"]


@dataclass(frozen=True, slots=True)
class RoomRef:
    """The outcome of resolving a target. Room ids are always strings (int64 loses precision
    in JSON clients). ``room_id`` may be a stale id of a finished live, or None when the user
    was never live: only ``room_info`` says whether it is live now."""

    room_id: str | None
    unique_id: str | None


@dataclass(frozen=True, slots=True)
class StreamVariant:
    """One FLV rendition. ``quality`` is an sdk_key (origin, uhd_60, hd, ..., ao); variants
    from the legacy ``flv_pull_url`` map are named after the equivalent rung (uhd, hd, sd, ld).
    ``backup_url`` is the same rendition on another CDN (``stream_data``'s ``backup``)."""

    quality: str
    flv_url: str
    resolution: str | None = None
    vcodec: str | None = None
    backup_url: str | None = None


@dataclass(frozen=True, slots=True)
class StreamCandidate:
    """One URL the recorder may pull, in the order it tries them (see quality.candidates).

    ``source`` says where it was listed: ``main``, ``backup`` (another CDN) or ``legacy``
    (the older ``flv_pull_url`` map).
    """

    quality: str
    url: str
    source: StreamSource = "main"


@dataclass(frozen=True, slots=True)
class RoomInfo:
    """A parsed ``webcast/room/info`` answer.

    ``streams`` is keyed by sdk_key from ``live_core_sdk_data``; ``legacy_flv`` is keyed by the
    legacy names (FULL_HD1, HD1, SD2, SD1). An ended room may still list stale URLs (they 404).
    """

    room_id: str
    status: int
    title: str = ""
    unique_id: str | None = None
    nickname: str | None = None
    streams: dict[str, StreamVariant] = field(default_factory=dict)
    legacy_flv: dict[str, StreamVariant] = field(default_factory=dict)
    age_restricted: bool = False
    start_time: int | None = None  # unix seconds the live started (data.start_time)
    source: str = "room_info"  # or "live_page" / "user_room" when room/info was refused

    @property
    def is_live(self) -> bool:
        return self.status == STATUS_LIVE

    @property
    def is_paused(self) -> bool:
        """Paused by the host: not ended, the stream comes back (do not finalise)."""
        return self.status == STATUS_PAUSED

    @property
    def has_ended(self) -> bool:
        return self.status == STATUS_ENDED

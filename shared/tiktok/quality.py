"""Order a room's stream URLs for recording: preferred rung first, backups and older maps after."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, get_args

from shared.tiktok.errors import LiveOffline, UnexpectedResponse
from shared.tiktok.models import RoomInfo, StreamCandidate, StreamSource, StreamVariant

# The qualities a request may prefer (the API, the client CLI), best first.
Quality = Literal["origin", "uhd", "hd", "sd", "ld"]
QUALITIES: tuple[Quality, ...] = get_args(Quality)
DEFAULT_PREFERENCE: tuple[str, ...] = QUALITIES
AUDIO_ONLY = "ao"

# The whole ladder, best first, used once the preference is exhausted. A 60 fps key sits just
# above its 30 fps rung: same resolution, higher frame rate and bitrate.
_LADDER = ("origin", "uhd_60", "uhd", "hd_60", "hd", "sd", "ld")
# Legacy flv_pull_url keys, best first, and the rung each one corresponds to.
LEGACY_RUNGS: dict[str, str] = {"FULL_HD1": "uhd", "HD1": "hd", "SD2": "sd", "SD1": "ld"}


def rung(sdk_key: str) -> str:
    """The ladder rung of an sdk_key: ``uhd_60`` counts as ``uhd``, ``hd_60`` as ``hd``."""
    return sdk_key.removesuffix("_60")


def choose_stream(info: RoomInfo, preference: Sequence[str] = DEFAULT_PREFERENCE) -> StreamVariant:
    """The variant to record first: the head of :func:`ranked_variants`."""
    return ranked_variants(info, preference)[0]


def stream_candidates(
    info: RoomInfo, preference: Sequence[str] = DEFAULT_PREFERENCE
) -> list[StreamCandidate]:
    """Every URL worth trying, in order: each ranked variant's main URL, then its backup.

    A listed URL may be dead while others play (StreamCap #120): the recorder tries them in
    turn and skips, for that connection, one that answers 4xx or closes before any media.
    A URL listed twice (the legacy map repeats stream_data's) is tried once.
    """
    seen: set[str] = set()
    found: list[StreamCandidate] = []
    for variant, source in _ranked(info, preference):
        urls: tuple[tuple[str | None, StreamSource], ...] = (
            (variant.flv_url, source),
            (variant.backup_url, "backup"),
        )
        for url, kind in urls:
            if url and url not in seen:
                seen.add(url)
                found.append(StreamCandidate(variant.quality, url, kind))
    return found


def ranked_variants(
    info: RoomInfo, preference: Sequence[str] = DEFAULT_PREFERENCE
) -> list[StreamVariant]:
    """The room's variants, best choice first.

    Order: stream_data keys in ``preference`` order (an exact key like ``hd_60`` matches only
    itself; a rung like ``hd`` matches ``hd_60`` before ``hd``); then the legacy
    ``flv_pull_url`` (FULL_HD1, HD1, SD2, SD1 as uhd, hd, sd, ld) in the same order; then
    whatever video is left, best first; audio only (``ao``) last, even if ``preference``
    names it.

    Raises LiveOffline for an ended room (its stale URLs answer 404) and UnexpectedResponse
    for a room without any URL. A paused room's URLs are returned: they work again on resume.
    """
    return [variant for variant, _ in _ranked(info, preference)]


def _ranked(info: RoomInfo, preference: Sequence[str]) -> list[tuple[StreamVariant, StreamSource]]:
    if info.has_ended:
        raise LiveOffline(target=f"room {info.room_id}", status=info.status)
    video = {key: v for key, v in info.streams.items() if key != AUDIO_ONLY and v.flv_url}
    legacy = {key: v for key, v in info.legacy_flv.items() if v.flv_url}
    ranked: list[tuple[StreamVariant, StreamSource]] = []

    def add(variant: StreamVariant | None, source: StreamSource) -> None:
        if variant is not None and all(variant is not v for v, _ in ranked):
            ranked.append((variant, source))

    for wanted in preference:
        add(_from_streams(video, wanted), "main")
    for wanted in preference:
        add(_from_legacy(legacy, wanted), "legacy")
    for key in (*_LADDER, *sorted(set(video) - set(_LADDER))):
        add(video.get(key), "main")
    for key in (*LEGACY_RUNGS, *sorted(set(legacy) - set(LEGACY_RUNGS))):
        add(legacy.get(key), "legacy")
    audio = info.streams.get(AUDIO_ONLY)
    if audio is not None and audio.flv_url:
        add(audio, "main")
    if not ranked:
        detail = f"room {info.room_id} (status {info.status}) lists no FLV URL"
        raise UnexpectedResponse(endpoint="room_info", detail=detail)
    return ranked


def _from_streams(video: dict[str, StreamVariant], wanted: str) -> StreamVariant | None:
    if wanted == AUDIO_ONLY:
        return None  # never by preference: audio only is the last resort
    if wanted in video and wanted != rung(wanted):
        return video[wanted]  # an exact 60 fps key
    for key in (f"{wanted}_60", wanted):
        if key in video:
            return video[key]
    return None


def _from_legacy(legacy: dict[str, StreamVariant], wanted: str) -> StreamVariant | None:
    for key, legacy_rung in LEGACY_RUNGS.items():
        if legacy_rung == rung(wanted) and key in legacy:
            return legacy[key]
    return None

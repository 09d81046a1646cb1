"""The production TikTok LIVE client: resolve targets, check rooms, pick streams, load cookies."""

from __future__ import annotations

from shared.tiktok.client import CHECK_ALIVE_BATCH, DEFAULT_USER_AGENT, TikTokClient
from shared.tiktok.cookies import CookiesError, load_cookies
from shared.tiktok.errors import (
    AgeRestricted,
    CountryBlocked,
    LiveOffline,
    NetworkTimeout,
    ProxyNotAllowed,
    StreamHostNotAllowed,
    TikTokError,
    UnexpectedResponse,
    UserNotFound,
    WafBlocked,
)
from shared.tiktok.models import RoomInfo, RoomRef, StreamCandidate, StreamVariant
from shared.tiktok.parsing import PageState
from shared.tiktok.quality import DEFAULT_PREFERENCE, choose_stream, stream_candidates
from shared.tiktok.signer import Signer
from shared.tiktok.targets import Target, parse_target

__all__ = [
    "CHECK_ALIVE_BATCH",
    "DEFAULT_PREFERENCE",
    "DEFAULT_USER_AGENT",
    "AgeRestricted",
    "CookiesError",
    "CountryBlocked",
    "LiveOffline",
    "NetworkTimeout",
    "PageState",
    "ProxyNotAllowed",
    "RoomInfo",
    "RoomRef",
    "Signer",
    "StreamCandidate",
    "StreamHostNotAllowed",
    "StreamVariant",
    "Target",
    "TikTokClient",
    "TikTokError",
    "UnexpectedResponse",
    "UserNotFound",
    "WafBlocked",
    "choose_stream",
    "load_cookies",
    "parse_target",
    "stream_candidates",
]

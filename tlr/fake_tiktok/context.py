"""The per-application context shared by the route modules: state, media and pacing settings."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from tlr.fake_tiktok.delivery import Wire
from tlr.fake_tiktok.media import MediaLibrary
from tlr.fake_tiktok.state import FakeState


@dataclass
class FakeContext:
    """What handlers need; `speed` may be changed while running (affects new connections);
    `wire` sends the FLV of every connection in its delivery mode."""

    state: FakeState
    media: MediaLibrary
    speed: float
    tick_s: float
    wire: Wire
    public_base_url: str | None = None


CTX = web.AppKey("fake_tiktok_ctx", FakeContext)


def get_ctx(request: web.Request) -> FakeContext:
    return request.app[CTX]

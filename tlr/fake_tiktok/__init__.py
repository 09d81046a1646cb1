"""Fake TikTok (web pages, webcast API and FLV CDN) on one local port, for tests and demos.

Typical use in a test::

    async with start_fake_tiktok(media_dir=tmp_dir, speed=10) as fake:
        await fake.create_user("alice")
        room_id, stream_id = await fake.go_live("alice", profile="h264_720p")
        ...  # point TIKTOK_WEB_BASE and TIKTOK_WEBCAST_BASE at fake.base_url

or request the `fake_tiktok` fixture from `tests.fake_tiktok_plugin`. Standalone:
``python -m tlr.fake_tiktok --port 8090``. The protocol shapes follow docs/TIKTOK.md §2 and §5.
"""

from tlr.fake_tiktok.control import ControlError
from tlr.fake_tiktok.media import DEFAULT_PROFILE, MediaLibrary, Profile, parse_profile
from tlr.fake_tiktok.server import FakeTikTok, LiveHandle, start_fake_tiktok
from tlr.fake_tiktok.state import HARSH, KIND, FaultMode, RoomStatus

__all__ = [
    "DEFAULT_PROFILE",
    "HARSH",
    "KIND",
    "ControlError",
    "FakeTikTok",
    "FaultMode",
    "LiveHandle",
    "MediaLibrary",
    "Profile",
    "RoomStatus",
    "parse_profile",
    "start_fake_tiktok",
]

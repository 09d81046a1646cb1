"""Choosing a stream: the quality ladder, the legacy flv_pull_url fallback, candidates in order."""

from __future__ import annotations

import json

import pytest

from shared.tiktok import (
    LiveOffline,
    RoomInfo,
    StreamVariant,
    UnexpectedResponse,
    choose_stream,
    stream_candidates,
)
from shared.tiktok.parsing import parse_room_info, parse_stream_data
from tests.unit.tiktok_parsing.helpers import CDN, ROOM, _sdk, body, live_body

# --- quality ----------------------------------------------------------------------------------


def v(quality: str) -> StreamVariant:
    return StreamVariant(quality, f"https://cdn.example/{quality}.flv")


def room(streams: list[str], legacy: dict[str, str] | None = None, status: int = 2) -> RoomInfo:
    return RoomInfo(
        room_id=ROOM,
        status=status,
        streams={key: v(key) for key in streams},
        legacy_flv={key: v(rung) for key, rung in (legacy or {}).items()},
    )


@pytest.mark.parametrize(
    ("streams", "preference", "expected"),
    [
        (["origin", "uhd_60", "hd", "sd"], ("origin", "uhd", "hd", "sd", "ld"), "origin"),
        (["uhd_60", "hd_60", "hd", "sd"], ("origin", "uhd", "hd", "sd", "ld"), "uhd_60"),
        (["uhd", "hd_60", "hd", "sd"], ("hd", "sd"), "hd_60"),  # 60 fps first within a rung
        (["hd_60", "hd", "sd"], ("hd_60",), "hd_60"),
        (["hd", "sd", "ld"], ("sd", "hd"), "sd"),
        (["ld"], ("origin",), "ld"),  # preference exhausted: best video left
        (["uhd", "ld"], ("sd",), "uhd"),
        (["ao", "ld"], ("ao", "origin"), "ld"),  # audio only is never picked by preference
        (["ao"], ("origin",), "ao"),  # ... only when nothing else exists
    ],
)
def test_quality_ladder(streams: list[str], preference: tuple[str, ...], expected: str) -> None:
    assert choose_stream(room(streams), preference).quality == expected


def test_legacy_flv_pull_url_fallback() -> None:
    legacy = {"HD1": "hd", "SD2": "sd", "SD1": "ld"}
    assert choose_stream(room([], legacy)).quality == "hd"
    assert choose_stream(room([], legacy), ("sd", "ld")).quality == "sd"
    full = {"FULL_HD1": "uhd", **legacy}
    assert choose_stream(room([], full)).quality == "uhd"
    # stream_data wins over legacy whenever one of its keys is preferred
    assert choose_stream(room(["sd"], full)).quality == "sd"
    # legacy video beats stream_data audio
    assert choose_stream(room(["ao"], {"SD1": "ld"})).quality == "ld"


def test_no_stream_at_all() -> None:
    with pytest.raises(UnexpectedResponse):
        choose_stream(room([]))
    with pytest.raises(LiveOffline):
        choose_stream(room(["origin"], status=4))  # stale URLs of an ended room 404
    assert choose_stream(room(["sd"], status=3)).quality == "sd"  # paused comes back


def test_choose_stream_on_a_parsed_live_body() -> None:
    info = parse_room_info(body(live_body()), ROOM)
    assert choose_stream(info).quality == "origin"
    assert choose_stream(info, ("hd",)).flv_url.startswith(f"{CDN}_hd560.flv?")


# --- stream candidates ------------------------------------------------------------------------


def test_stream_data_backup_urls_are_parsed() -> None:
    data = {
        "data": {
            "hd": {
                "main": {"flv": f"{CDN}_hd5.flv?a=1", "sdk_params": _sdk("h264", 1, "1280x720")},
                "backup": {"flv": "https://pull-f5-va01.tiktokcdn.com/game/s_hd5.flv?a=1"},
            },
            "sd": {"main": {"flv": ""}, "backup": {"flv": "https://pull-f5/s_sd5.flv"}},
        }
    }
    streams = parse_stream_data(
        {"live_core_sdk_data": {"pull_data": {"stream_data": json.dumps(data)}}}
    )
    assert streams["hd"].backup_url == "https://pull-f5-va01.tiktokcdn.com/game/s_hd5.flv?a=1"
    assert streams["hd"].resolution == "1280x720"
    # a rung listed only on its backup CDN is still a rung
    assert streams["sd"].flv_url == "https://pull-f5/s_sd5.flv"


def test_candidates_walk_main_backup_then_lower_rungs_then_the_legacy_map() -> None:
    info = RoomInfo(
        room_id=ROOM,
        status=2,
        streams={
            "origin": StreamVariant("origin", "https://a/o.flv", backup_url="https://b/o.flv"),
            "hd": StreamVariant("hd", "https://a/hd.flv"),
            "ao": StreamVariant("ao", "https://a/o.flv?only_audio=1"),
        },
        legacy_flv={
            "HD1": StreamVariant("hd", "https://a/hd.flv"),  # the same URL: tried once
            "SD1": StreamVariant("ld", "https://a/ld-legacy.flv"),
        },
    )
    found = [(c.quality, c.url, c.source) for c in stream_candidates(info)]
    assert found == [
        ("origin", "https://a/o.flv", "main"),
        ("origin", "https://b/o.flv", "backup"),
        ("hd", "https://a/hd.flv", "main"),
        ("ld", "https://a/ld-legacy.flv", "legacy"),
        ("ao", "https://a/o.flv?only_audio=1", "main"),
    ]
    asked_hd = [c.quality for c in stream_candidates(info, ("hd",))]
    assert asked_hd[:1] == ["hd"]
    assert choose_stream(info, ("hd",)).flv_url == "https://a/hd.flv"

"""room/info and check_alive bodies parse to a RoomInfo or liveness, else the right TikTokError."""

from __future__ import annotations

import pytest

from shared.errors import ErrorCode
from shared.tiktok import (
    AgeRestricted,
    StreamVariant,
    UnexpectedResponse,
    UserNotFound,
    WafBlocked,
    choose_stream,
)
from shared.tiktok.parsing import parse_check_alive, parse_room_info
from tests.unit.tiktok_parsing.helpers import (
    CDN,
    OFFLINE_BODY,
    OTHER_ROOM,
    PARAMS_ERROR_BODY,
    PRIVATE_BODY,
    RESTRICTED_BODY,
    ROOM,
    WAF_PAGE,
    body,
    live_body,
)

# --- room/info ------------------------------------------------------------------------------


def test_live_room_info_decodes_the_stream_data_string() -> None:
    info = parse_room_info(body(live_body()), ROOM)
    assert info.room_id == ROOM
    assert (info.status, info.is_live, info.is_paused, info.has_ended) == (2, True, False, False)
    assert (info.title, info.unique_id, info.nickname) == ("Ow Zeny Only", "qlaiqlai22", "Qlai")
    assert set(info.streams) == {"origin", "uhd_60", "hd_60", "hd", "sd", "ld", "ao"}
    origin = info.streams["origin"]
    # \u0026 inside the JSON string is a real '&' once decoded.
    assert origin.flv_url == f"{CDN}.flv?expire=1748243747&sign=290aorigin"
    assert (origin.resolution, origin.vcodec) == ("1920x1080", "h265")
    assert info.streams["ao"].resolution is None  # "" means unknown
    assert info.legacy_flv["HD1"] == StreamVariant(
        "hd", f"{CDN}_hd5.flv?expire=1748243747&sign=be08", "1280x720", "h265"
    )
    assert info.legacy_flv["SD1"].quality == "ld"
    assert info.age_restricted is False


def test_paused_and_offline_bodies() -> None:
    paused = parse_room_info(body(live_body(status=3)), ROOM)
    assert paused.is_paused
    assert not paused.is_live
    assert not paused.has_ended
    offline = parse_room_info(body(OFFLINE_BODY), ROOM)
    assert offline.has_ended
    assert offline.streams == {}
    assert offline.unique_id == "alice"
    assert "HD1" in offline.legacy_flv  # stale, kept as TikTok sent it


def test_broken_stream_data_falls_back_to_legacy_urls() -> None:
    doc = live_body()
    doc["data"]["stream_url"]["live_core_sdk_data"]["pull_data"]["stream_data"] = "{not json"
    info = parse_room_info(body(doc), ROOM)
    assert info.streams == {}
    assert choose_stream(info).quality == "hd"


@pytest.mark.parametrize(("logged_in", "phrase"), [(False, "cookies"), (True, "expired")])
def test_4003110_is_age_restricted(logged_in: bool, phrase: str) -> None:
    with pytest.raises(AgeRestricted) as caught:
        parse_room_info(body(RESTRICTED_BODY), ROOM, logged_in=logged_in)
    err = caught.value
    assert (err.code, err.retryable, err.private) == (ErrorCode.AGE_RESTRICTED, False, False)
    assert phrase in str(err)


def test_follow_the_creator_prompt_means_private() -> None:
    with pytest.raises(AgeRestricted) as caught:
        parse_room_info(body(PRIVATE_BODY), ROOM)
    assert caught.value.private
    assert "private" in str(caught.value)


def test_10011_is_an_unknown_room() -> None:
    with pytest.raises(UserNotFound) as caught:
        parse_room_info(body(PARAMS_ERROR_BODY), ROOM)
    assert caught.value.code is ErrorCode.USER_NOT_FOUND
    assert not caught.value.retryable


@pytest.mark.parametrize("raw", [b"", b"  \n", WAF_PAGE.encode(), b"<html>Access Denied</html>"])
def test_empty_or_html_room_info_is_a_waf_block(raw: bytes) -> None:
    with pytest.raises(WafBlocked) as caught:
        parse_room_info(raw, ROOM)
    assert (caught.value.code, caught.value.retryable) == (ErrorCode.WAF_BLOCKED, True)


@pytest.mark.parametrize(
    "doc",
    [
        {"data": {}, "status_code": 30003},
        {"data": {"no": "status"}, "status_code": 0},
        [1, 2],
    ],
)
def test_unknown_room_info_shapes_are_unexpected(doc: object) -> None:
    with pytest.raises(UnexpectedResponse) as caught:
        parse_room_info(body(doc), ROOM)
    assert (caught.value.code, caught.value.retryable) == (ErrorCode.SERVICE_UNAVAILABLE, True)


# --- check_alive ----------------------------------------------------------------------------


def alive_body(*entries: tuple[str, bool]) -> bytes:
    data = [{"alive": a, "room_id": int(r), "room_id_str": r} for r, a in entries]
    return body({"data": data, "extra": {"now": 1784114258805}, "status_code": 0})


def test_check_alive_matches_by_room_id_str_not_position() -> None:
    raw = alive_body((OTHER_ROOM, False), (ROOM, True), ("7000000000000000009", True))
    assert parse_check_alive(raw, [ROOM, OTHER_ROOM]) == {ROOM: True, OTHER_ROOM: False}


def test_check_alive_omitted_ids_are_absent() -> None:
    missing = "7503448765740976999"
    assert parse_check_alive(alive_body((ROOM, True)), [ROOM, missing]) == {ROOM: True}


def test_check_alive_answering_no_asked_id_is_a_waf_block() -> None:
    with pytest.raises(WafBlocked):
        parse_check_alive(alive_body(), [ROOM])
    with pytest.raises(WafBlocked):
        parse_check_alive(b"", [ROOM])
    with pytest.raises(UnexpectedResponse):
        parse_check_alive(body(PARAMS_ERROR_BODY), [ROOM])

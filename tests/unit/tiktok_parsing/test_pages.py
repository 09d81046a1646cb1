"""api-live, the live page (SIGI state, meta tag) and the profile page parse to a room reference."""

from __future__ import annotations

import pytest

from shared.tiktok import RoomRef, UnexpectedResponse, UserNotFound, WafBlocked
from shared.tiktok.parsing import parse_live_page, parse_profile_page, parse_user_room
from tests.unit.tiktok_parsing.helpers import CDN, ROOM, WAF_PAGE, body, page, stream_data_string

# --- api-live, live page, profile page --------------------------------------------------------


def user_room_body(room_id: str, status: int = 2) -> bytes:
    user = {"id": "1", "uniqueId": "Alice", "roomId": room_id, "status": status}
    return body({"statusCode": 0, "message": "", "data": {"user": user, "liveRoom": {}}})


def test_user_room_keeps_stale_ids_and_maps_errors() -> None:
    assert parse_user_room(user_room_body(ROOM), "alice").ref == RoomRef(ROOM, "Alice")
    assert parse_user_room(user_room_body(ROOM, status=4), "alice").ref.room_id == ROOM
    assert parse_user_room(user_room_body(""), "alice").ref == RoomRef(None, "Alice")
    with pytest.raises(UserNotFound):
        parse_user_room(body({"statusCode": 19881007, "message": "user_not_found"}), "x")
    with pytest.raises(WafBlocked):
        parse_user_room(b"", "alice")
    with pytest.raises(WafBlocked):
        parse_user_room(WAF_PAGE.encode(), "alice")
    with pytest.raises(UnexpectedResponse):
        parse_user_room(body({"statusCode": 404000, "message": ""}), "alice")


def test_live_page_sigi_state() -> None:
    live = {
        "LiveRoom": {
            "liveRoomStatus": 2,
            "liveRoomUserInfo": {"user": {"uniqueId": "alice", "roomId": ROOM, "status": 2}},
        },
        "CurrentRoom": {"roomId": ROOM},
    }
    assert parse_live_page(page("SIGI_STATE", live), "alice").ref == RoomRef(ROOM, "alice")
    never_live = {"UserModule": {"users": {"alice": {"uniqueId": "alice"}}}}
    assert parse_live_page(page("SIGI_STATE", never_live), "alice").ref == RoomRef(None, "alice")
    with pytest.raises(UserNotFound):
        parse_live_page(page("SIGI_STATE", {"UserModule": {}}), "ghost")
    with pytest.raises(WafBlocked):
        parse_live_page(WAF_PAGE, "alice")


def test_live_page_room_id_from_the_android_meta_tag_and_the_other_script_id() -> None:
    # streamlink #6380: roomId "" on a live room; the meta tag still names it.
    pull = {"stream_data": stream_data_string()}
    state = {
        "LiveRoom": {
            "liveRoomStatus": 2,
            "liveRoomUserInfo": {
                "user": {"uniqueId": "alice", "roomId": "", "status": 2},
                "liveRoom": {
                    "roomId": "",
                    "status": 2,
                    "title": "hi",
                    "streamData": {"pull_data": pull},
                },
            },
        },
        "CurrentRoom": {"roomId": ""},
    }
    meta = (
        '<meta content="snssdk1233://live?room_id=' + ROOM + '&amp;from=web" '
        'property="al:android:url">'
    )
    html = meta + page("sigi-persisted-data", state)
    found = parse_live_page(html, "alice")
    assert found.ref == RoomRef(ROOM, "alice")
    assert found.live is not None
    assert (found.live.room_id, found.live.status, found.live.title) == (ROOM, 2, "hi")
    assert found.live.source == "live_page"
    assert set(found.live.streams) >= {"origin", "hd", "ld"}
    assert found.live.streams["hd"].flv_url.startswith(CDN)


def test_api_live_carries_the_live_room_streams() -> None:
    doc = {
        "statusCode": 0,
        "data": {
            "user": {"uniqueId": "alice", "roomId": ROOM, "status": 2},
            "liveRoom": {
                "roomId": ROOM,
                "status": 2,
                "streamData": {"pull_data": {"stream_data": stream_data_string()}},
            },
        },
    }
    found = parse_user_room(body(doc), "alice")
    assert found.live is not None
    assert found.live.source == "user_room"
    assert found.live.streams["sd"].flv_url.startswith(CDN)


def test_profile_page_universal_data() -> None:
    detail = {"statusCode": 0, "userInfo": {"user": {"uniqueId": "alice", "roomId": ROOM}}}
    state = {"__DEFAULT_SCOPE__": {"webapp.user-detail": detail}}
    html = page("__UNIVERSAL_DATA_FOR_REHYDRATION__", state)
    assert parse_profile_page(html, "alice").ref == RoomRef(ROOM, "alice")
    unknown = {"__DEFAULT_SCOPE__": {"webapp.user-detail": {"statusCode": 10221, "userInfo": {}}}}
    with pytest.raises(UserNotFound):
        parse_profile_page(page("__UNIVERSAL_DATA_FOR_REHYDRATION__", unknown), "ghost")

"""TikTok bodies (TIKTOK.md §2) parse to models or the right TikTokError; quality, targets and
cookie files behave as documented. No network: HTTP-level cases use httpx.MockTransport."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from shared.errors import ErrorCode
from shared.tiktok import (
    AgeRestricted,
    CookiesError,
    CountryBlocked,
    LiveOffline,
    NetworkTimeout,
    RoomInfo,
    RoomRef,
    StreamVariant,
    Target,
    TikTokClient,
    TikTokError,
    UnexpectedResponse,
    UserNotFound,
    WafBlocked,
    choose_stream,
    load_cookies,
    parse_target,
    stream_candidates,
)
from shared.tiktok.parsing import (
    parse_check_alive,
    parse_live_page,
    parse_profile_page,
    parse_room_info,
    parse_stream_data,
    parse_user_room,
)

ROOM = "7503448765740976902"
OTHER_ROOM = "7503448765740976903"
CDN = "https://pull-flv-l1-va01.tiktokcdn.com/game/stream-2999545150721753184"


def body(doc: object) -> bytes:
    return json.dumps(doc).encode()


# --- bodies shaped like the §2.3 captures ---------------------------------------------------


def _sdk(codec: str, bitrate: int, resolution: str) -> str:
    return json.dumps({"VCodec": codec, "vbitrate": bitrate, "resolution": resolution})


def stream_data_string() -> str:
    """The decoded §2.3 stream_data, re-encoded as TikTok does: a string with \\u0026."""
    keys = {
        "origin": ("", "1920x1080", 7_600_000),
        "uhd_60": ("_uhd560", "1920x1080", 4_000_000),
        "hd_60": ("_hd560", "1280x720", 2_600_000),
        "hd": ("_hd5", "1280x720", 1_600_000),
        "sd": ("_sd5", "960x540", 1_000_000),
        "ld": ("_ld5", "640x360", 600_000),
    }
    data: dict[str, Any] = {
        key: {
            "main": {
                "flv": f"{CDN}{sfx}.flv?expire=1748243747&sign=290a{key}",
                "hls": f"{CDN}{sfx}/playlist.m3u8?expire=1748243747&sign=2c02",
                "cmaf": "",
                "sdk_params": _sdk("h265", rate, res),
            }
        }
        for key, (sfx, res, rate) in keys.items()
    }
    data["ao"] = {
        "main": {
            "flv": f"{CDN}.flv?expire=1748243747&sign=290a&only_audio=1",
            "hls": "",
            "sdk_params": _sdk("h264", 0, ""),
        }
    }
    common = {"session_id": "178-2025051207154689B62CE39CB18B4E79B9", "user_count": 561}
    return json.dumps({"common": common, "data": data}).replace("&", "\\u0026")


def live_body(status: int = 2) -> dict[str, Any]:
    return {
        "data": {
            "id_str": ROOM,
            "status": status,
            "title": "Ow Zeny Only",
            "create_time": 1747032842,
            "age_restricted": {"AgeInterval": 0, "restricted": False, "source": 0},
            "owner": {
                "id_str": "6888971869959046145",
                "display_id": "qlaiqlai22",
                "nickname": "Qlai",
            },
            "stream_url": {
                "candidate_resolution": ["SD1", "SD2", "HD1"],
                "flv_pull_url": {
                    "HD1": f"{CDN}_hd5.flv?expire=1748243747&sign=be08",
                    "SD2": f"{CDN}_sd5.flv?expire=1748243747&sign=ff8a",
                    "SD1": f"{CDN}_ld5.flv?expire=1748243747&sign=784f",
                },
                "flv_pull_url_params": {"HD1": _sdk("h265", 1_600_000, "1280x720")},
                "live_core_sdk_data": {
                    "pull_data": {
                        "options": {"qualities": [{"sdk_key": "origin", "level": 10}]},
                        "stream_data": stream_data_string(),
                    }
                },
            },
        },
        "extra": {"now": 1747034147157},
        "status_code": 0,
    }


OFFLINE_BODY = {
    "data": {
        "id_str": ROOM,
        "status": 4,
        "finish_time": 1784118433,
        "owner": {"display_id": "alice"},
        "stream_url": {
            "flv_pull_url": {"HD1": "https://pull-flv.tiktokcdn.com/stale.flv"},
            "live_core_sdk_data": {"pull_data": {"stream_data": '{"data":{}}'}},
        },
    },
    "extra": {"now": 1784118500000},
    "status_code": 0,
}
RESTRICTED_BODY = {"data": {"prompts": ""}, "extra": {"now": 1692122709147}, "status_code": 4003110}
PRIVATE_BODY = {
    "data": {"prompts": "Follow the creator to watch their LIVE"},
    "extra": {"now": 1692122709147},
    "status_code": 4003110,
}
PARAMS_ERROR_BODY = {
    "data": {"message": "Request params error", "prompts": "Request params error"},
    "extra": {"now": 1717778102160},
    "status_code": 10011,
}
WAF_PAGE = (
    "<html><body><div>Please wait...</div>"
    '<p id="wci" class="_wafchallengeid"></p><p id="cs" class="eyJ2Ijp7fX0"></p></body></html>'
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


def page(script_id: str, state: object) -> str:
    return f'<html><script id="{script_id}" type="application/json">{json.dumps(state)}</script>'


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


def profile_html(room_id: str, name: str = "alice") -> str:
    detail = {"statusCode": 0, "userInfo": {"user": {"uniqueId": name, "roomId": room_id}}}
    state = {"__DEFAULT_SCOPE__": {"webapp.user-detail": detail}}
    return page("__UNIVERSAL_DATA_FOR_REHYDRATION__", state)


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


# --- targets ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (ROOM, Target("room_id", ROOM)),
        ("@alice", Target("user", "alice")),
        ("alice", Target("user", "alice")),
        ("  alice.b_1 ", Target("user", "alice.b_1")),
        ("12345", Target("user", "12345")),  # short all-digit names are usernames
        ("https://www.tiktok.com/@alice/live", Target("user", "alice")),
        ("https://www.tiktok.com/@alice", Target("user", "alice")),
        ("https://www.tiktok.com/@alice/live?lang=en&enter_from=x", Target("user", "alice")),
        ("https://m.tiktok.com/@alice/live", Target("user", "alice")),
        ("HTTPS://WWW.TIKTOK.COM/@Alice/live", Target("user", "Alice")),
        ("www.tiktok.com/@alice/live", Target("user", "alice")),
        ("https://tiktok.com/@alice/video/7300000000000000000", Target("user", "alice")),
        (f"https://m.tiktok.com/share/live/{ROOM}", Target("room_id", ROOM)),
        ("https://vm.tiktok.com/@alice/live", Target("user", "alice")),  # relative redirect
        (
            "https://vm.tiktok.com/ZMabc123/",
            Target("short_link", "https://vm.tiktok.com/ZMabc123/"),
        ),
        ("http://vt.tiktok.com/ZSx9", Target("short_link", "https://vt.tiktok.com/ZSx9")),
        (
            "https://www.tiktok.com/t/ZTabc/",
            Target("short_link", "https://www.tiktok.com/t/ZTabc/"),
        ),
    ],
)
def test_parse_target(text: str, expected: Target) -> None:
    assert parse_target(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "https://evil.example/@alice/live",
        "https://tiktok.com.evil.example/@alice/live",
        "https://www.tiktok.com@evil.example/@alice/live",
        "https://eviltiktok.com/@alice/live",
        "ftp://www.tiktok.com/@alice/live",
        "javascript:alert(1)",
        "https://www.tiktok.com/foryou",
        "https://vm.tiktok.com/",
        "al ice",
        "@" + "a" * 25,
    ],
)
def test_parse_target_rejects(text: str) -> None:
    with pytest.raises(ValueError, match=r"."):
        parse_target(text)


def no_network(request: httpx.Request) -> httpx.Response:
    pytest.fail(f"unexpected request to {request.url}")


def mock_client(handler: Any) -> TikTokClient:
    return TikTokClient(
        web_base="http://web.test",
        webcast_base="http://webcast.test",
        transport=httpx.MockTransport(handler),
    )


async def test_resolve_room_id_and_rejected_hosts_make_no_request() -> None:
    async with mock_client(no_network) as client:
        assert await client.resolve(ROOM) == RoomRef(ROOM, None)
        assert await client.resolve(f"https://m.tiktok.com/share/live/{ROOM}") == RoomRef(
            ROOM, None
        )
        with pytest.raises(ValueError, match="not a TikTok URL"):
            await client.resolve("https://evil.example/@alice/live")


async def test_short_link_is_followed_by_hand_to_the_user() -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(f"{request.url.host}{request.url.path}")
        if request.url.host == "vm.tiktok.com":
            location = "https://www.tiktok.com/@alice/live?_r=1&u_code=x"
            return httpx.Response(301, headers={"Location": location})
        return httpx.Response(200, text=profile_html(ROOM, "Alice"))

    async with mock_client(handler) as client:
        assert await client.resolve("https://vm.tiktok.com/ZMabc/") == RoomRef(ROOM, "Alice")
    # the live page the link points at is never fetched: the user name is enough
    assert seen == ["vm.tiktok.com/ZMabc/", "web.test/@alice"]


async def test_short_link_redirect_off_tiktok_is_refused() -> None:
    def handler(_request: httpx.Request) -> httpx.Response:
        return httpx.Response(302, headers={"Location": "https://evil.example/@alice/live"})

    async with mock_client(handler) as client:
        with pytest.raises(UnexpectedResponse):
            await client.resolve("https://vm.tiktok.com/ZMabc/")


@pytest.mark.parametrize(
    ("status", "error"), [(403, WafBlocked), (429, WafBlocked), (500, UnexpectedResponse)]
)
async def test_http_status_verdicts(status: int, error: type[TikTokError]) -> None:
    def handler(_request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, headers={"Retry-After": "30"}, content=b"")

    async with mock_client(handler) as client:
        with pytest.raises(error) as caught:
            await client.room_info(ROOM)
    assert caught.value.retryable
    if isinstance(caught.value, WafBlocked):
        assert caught.value.retry_after == 30.0


async def test_live_page_redirect_is_a_country_block_and_transport_errors_are_wrapped() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/live"):
            return httpx.Response(302, headers={"Location": "/login?redirect_url=x"})
        msg = "timed out"
        raise httpx.ReadTimeout(msg, request=request)

    async with mock_client(handler) as client:
        with pytest.raises(CountryBlocked):
            await client.live_page("alice")
        with pytest.raises(NetworkTimeout) as caught:
            await client.check_alive([ROOM])
    assert (caught.value.code, caught.value.retryable) == (ErrorCode.NETWORK_TIMEOUT, True)


async def test_invalid_inputs_are_value_errors() -> None:
    async with mock_client(no_network) as client:
        with pytest.raises(ValueError, match="room id"):
            await client.room_info("123")
        with pytest.raises(ValueError, match="room id"):
            await client.check_alive([ROOM, "x"])
        assert await client.check_alive([]) == {}
        with pytest.raises(ValueError, match="username"):
            await client.user_room("../../admin")
        with pytest.raises(ValueError, match="username"):
            await client.live_page("a/b")


def test_bad_proxy_url_message_hides_the_password() -> None:
    with pytest.raises(ValueError, match="proxy") as caught:
        TikTokClient(
            web_base="https://www.tiktok.com",
            webcast_base="https://webcast.tiktok.com",
            proxy="gopher://user:hunter2@proxy.example:1080",
        )
    assert "hunter2" not in str(caught.value)


def test_error_codes_and_retryability() -> None:
    cases: list[tuple[TikTokError, ErrorCode, bool]] = [
        (LiveOffline(target="room 1", status=4), ErrorCode.LIVE_OFFLINE, False),
        (UserNotFound(target="@x"), ErrorCode.USER_NOT_FOUND, False),
        (AgeRestricted(room_id="1"), ErrorCode.AGE_RESTRICTED, False),
        (CountryBlocked(target="@x"), ErrorCode.COUNTRY_BLOCKED, False),
        (WafBlocked(endpoint="room_info", reason="empty body"), ErrorCode.WAF_BLOCKED, True),
        (NetworkTimeout(endpoint="room_info", reason="x"), ErrorCode.NETWORK_TIMEOUT, True),
        (UnexpectedResponse(endpoint="x", detail="y"), ErrorCode.SERVICE_UNAVAILABLE, True),
    ]
    for error, code, retryable in cases:
        assert (error.code, error.retryable) == (code, retryable)
        assert error.outcome == code.value.lower()
        assert str(error)


# --- cookies ----------------------------------------------------------------------------------

SECRET = "s3cr3t-session-value"
NETSCAPE = f"""# Netscape HTTP Cookie File
# This is a generated file! Do not edit.

.tiktok.com\tTRUE\t/\tTRUE\t1790000000\ttt-target-idc\tuseast2a
#HttpOnly_.tiktok.com\tTRUE\t/\tTRUE\t1790000000\tsessionid\t{SECRET}
#HttpOnly_www.tiktok.com\tFALSE\t/\tTRUE\t0\tsid_tt\tabc
.example.com\tTRUE\t/\tFALSE\t0\tsessionid\tnot-tiktok
.tiktok.com\tTRUE\t/\tFALSE\t0\tempty
"""


@pytest.fixture
def cookie_dir(tmp_path: Path) -> Path:
    path = tmp_path / "cookies"
    path.mkdir()
    return path


def test_netscape_cookies_txt(cookie_dir: Path) -> None:
    (cookie_dir / "c.txt").write_text(NETSCAPE)
    assert load_cookies("c.txt", cookie_dir) == {
        "tt-target-idc": "useast2a",
        "sessionid": SECRET,
        "sid_tt": "abc",
        "empty": "",
    }


def test_json_forms(cookie_dir: Path) -> None:
    (cookie_dir / "flat.json").write_text(json.dumps({"sessionid": SECRET, "tt-target-idc": "x"}))
    assert load_cookies("flat.json", cookie_dir) == {"sessionid": SECRET, "tt-target-idc": "x"}
    exported = [
        {"name": "sessionid", "value": SECRET, "domain": ".tiktok.com", "httpOnly": True},
        {"name": "msToken", "value": "a+b/c==", "domain": "www.tiktok.com"},
        {"name": "other", "value": "x", "domain": ".google.com"},
        {"name": "nodomain", "value": "y"},
    ]
    (cookie_dir / "list.json").write_text(json.dumps(exported))
    expected = {"sessionid": SECRET, "msToken": "a+b/c==", "nodomain": "y"}
    assert load_cookies("list.json", cookie_dir) == expected
    (cookie_dir / "state.json").write_text(json.dumps({"cookies": exported, "origins": []}))
    assert load_cookies(str(cookie_dir / "state.json"), cookie_dir) == expected


def _refused(name: str, allowed: Path, match: str, **kw: Any) -> None:
    with pytest.raises(CookiesError, match=match) as caught:
        load_cookies(name, allowed, **kw)
    assert SECRET not in str(caught.value)
    assert caught.value.__cause__ is None


def test_paths_outside_the_directory_are_refused(tmp_path: Path, cookie_dir: Path) -> None:
    outside = tmp_path / "outside.json"
    outside.write_text(json.dumps({"sessionid": SECRET}))
    _refused("../outside.json", cookie_dir, "outside")
    _refused(str(outside), cookie_dir, "outside")
    (cookie_dir / "link.json").symlink_to(outside)
    _refused("link.json", cookie_dir, "outside")
    (cookie_dir / "sub").mkdir()
    (cookie_dir / "sub" / "up").symlink_to(tmp_path)
    _refused("sub/up/outside.json", cookie_dir, "outside")
    _refused("missing.json", cookie_dir, "does not exist")
    _refused("sub", cookie_dir, "not a regular file")


def test_symlink_inside_the_directory_is_fine(cookie_dir: Path) -> None:
    (cookie_dir / "real.json").write_text(json.dumps({"sessionid": SECRET}))
    (cookie_dir / "current.json").symlink_to(cookie_dir / "real.json")
    assert load_cookies("current.json", cookie_dir) == {"sessionid": SECRET}


def test_oversize_and_malformed_files_never_echo_content(cookie_dir: Path) -> None:
    (cookie_dir / "big.json").write_text(json.dumps({"sessionid": SECRET + "x" * 2000}))
    _refused("big.json", cookie_dir, "larger than 1024 bytes", max_bytes=1024)
    (cookie_dir / "broken.json").write_text('{"sessionid": "' + SECRET)
    _refused("broken.json", cookie_dir, "not valid JSON")
    (cookie_dir / "broken.txt").write_text(f".tiktok.com TRUE / TRUE 0 sessionid {SECRET}\n")
    _refused("broken.txt", cookie_dir, "line 1")
    (cookie_dir / "semi.json").write_text(json.dumps({"sessionid": SECRET + ";evil=1"}))
    _refused("semi.json", cookie_dir, "not allowed")
    (cookie_dir / "crlf.json").write_text(json.dumps({"sessionid": SECRET + "\r\nX-Evil: 1"}))
    _refused("crlf.json", cookie_dir, "not allowed")
    (cookie_dir / "badname.json").write_text(json.dumps({SECRET + " x": "v"}))
    _refused("badname.json", cookie_dir, "invalid cookie name")
    (cookie_dir / "number.json").write_text(json.dumps({"sessionid": 12}))
    _refused("number.json", cookie_dir, "not a string")
    (cookie_dir / "none.json").write_text(
        json.dumps([{"name": "a", "value": SECRET, "domain": "x.com"}])
    )
    _refused("none.json", cookie_dir, "no cookie for tiktok.com")
    (cookie_dir / "bin.txt").write_bytes(b"\xff\xfe" + SECRET.encode())
    _refused("bin.txt", cookie_dir, "not UTF-8")


def test_cookie_dir_must_exist(tmp_path: Path) -> None:
    _refused("c.json", tmp_path / "nope", "does not exist")


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

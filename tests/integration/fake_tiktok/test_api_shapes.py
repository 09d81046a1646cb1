"""The fake TikTok answers room/info, check_alive, api-live and its pages in TikTok's shapes."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.integration.fake_tiktok.helpers import (
    api_live,
    client_with_cookies,
    live_user,
    room_info,
    sigi_of,
    stream_data_of,
)
from tlr.fake_tiktok import FakeTikTok, parse_profile

# 20x real time: a test sees a 10 s media loop go by in half a second.
FAKE_TIKTOK_OPTIONS = {"speed": 20.0}


# --- JSON shapes ---------------------------------------------------------------------------


def test_profile_names() -> None:
    profile = parse_profile("h264_720p_2m")
    assert (profile.width, profile.height, profile.video_kbps) == (1280, 720, 2000)
    assert parse_profile("h264_360p").resolution == "640x360"
    assert "2000k" in profile.cache_filename
    with pytest.raises(ValueError, match="unknown profile"):
        parse_profile("vp9_480p")


async def test_check_alive_keeps_request_order_and_omits_unknown(
    fake: FakeTikTok,
    client: httpx.AsyncClient,
) -> None:
    alice = await live_user(fake, "alice")
    bob = await live_user(fake, "bob")
    await fake.end("bob")
    ids = f"{bob.room_id},7500000000000000001,{alice.room_id}"
    params = {"aid": "1988", "region": "CH", "room_ids": ids, "user_is_login": "true"}
    body = (await client.get("/webcast/room/check_alive/", params=params)).json()
    assert body["status_code"] == 0
    assert isinstance(body["extra"]["now"], int)
    assert body["data"] == [
        {"alive": False, "room_id": int(bob.room_id), "room_id_str": bob.room_id},
        {"alive": True, "room_id": int(alice.room_id), "room_id_str": alice.room_id},
    ]
    assert len(alice.room_id) == 19
    assert alice.room_id.startswith("75")


async def test_room_info_live_body(fake: FakeTikTok, client: httpx.AsyncClient) -> None:
    handle = await live_user(fake)
    raw = (
        await client.get("/webcast/room/info/", params={"aid": "1988", "room_id": handle.room_id})
    ).text
    assert "\\\\u0026" in raw  # '&' inside the stream_data string is escaped as \u0026
    body = json.loads(raw)
    data = body["data"]
    assert body["status_code"] == 0
    assert (data["status"], data["id_str"], data["id"]) == (2, handle.room_id, int(handle.room_id))
    assert data["owner"]["display_id"] == "alice"
    stream_url = data["stream_url"]
    assert set(stream_url["flv_pull_url"]) == {"HD1", "SD2", "SD1"}
    assert stream_url["rtmp_pull_url"].startswith(fake.base_url + "/game/stream-")
    assert f"stream-{handle.stream_id}/playlist.m3u8?expire=" in stream_url["hls_pull_url"]
    assert "&sign=" in stream_url["flv_pull_url"]["HD1"]
    options = stream_url["live_core_sdk_data"]["pull_data"]["options"]
    levels = {q["sdk_key"]: q["level"] for q in options["qualities"]}
    assert levels["origin"] > levels["hd"] > levels["sd"] > levels["ld"]

    decoded = stream_data_of(body)
    origin = decoded["data"]["origin"]["main"]
    assert origin["flv"] == stream_url["rtmp_pull_url"]
    assert json.loads(origin["sdk_params"])["resolution"] == "640x360"
    assert decoded["data"]["ao"]["main"]["flv"].endswith("&only_audio=1")
    assert (
        decoded["data"]["hd"]["main"]["flv"].split("?")[0].endswith(f"{handle.stream_id}_hd5.flv")
    )


async def test_quality_cap_720_hides_higher_renditions(
    fake: FakeTikTok,
    client: httpx.AsyncClient,
) -> None:
    handle = await live_user(fake)
    await fake.set_scenario(quality_cap_720=True)
    decoded = stream_data_of(await room_info(client, handle.room_id))
    assert set(decoded["data"]) == {"hd", "sd", "ld", "ao"}


@pytest.mark.usefixtures("kind")
async def test_offline_bodies_keep_the_stale_room(
    fake: FakeTikTok,
    client: httpx.AsyncClient,
) -> None:
    handle = await live_user(fake)
    await fake.end("alice")
    data = (await room_info(client, handle.room_id))["data"]
    assert (data["status"], data["id_str"]) == (4, handle.room_id)
    assert data["finish_time"] > 0
    assert json.loads(data["stream_url"]["live_core_sdk_data"]["pull_data"]["stream_data"]) == {
        "data": {}
    }
    stale = await client.get(data["stream_url"]["flv_pull_url"]["HD1"])
    assert stale.status_code == 404

    api = (await api_live(client, "alice")).json()
    assert api["statusCode"] == 0
    assert api["data"]["user"]["status"] == 4
    assert api["data"]["user"]["roomId"] == handle.room_id
    assert api["data"]["liveRoom"]["status"] == 4

    sigi = sigi_of((await client.get("/@alice/live")).text)
    assert sigi["LiveRoom"]["liveRoomStatus"] == 0
    assert sigi["LiveRoom"]["liveRoomUserInfo"]["user"]["status"] == 4
    assert sigi["LiveRoom"]["liveRoomUserInfo"]["user"]["roomId"] == handle.room_id
    assert sigi["CurrentRoom"]["roomId"] == ""

    # Going live again issues a new room id; check_alive on the old one says not alive.
    again = await fake.go_live("alice")
    assert again.room_id != handle.room_id
    assert again.stream_id != handle.stream_id


@pytest.mark.usefixtures("kind")
async def test_live_pages_and_api_live(fake: FakeTikTok, client: httpx.AsyncClient) -> None:
    handle = await live_user(fake)
    api = (await api_live(client, "alice")).json()
    assert api["statusCode"] == 0
    assert api["data"]["user"]["roomId"] == handle.room_id
    assert api["data"]["user"]["status"] == 2
    live_room = api["data"]["liveRoom"]
    assert live_room["status"] == 2
    assert isinstance(live_room["streamData"]["pull_data"]["stream_data"], str)

    sigi = sigi_of((await client.get("/@alice/live")).text)
    assert sigi["LiveRoom"]["liveRoomStatus"] == 2
    assert sigi["CurrentRoom"]["roomId"] == handle.room_id

    profile_html = (await client.get("/@alice")).text
    assert "__UNIVERSAL_DATA_FOR_REHYDRATION__" in profile_html
    assert handle.room_id in profile_html

    detail = (
        await client.get("/api/live/detail/", params={"aid": "1988", "roomID": handle.room_id})
    ).json()
    assert detail["LiveRoomInfo"]["ownerInfo"]["uniqueId"] == "alice"
    assert detail["LiveRoomInfo"]["status"] == 2


@pytest.mark.usefixtures("kind")
async def test_not_found_and_param_errors(fake: FakeTikTok, client: httpx.AsyncClient) -> None:
    await fake.create_user("carol")
    assert (await api_live(client, "nobody")).json() == {
        "statusCode": 19881007,
        "message": "user_not_found",
    }
    never = (await api_live(client, "carol")).json()
    assert never["data"]["user"]["roomId"] == ""
    assert never["data"]["user"]["status"] == 4

    unknown = await room_info(client, "7500000000000000009")
    assert unknown["status_code"] == 10011
    assert unknown["data"] == {"message": "Request params error", "prompts": "Request params error"}

    no_aid = [
        await client.get("/webcast/room/info/", params={"room_id": "1"}),
        await client.get("/webcast/room/check_alive/", params={"room_ids": "1"}),
        await client.get("/api-live/user/room/", params={"uniqueId": "carol"}),
    ]
    for response in no_aid:
        assert response.status_code == 200
        assert response.json()["status_code"] == 10011

    sigi = sigi_of((await client.get("/@nobody/live")).text)
    assert "LiveRoom" not in sigi


@pytest.mark.usefixtures("kind")
async def test_age_restricted_needs_a_session_cookie(
    fake: FakeTikTok,
    client: httpx.AsyncClient,
) -> None:
    handle = await live_user(fake, age_restricted=True)
    gated = await room_info(client, handle.room_id)
    assert gated == {"data": {"prompts": ""}, "extra": gated["extra"], "status_code": 4003110}
    async with client_with_cookies(fake, {"sessionid": ""}) as anonymous:
        assert (await room_info(anonymous, handle.room_id))["status_code"] == 4003110
    async with client_with_cookies(fake, {"sessionid_ss": "abc"}) as logged_in:
        allowed = await room_info(logged_in, handle.room_id)
    assert allowed["status_code"] == 0
    assert allowed["data"]["age_restricted"]["restricted"] is True
    assert stream_data_of(allowed)["data"]["origin"]["main"]["flv"]

    params = {"aid": "1988", "room_ids": handle.room_id}
    alive = (await client.get("/webcast/room/check_alive/", params=params)).json()
    assert alive["data"][0]["alive"] is True
    sigi = sigi_of((await client.get("/@alice/live")).text)
    assert sigi["LiveRoom"]["isAgeGateRoom"] is True


async def test_private_room_prompt(fake: FakeTikTok) -> None:
    handle = await live_user(fake, private=True)
    async with client_with_cookies(fake, {"sessionid": "abc"}) as logged_in:
        body = await room_info(logged_in, handle.room_id)
    assert body["status_code"] == 4003110
    assert body["data"]["prompts"] == "Follow the creator to watch their LIVE"


@pytest.mark.usefixtures("kind")
async def test_country_block_redirects_pages_only(
    fake: FakeTikTok,
    client: httpx.AsyncClient,
) -> None:
    handle = await live_user(fake)
    assert (await client.get("/live")).status_code == 200
    await fake.set_scenario(blocked_country=True)
    for path in ("/live", "/@alice/live"):
        response = await client.get(path)
        assert response.status_code == 302
        assert response.headers["location"].startswith("/login?redirect_url=")
    assert (await room_info(client, handle.room_id))["status_code"] == 0


@pytest.mark.usefixtures("kind")
async def test_waf_page_and_empty_api_body(fake: FakeTikTok, client: httpx.AsyncClient) -> None:
    handle = await live_user(fake)
    assert (await api_live(client, "alice")).json()["statusCode"] == 0
    await fake.set_scenario(waf=True)
    page = await client.get("/@alice/live")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "Please wait..." in page.text
    assert '<p id="wci" class="_wafchallengeid"></p>' in page.text
    assert '<p id="cs" class="eyJ2Ijp7fX0"></p>' in page.text
    api = await api_live(client, "alice")
    assert (api.status_code, api.content) == (200, b"")
    assert (await room_info(client, handle.room_id))["status_code"] == 4003110

    await fake.set_scenario(waf=False, empty_api_body=True)
    assert (await api_live(client, "alice")).content == b""
    assert (await room_info(client, handle.room_id))["status_code"] == 0


@pytest.mark.usefixtures("kind")
async def test_rate_limit_turns_into_waf(fake: FakeTikTok, client: httpx.AsyncClient) -> None:
    await live_user(fake)
    await fake.set_scenario(rate_limit={"max_req": 3, "window_s": 60})
    bodies = [(await api_live(client, "alice")).content for _ in range(5)]
    assert all(bodies[:3])
    assert bodies[3:] == [b"", b""]
    await fake.set_scenario(rate_limit=None)
    assert (await api_live(client, "alice")).json()["statusCode"] == 0


async def test_fake_alive_lies_only_in_check_alive(
    fake: FakeTikTok,
    client: httpx.AsyncClient,
) -> None:
    handle = await live_user(fake)
    await fake.end("alice")
    await fake.set_scenario(fake_alive=True)
    params = {"aid": "1988", "room_ids": f"{handle.room_id},123"}
    body = (await client.get("/webcast/room/check_alive/", params=params)).json()
    assert [(e["room_id_str"], e["alive"]) for e in body["data"]] == [
        (handle.room_id, True),
        ("123", True),
    ]
    assert (await room_info(client, handle.room_id))["data"]["status"] == 4

"""Hostile pages and APIs: SIGI without room ids, case redirects, false restrictions and 404s."""

from __future__ import annotations

import json

import httpx

from tests.integration.fake_tiktok.correct_client import (
    _APP_ROOM_RE,
    WWW_PAGES,
    api_live_url,
    first_bytes,
    state_of,
)
from tests.integration.fake_tiktok.helpers import live_user, room_info, walk_tags
from tlr.fake_tiktok import KIND, FakeTikTok

FAKE_TIKTOK_OPTIONS = {"speed": 20.0}


# --- 7: SIGI without room ids, the app deep link, the other script id ----------------------


async def test_sigi_room_id_empty_and_script_id(
    fake: FakeTikTok, client: httpx.AsyncClient
) -> None:
    handle = await live_user(fake)
    await fake.create_user("carol")
    await fake.set_scenario(**KIND)
    kind = (await client.get("/@alice/live")).text
    assert '<script id="SIGI_STATE" type="application/json">' in kind
    assert 'id="sigi-persisted-data"' not in kind
    kind_state = state_of(kind)
    kind_info = kind_state["LiveRoom"]["liveRoomUserInfo"]
    assert (kind_info["user"]["roomId"], kind_info["liveRoom"]["roomId"]) == (
        handle.room_id,
        handle.room_id,
    )
    assert kind_state["CurrentRoom"]["roomId"] == handle.room_id
    app_room = _APP_ROOM_RE.search(kind)
    assert app_room is not None
    assert app_room["id"] == handle.room_id
    assert _APP_ROOM_RE.search((await client.get("/@carol/live")).text) is None  # never live

    await fake.set_scenario(sigi_room_id_empty=True, sigi_script_id="sigi-persisted-data")
    html = (await client.get("/@alice/live")).text
    assert 'id="SIGI_STATE"' not in html
    assert '<script id="sigi-persisted-data" type="application/json">' in html
    state = state_of(html)
    info = state["LiveRoom"]["liveRoomUserInfo"]
    assert (info["user"]["roomId"], info["liveRoom"]["roomId"]) == ("", "")
    assert state["CurrentRoom"]["roomId"] == ""
    assert state["LiveRoom"]["liveRoomStatus"] == 2
    assert info["liveRoom"]["streamData"]["pull_data"]["stream_data"]
    head = html[: html.index("</head>")]
    app_room = _APP_ROOM_RE.search(head)
    assert app_room is not None
    assert app_room["id"] == handle.room_id


# --- 8: canonical redirects ---------------------------------------------------------------


async def test_canonical_redirects(fake: FakeTikTok, client: httpx.AsyncClient) -> None:
    handle = await live_user(fake)
    await fake.set_scenario(**KIND)
    # Usernames are case-insensitive, redirects or not.
    assert handle.room_id in (await client.get("/@ALICE")).text
    assert (await client.get("/@alice/live/")).status_code == 200
    api = await client.get("/api-live/user/room/", params={"aid": "1988", "uniqueId": "Alice"})
    assert api.json()["data"]["user"]["roomId"] == handle.room_id

    await fake.set_scenario(canonical_redirects=True)
    expected = {
        "/@Alice/live?lang=en": "/@alice/live?lang=en",
        "/@alice/live/": "/@alice/live",
        "/@ALICE/live/": "/@alice/live",
        "/@alice/": "/@alice",
        "/@AlIcE": "/@alice",
        "/live/": "/live",
    }
    for path, location in expected.items():
        response = await client.get(path)
        assert (response.status_code, response.headers["location"]) == (301, location), path
    for path in WWW_PAGES:
        assert (await client.get(path)).status_code == 200

    # Only a redirect to /login is a country block; a case redirect comes first.
    await fake.set_scenario(blocked_country=True)
    first = await client.get("/@Alice/live")
    assert (first.status_code, first.headers["location"]) == (301, "/@alice/live")
    second = await client.get(first.headers["location"])
    assert second.status_code == 302
    assert second.headers["location"].startswith("/login?redirect_url=")


# --- 9, 10: room/info restricted and the false "not found"s -------------------------------


async def test_room_info_restricted_while_pages_carry_streams(
    fake: FakeTikTok, client: httpx.AsyncClient
) -> None:
    handle = await live_user(fake)
    await fake.set_scenario(**KIND)
    assert (await room_info(client, handle.room_id))["status_code"] == 0

    await fake.set_scenario(room_info_restricted=True)
    async with httpx.AsyncClient(base_url=fake.base_url, cookies={"sessionid": "abc"}) as logged:
        for http in (client, logged):
            body = await room_info(http, handle.room_id)
            assert body == {"data": {"prompts": ""}, "extra": body["extra"], "status_code": 4003110}

    sigi = state_of((await client.get("/@alice/live")).text)
    page_streams = sigi["LiveRoom"]["liveRoomUserInfo"]["liveRoom"]["streamData"]
    api = (await client.get(api_live_url(fake, "alice"))).json()
    for stream_data in (page_streams, api["data"]["liveRoom"]["streamData"]):
        decoded = json.loads(stream_data["pull_data"]["stream_data"])
        flv = decoded["data"]["origin"]["main"]["flv"]
        assert walk_tags(await first_bytes(client, flv, 4096))


async def test_live_page_soft_block(fake: FakeTikTok, client: httpx.AsyncClient) -> None:
    handle = await live_user(fake)
    await fake.set_scenario(**KIND)
    kind = state_of((await client.get("/@alice/live")).text)
    assert kind["LiveRoom"]["liveRoomUserInfo"]["user"]["roomId"] == handle.room_id

    await fake.set_scenario(live_page_soft_block=True)
    html = (await client.get("/@alice/live")).text
    assert state_of(html) == {"UserModule": {}}
    assert handle.room_id not in html
    assert handle.room_id in (await client.get("/@alice")).text  # a second source still knows


async def test_api_live_user_not_found_for_live_users(
    fake: FakeTikTok, client: httpx.AsyncClient
) -> None:
    handle = await live_user(fake)
    await fake.set_scenario(**KIND)
    found = (await client.get(api_live_url(fake, "alice"))).json()
    assert (found["statusCode"], found["data"]["user"]["roomId"]) == (0, handle.room_id)

    await fake.set_scenario(api_live_user_not_found=True)
    body = (await client.get(api_live_url(fake, "alice"))).json()
    assert body == {"statusCode": 19881007, "message": "user_not_found"}
    assert (await room_info(client, handle.room_id))["data"]["status"] == 2


async def test_room_info_10011_for_age_gated(fake: FakeTikTok, client: httpx.AsyncClient) -> None:
    gated = await live_user(fake, "grace", age_restricted=True)
    plain = await live_user(fake, "alice")
    assert (await room_info(client, gated.room_id))["status_code"] == 4003110

    await fake.set_scenario(room_info_10011_for_age_gated=True)
    body = await room_info(client, gated.room_id)
    assert body["status_code"] == 10011
    assert body["data"] == {"message": "Request params error", "prompts": "Request params error"}
    assert (await room_info(client, plain.room_id))["status_code"] == 0
    async with httpx.AsyncClient(base_url=fake.base_url, cookies={"sessionid": "abc"}) as logged:
        assert (await room_info(logged, gated.room_id))["status_code"] == 0

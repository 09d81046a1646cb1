"""The fake TikTok's control API over HTTP, and the request log it keeps of TikTok calls."""

from __future__ import annotations

import httpx

from tests.integration.fake_tiktok.helpers import client_with_cookies
from tlr.fake_tiktok import FakeTikTok

# 20x real time: a test sees a 10 s media loop go by in half a second.
FAKE_TIKTOK_OPTIONS = {"speed": 20.0}


# --- control API and request log -----------------------------------------------------------


async def test_request_log(fake: FakeTikTok, client: httpx.AsyncClient) -> None:
    await fake.create_user("alice")
    cookies = {"sessionid_ss": "s3cr3t", "tt-target-idc": "useast2a"}
    async with client_with_cookies(fake, cookies) as browser:
        await browser.get(
            "/api-live/user/room/",
            params={"aid": "1988", "uniqueId": "alice"},
            headers={"User-Agent": "UA-test/1.0"},
        )
    log = await fake.requests("/api-live/")
    assert len(log) == 1
    entry = log[0]
    assert entry["query"] == {"aid": "1988", "uniqueId": "alice"}
    assert entry["headers"]["user-agent"] == "UA-test/1.0"
    assert entry["cookies"] == {"sessionid_ss": "s3cr3t", "tt-target-idc": "useast2a"}
    assert entry["status"] == 200
    over_http = (await client.get("/__fake/requests", params={"path_prefix": "/api-live/"})).json()
    assert over_http == log  # control calls themselves are not logged


async def test_control_api_over_http(client: httpx.AsyncClient) -> None:
    created = await client.post("/__fake/users", json={"unique_id": "dave", "nickname": "Dave"})
    assert created.status_code == 201
    assert (await client.post("/__fake/users", json={"unique_id": "dave"})).status_code == 409
    live = await client.post("/__fake/users/dave/live", json={"title": "t", "profile": "h264_360p"})
    assert live.status_code == 200
    room = live.json()
    assert (room["status"], room["title"], len(room["room_id"])) == (2, "t", 19)
    sid = room["stream_id"]
    assert (await client.post("/__fake/users/dave/pause")).json()["status"] == 3
    assert (await client.post("/__fake/users/dave/resume")).json()["status"] == 2
    drop = await client.post(f"/__fake/streams/{sid}/drop", json={"after_bytes": 5, "mode": "x"})
    assert drop.status_code == 400
    bad_profile = await client.post(f"/__fake/streams/{sid}/switch", json={"profile": "nope"})
    assert bad_profile.status_code == 400
    scenario = await client.put("/__fake/scenario", json={"waf": True, "rate_limit": None})
    assert scenario.json()["waf"] is True
    assert (await client.put("/__fake/scenario", json={"bogus": 1})).status_code == 400
    assert (await client.post("/__fake/users/nobody/live")).status_code == 404
    end = await client.post("/__fake/users/dave/end", json={"mode": "eof"})
    assert end.json()["status"] == 4
    assert (await client.post("/__fake/reset")).status_code == 200
    assert (await client.get("/__fake/users")).json() == []
    assert (await client.get("/__fake/scenario")).json()["waf"] is False

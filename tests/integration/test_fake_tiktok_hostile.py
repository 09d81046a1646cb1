"""The fake TikTok's late-2026 hostility: each flag is hostile, and a correct client passes."""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from shared.tiktok.waf import parse_challenge, solve, solve_in_thread
from tests.integration.fake_tiktok.helpers import (
    WAIT_S,
    live_user,
    room_info,
    stream_data_of,
    walk_tags,
)
from tlr.fake_tiktok import HARSH, KIND, FakeTikTok
from tlr.fake_tiktok.defences import WafChallenges
from tlr.fake_tiktok.state import Scenario

FAKE_TIKTOK_OPTIONS = {"speed": 20.0}
FAST_WAF = 2_000  # challenge answers below this: solved in about a millisecond

BROWSER = {
    "User-Agent": (
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
        "(KHTML, like Gecko) Chrome/136.0.0.0 Safari/537.36"
    ),
    "Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
    "Sec-Fetch-Mode": "navigate",
    "Sec-Fetch-Dest": "document",
    "Sec-Fetch-Site": "none",
}
WWW_PAGES = ("/@alice", "/@alice/live", "/live")
# yt-dlp's pattern: the state script under either id.
_SIGI_RE = re.compile(
    r'<script[^>]+\bid="(?:SIGI_STATE|sigi-persisted-data)"[^>]*>(?P<json>.+?)</script>', re.S
)
_UNIVERSAL_RE = re.compile(
    r'<script[^>]+\bid="__UNIVERSAL_DATA_FOR_REHYDRATION__"[^>]*>(?P<json>.+?)</script>', re.S
)
_APP_ROOM_RE = re.compile(
    r'<meta property="al:android:url" content="snssdk1233://live\?room_id=(?P<id>\d+)">'
)


@pytest.fixture
def fake(fake_tiktok: FakeTikTok) -> FakeTikTok:
    return fake_tiktok


@pytest.fixture
async def client(fake: FakeTikTok) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=fake.base_url, timeout=WAIT_S) as http:
        yield http


# --- a correct client ----------------------------------------------------------------------


def cookie_header(cookies: dict[str, str]) -> str:
    return "; ".join(f"{name}={value}" for name, value in cookies.items())


async def solved_cookies(page: httpx.Response) -> dict[str, str]:
    challenge = parse_challenge(page.text)
    assert challenge is not None, "not a challenge page"
    return await solve_in_thread(challenge)


async def browse(client: httpx.AsyncClient, path: str, max_steps: int = 6) -> httpx.Response:
    """GET a www page as a browser would: follow tiktok.com redirects, solve challenges."""
    headers = dict(BROWSER)
    for _ in range(max_steps):
        response = await client.get(path, headers=headers)
        headers.pop("Cookie", None)  # a solution is good for one request only
        if response.status_code in (301, 302):
            path = response.headers["location"]
            assert not path.startswith("/login"), "country blocked"
        elif parse_challenge(response.text) is not None:
            headers["Cookie"] = cookie_header(await solved_cookies(response))
        else:
            return response
    pytest.fail(f"no page after {max_steps} steps for {path}")


async def sign(client: httpx.AsyncClient, url: str) -> httpx.Response:
    return await client.post("/__fake/sign", json={"url": url})


def api_live_url(fake: FakeTikTok, user: str) -> str:
    return f"{fake.base_url}/api-live/user/room/?aid=1988&sourceType=54&uniqueId={user}"


def state_of(html: str) -> dict[str, Any]:
    match = _SIGI_RE.search(html)
    assert match is not None, "no SIGI state script"
    state: dict[str, Any] = json.loads(match["json"])
    return state


def is_challenge(response: httpx.Response) -> bool:
    return response.status_code == 200 and parse_challenge(response.text) is not None


async def first_bytes(client: httpx.AsyncClient, url: str, count: int) -> bytes:
    """The first `count` bytes of a playing FLV (the stream is endless; stop reading there)."""
    data = bytearray()
    async with client.stream("GET", url) as response:
        assert response.status_code == 200
        assert response.headers["content-type"] == "video/x-flv"
        async for chunk in response.aiter_raw():
            data += chunk
            if len(data) >= count:
                break
    return bytes(data)


# --- scenario and stats --------------------------------------------------------------------


async def test_new_flags_default_to_harsh_and_kind_differs(client: httpx.AsyncClient) -> None:
    shown = (await client.get("/__fake/scenario")).json()
    defaults = {f.name: f.default for f in dataclasses.fields(Scenario)}
    assert HARSH
    assert set(KIND) == set(HARSH)
    for flag, harsh in HARSH.items():
        assert shown[flag] == defaults[flag] == harsh, flag
        assert KIND[flag] != harsh, flag
    assert shown["waf_difficulty"] == 1_000_000
    assert shown["dead_rung_mode"] == "404"
    fault_modes = (
        "signer_down",
        "room_info_restricted",
        "live_page_soft_block",
        "api_live_user_not_found",
        "room_info_10011_for_age_gated",
    )
    assert {flag: shown[flag] for flag in fault_modes} == dict.fromkeys(fault_modes, False)

    put = await client.put("/__fake/scenario", json=KIND)
    assert put.status_code == 200
    assert {flag: put.json()[flag] for flag in KIND} == KIND
    assert (await client.post("/__fake/reset")).status_code == 200
    after_reset = (await client.get("/__fake/scenario")).json()
    assert {flag: after_reset[flag] for flag in HARSH} == HARSH


@pytest.mark.parametrize(
    "bad",
    [
        {"waf_difficulty": 0},
        {"waf_difficulty": 1_000_001},
        {"waf_difficulty": True},
        {"dead_rung_mode": "gone"},
        {"sigi_script_id": "NEXT_DATA"},
        {"room_info_restricted": "yes"},
    ],
)
async def test_bad_flags_change_nothing(client: httpx.AsyncClient, bad: dict[str, Any]) -> None:
    before = (await client.get("/__fake/scenario")).json()
    change = {"waf_challenge": not before["waf_challenge"]}  # valid, and not the current value
    response = await client.put("/__fake/scenario", json={**change, **bad})
    assert response.status_code == 400
    assert "error" in response.json()
    assert (await client.get("/__fake/scenario")).json() == before


async def test_stats_endpoint_and_reset(fake: FakeTikTok, client: httpx.AsyncClient) -> None:
    await fake.set_scenario(**KIND)
    await fake.set_scenario(waf_challenge=True, waf_difficulty=FAST_WAF)
    assert is_challenge(await client.get("/live", headers=BROWSER))
    assert (await sign(client, api_live_url(fake, "alice"))).status_code == 200
    stats = (await client.get("/__fake/stats")).json()
    assert stats == await fake.stats()
    assert stats == {
        "waf_challenges_issued": 1,
        "waf_solutions_accepted": 0,
        "waf_solutions_rejected": 0,
        "access_denied": 0,
        "sign_calls": 1,
        "signatures_issued": 1,
    }
    await client.post("/__fake/reset")
    assert set((await fake.stats()).values()) == {0}


# --- 1, 2: the WAF proof of work -----------------------------------------------------------


async def test_waf_challenge_is_solvable_and_single_use(
    fake: FakeTikTok, client: httpx.AsyncClient
) -> None:
    handle = await live_user(fake)
    await fake.set_scenario(**KIND)
    for path in WWW_PAGES:
        assert not is_challenge(await client.get(path, headers=BROWSER)), path
    kind = await client.get("/@alice/live", headers=BROWSER)
    assert state_of(kind.text)["CurrentRoom"]["roomId"] == handle.room_id
    assert "set-cookie" not in kind.headers

    await fake.set_scenario(waf_challenge=True, waf_difficulty=FAST_WAF)
    for path in WWW_PAGES:
        page = await client.get(path, headers=BROWSER)
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        assert "<title>Please wait...</title>" in page.text
        assert "SIGI_STATE" not in page.text
        assert handle.room_id not in page.text
        set_cookie = page.headers["set-cookie"]
        assert set_cookie.startswith("_wafchallengeid=")
        assert "Max-Age=1" in set_cookie
        challenge = parse_challenge(page.text)
        assert challenge is not None
        assert challenge.cookie_name == "_wafchallengeid"
        assert challenge.extra_cookie is not None
        assert challenge.extra_cookie[0] == "waforiginalreid"

    page = await client.get("/@alice/live", headers=BROWSER)
    solution = cookie_header(await solved_cookies(page))
    passed = await client.get("/@alice/live", headers={**BROWSER, "Cookie": solution})
    assert passed.status_code == 200
    assert not is_challenge(passed)
    assert state_of(passed.text)["CurrentRoom"]["roomId"] == handle.room_id

    reused = await client.get("/@alice/live", headers={**BROWSER, "Cookie": solution})
    assert is_challenge(reused)
    forged = await client.get("/@alice", headers={**BROWSER, "Cookie": "_wafchallengeid=eyJ9"})
    assert is_challenge(forged)
    assert await fake.stats() == {
        "waf_challenges_issued": 6,
        "waf_solutions_accepted": 1,
        "waf_solutions_rejected": 1,  # the reused one; junk is no solution at all
        "access_denied": 0,
        "sign_calls": 0,
        "signatures_issued": 0,
    }
    # The legacy flag stays an unsolvable block.
    await fake.set_scenario(waf=True)
    blocked = await client.get("/@alice/live", headers=BROWSER)
    with pytest.raises(ValueError, match="unreadable"):
        parse_challenge(blocked.text)


async def test_waf_challenge_at_the_default_bound(
    fake: FakeTikTok, client: httpx.AsyncClient
) -> None:
    handle = await live_user(fake)
    await fake.set_scenario(waf_challenge=True)
    profile = await browse(client, "/@alice")
    assert profile.status_code == 200
    assert handle.room_id in profile.text
    assert (await fake.stats())["waf_solutions_accepted"] == 1


def test_open_challenges_are_bounded() -> None:
    challenges = WafChallenges(limit=2)
    pages = [challenges.issue(50) for _ in range(3)]
    solutions = []
    for page in pages:
        challenge = parse_challenge(page)
        assert challenge is not None
        solutions.append(solve(challenge, limit=50)["_wafchallengeid"])
    assert len(challenges) == 2
    assert challenges.check([solutions[0]]) == "spent"  # the oldest was forgotten
    assert challenges.check([solutions[2]]) == "accepted"
    assert challenges.check([solutions[2]]) == "spent"
    assert challenges.check(["junk"]) == "none"
    assert challenges.check(["junk", solutions[1]]) == "accepted"
    assert len(challenges) == 0


# --- 3, 4: signed api-live and the signing service ----------------------------------------


async def test_api_live_needs_the_signers_x_bogus(
    fake: FakeTikTok, client: httpx.AsyncClient
) -> None:
    handle = await live_user(fake)
    await fake.create_user("bob")
    unsigned = api_live_url(fake, "alice")
    await fake.set_scenario(**KIND)
    assert (await client.get(unsigned)).json()["data"]["user"]["roomId"] == handle.room_id

    await fake.set_scenario(api_live_requires_signature=True)
    for url in (unsigned, unsigned + "&X-Bogus=DFSzswVOe2tANxBbtPqXv3NjD6y6"):
        response = await client.get(url)
        assert (response.status_code, response.content) == (200, b"")

    signed = await sign(client, unsigned)
    assert signed.status_code == 200
    signed_url = signed.json()["signed_url"]
    prefix, _, signature = signed_url.partition("&X-Bogus=")
    assert prefix == unsigned
    assert len(signature) == 28
    body = (await client.get(signed_url)).json()
    assert body["statusCode"] == 0
    assert body["data"]["user"]["roomId"] == handle.room_id
    assert isinstance(body["data"]["liveRoom"]["streamData"]["pull_data"]["stream_data"], str)

    # The signature covers the query: it does not carry over to another user.
    other = (await client.get(signed_url.replace("uniqueId=alice", "uniqueId=bob"))).content
    assert other == b""


@pytest.mark.parametrize(
    "body",
    [
        {"url": "http://127.0.0.1/webcast/room/info/?aid=1988&room_id=1"},
        {"url": ""},
        {"unique_id": "alice"},
        ["http://127.0.0.1/api-live/user/room/?uniqueId=alice"],
    ],
)
async def test_signer_refuses_bad_requests(client: httpx.AsyncClient, body: object) -> None:
    response = await client.post("/__fake/sign", json=body)
    assert response.status_code == 400
    assert response.json()["error"]


async def test_signer_down(fake: FakeTikTok, client: httpx.AsyncClient) -> None:
    await fake.set_scenario(signer_down=True)
    response = await sign(client, api_live_url(fake, "alice"))
    assert response.status_code == 503
    assert response.json()["error"]
    await fake.set_scenario(signer_down=False)
    assert (await sign(client, api_live_url(fake, "alice"))).status_code == 200
    stats = await fake.stats()
    assert (stats["sign_calls"], stats["signatures_issued"]) == (2, 1)


# --- 5, 6: a dead top rung, backup URLs ---------------------------------------------------


async def test_backup_urls_beside_every_main(fake: FakeTikTok, client: httpx.AsyncClient) -> None:
    handle = await live_user(fake)
    await fake.set_scenario(**KIND)
    without = stream_data_of(await room_info(client, handle.room_id))["data"]
    assert without
    assert all("backup" not in entry for entry in without.values())

    await fake.set_scenario(backup_urls=True)
    info = await room_info(client, handle.room_id)
    qualities = stream_data_of(info)["data"]
    assert set(qualities) == {"origin", "uhd", "hd", "sd", "ld", "ao"}
    for key, entry in qualities.items():
        assert set(entry["backup"]) == set(entry["main"]), key
        backup_path = urlsplit(entry["backup"]["flv"]).path
        assert backup_path == "/bk" + urlsplit(entry["main"]["flv"]).path, key
    assert qualities["ao"]["backup"]["flv"].endswith("&only_audio=1")
    assert set(info["data"]["stream_url"]["flv_pull_url"]) == {"HD1", "SD2", "SD1"}


@pytest.mark.parametrize("cap_720", [False, True])
async def test_dead_top_rung_404_while_its_backup_plays(
    fake: FakeTikTok, client: httpx.AsyncClient, cap_720: bool
) -> None:
    handle = await live_user(fake)
    top = "hd" if cap_720 else "origin"
    await fake.set_scenario(**KIND, quality_cap_720=cap_720)
    kind_info = await room_info(client, handle.room_id)
    top_main = stream_data_of(kind_info)["data"][top]["main"]["flv"]
    assert kind_info["data"]["stream_url"]["rtmp_pull_url"] == top_main
    assert walk_tags(await first_bytes(client, top_main, 4096))

    await fake.set_scenario(dead_top_rung=True, backup_urls=True)
    info = await room_info(client, handle.room_id)
    qualities = stream_data_of(info)["data"]
    dead = qualities[top]["main"]["flv"]
    assert info["data"]["stream_url"]["rtmp_pull_url"] == dead
    assert (await client.get(dead)).status_code == 404
    assert (await client.get(top_main)).status_code == 404  # dead at request time, not issue
    if cap_720:
        assert info["data"]["stream_url"]["flv_pull_url"]["HD1"] == dead

    backup = await first_bytes(client, qualities[top]["backup"]["flv"], 4096)
    assert backup[:3] == b"FLV"
    assert walk_tags(backup)
    below = await first_bytes(client, qualities["sd"]["main"]["flv"], 4096)
    assert walk_tags(below)
    audio = await first_bytes(client, qualities["ao"]["main"]["flv"], 1024)
    assert audio[:3] == b"FLV"


async def test_dead_top_rung_empty_mode(fake: FakeTikTok, client: httpx.AsyncClient) -> None:
    handle = await live_user(fake)
    await fake.set_scenario(**KIND, dead_rung_mode="empty")
    info = await room_info(client, handle.room_id)
    top_main = info["data"]["stream_url"]["rtmp_pull_url"]
    assert walk_tags(await first_bytes(client, top_main, 4096))  # the mode alone kills nothing

    await fake.set_scenario(dead_top_rung=True)
    info = await room_info(client, handle.room_id)
    dead = await client.get(info["data"]["stream_url"]["rtmp_pull_url"])
    assert dead.status_code == 200
    assert dead.headers["content-type"] == "video/x-flv"
    assert dead.content == b"FLV\x01\x05\x00\x00\x00\x09\x00\x00\x00\x00"
    assert walk_tags(dead.content) == []
    assert "backup" not in stream_data_of(info)["data"]["origin"]  # backups are their own flag


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


# --- 11: browser screening ----------------------------------------------------------------


async def test_require_browser_headers(fake: FakeTikTok, client: httpx.AsyncClient) -> None:
    handle = await live_user(fake)
    await fake.set_scenario(**KIND)
    for path in WWW_PAGES:
        assert (await client.get(path)).status_code == 200, path  # python-httpx's own UA

    await fake.set_scenario(require_browser_headers=True)
    no_navigate = {k: v for k, v in BROWSER.items() if k != "Sec-Fetch-Mode"}
    refused = [
        {},  # python-httpx's own User-Agent
        {**BROWSER, "User-Agent": "curl/8.5.0"},
        no_navigate,
        {**BROWSER, "Origin": "https://www.tiktok.com"},
    ]
    for path in WWW_PAGES:
        for headers in refused:
            response = await client.get(path, headers=headers)
            assert response.status_code == 403, (path, headers)
            assert response.headers["content-type"].startswith("text/html")
            assert "Access Denied" in response.text
            assert parse_challenge(response.text) is None  # nothing to solve
        browser = await client.get(path, headers=BROWSER)
        assert browser.status_code == 200
        assert "Access Denied" not in browser.text
    assert (await fake.stats())["access_denied"] == len(WWW_PAGES) * len(refused)
    # APIs are not navigations and are not screened this way.
    assert (await room_info(client, handle.room_id))["status_code"] == 0


# --- all of it at once ---------------------------------------------------------------------


async def test_harsh_tiktok_still_resolves_for_a_correct_client(
    fake: FakeTikTok, client: httpx.AsyncClient
) -> None:
    handle = await live_user(fake)
    flags = await fake.set_scenario(**HARSH, waf_difficulty=FAST_WAF)
    assert {flag: flags[flag] for flag in HARSH} == HARSH

    # A naive client gets nothing from www and an empty api-live.
    assert (await client.get("/@alice/live")).status_code == 403
    assert is_challenge(await client.get("/@alice/live", headers=BROWSER))
    assert (await client.get(api_live_url(fake, "alice"))).content == b""

    profile = await browse(client, "/@Alice/")
    universal = _UNIVERSAL_RE.search(profile.text)
    assert universal is not None
    detail = json.loads(universal["json"])["__DEFAULT_SCOPE__"]["webapp.user-detail"]
    assert detail["userInfo"]["user"]["roomId"] == handle.room_id

    live = await browse(client, "/@alice/live")
    assert state_of(live.text)["CurrentRoom"]["roomId"] == ""
    app_room = _APP_ROOM_RE.search(live.text)
    assert app_room is not None
    assert app_room["id"] == handle.room_id

    signed_url = (await sign(client, api_live_url(fake, "alice"))).json()["signed_url"]
    api = (await client.get(signed_url)).json()
    assert api["data"]["user"]["roomId"] == handle.room_id

    qualities = stream_data_of(await room_info(client, handle.room_id))["data"]
    assert (await client.get(qualities["origin"]["main"]["flv"])).status_code == 404
    assert walk_tags(await first_bytes(client, qualities["origin"]["backup"]["flv"], 4096))
    stats = await fake.stats()
    assert stats["waf_solutions_accepted"] == 2
    assert stats["access_denied"] == 1

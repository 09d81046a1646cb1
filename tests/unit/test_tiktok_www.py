"""www.tiktok.com as a browser meets it: the WAF proof of work, redirects, headers, cookies,
and the resolution chain (profile page, live page, signed api-live) with its not-found rule.

No network: httpx.MockTransport plays TikTok, the way tests/unit/tiktok_parsing does.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY

from shared.tiktok import (
    AgeRestricted,
    CountryBlocked,
    RoomRef,
    TikTokClient,
    UnexpectedResponse,
    UserNotFound,
    WafBlocked,
    waf,
)
from shared.tiktok.http import Step

ROOM = "7503448765740976902"
Handler = Callable[[httpx.Request], httpx.Response]


def script(script_id: str, state: object) -> str:
    return f'<html><script id="{script_id}" type="application/json">{json.dumps(state)}</script>'


def profile(room_id: str) -> str:
    detail = {"statusCode": 0, "userInfo": {"user": {"uniqueId": "alice", "roomId": room_id}}}
    return script(
        "__UNIVERSAL_DATA_FOR_REHYDRATION__", {"__DEFAULT_SCOPE__": {"webapp.user-detail": detail}}
    )


def live_page(room_id: str) -> str:
    user = {"uniqueId": "alice", "roomId": room_id, "status": 2}
    state = {"LiveRoom": {"liveRoomStatus": 2, "liveRoomUserInfo": {"user": user}}}
    return script("SIGI_STATE", state)


NOT_FOUND_PROFILE = script(
    "__UNIVERSAL_DATA_FOR_REHYDRATION__",
    {"__DEFAULT_SCOPE__": {"webapp.user-detail": {"statusCode": 10221, "userInfo": {}}}},
)
NOT_FOUND_LIVE = script("SIGI_STATE", {"UserModule": {}})
BLOCK_PAGE = "<html><title>Please wait...</title>Please wait...</html>"


def challenge_page(answer: int, prefix: bytes) -> str:
    return (
        "<html><title>Please wait...</title>"
        + waf.make_challenge(answer, prefix=prefix, extra_cookie=("waforiginalreid", "r1"))
        + "</html>"
    )


def client(handler: Handler, **kwargs: Any) -> TikTokClient:
    return TikTokClient(
        web_base="http://web.test",
        webcast_base="http://webcast.test",
        transport=httpx.MockTransport(handler),
        **kwargs,
    )


def cookies_of(request: httpx.Request) -> dict[str, str]:
    header = request.headers.get("cookie", "")
    pairs = [part.split("=", 1) for part in header.split("; ") if "=" in part]
    return dict(pairs)


# --- the proof of work -------------------------------------------------------------------------


def test_a_challenge_round_trips_through_the_solver() -> None:
    prefix = os.urandom(16)
    challenge = waf.parse_challenge(challenge_page(4321, prefix))
    assert challenge is not None
    assert challenge.cookie_name == "_wafchallengeid"
    assert waf.find_answer(challenge) == 4321
    before = REGISTRY.get_sample_value("tlr_tiktok_waf_challenges_total", {"outcome": "solved"})
    cookies = waf.solve(challenge)
    after = REGISTRY.get_sample_value("tlr_tiktok_waf_challenges_total", {"outcome": "solved"})
    assert (after or 0) - (before or 0) == 1
    assert cookies["waforiginalreid"] == "r1"
    assert waf.solved_prefix(cookies["_wafchallengeid"]) == prefix
    # the answer sits in the JSON as "d", base64 of its decimal string
    solved = json.loads(waf._b64decode(cookies["_wafchallengeid"]))
    assert waf._b64decode(solved["d"]) == b"4321"


def test_pages_without_or_with_a_broken_challenge() -> None:
    assert waf.parse_challenge("<html>an ordinary page</html>") is None
    assert waf.parse_challenge(BLOCK_PAGE) is None  # a block without a puzzle
    broken = '<p id="wci" class="_wafchallengeid"></p><p id="cs" class="%%%"></p>'
    with pytest.raises(waf.ChallengeError):
        waf.parse_challenge(broken)


def test_an_answer_beyond_the_bound_is_unsolvable_and_a_wrong_cookie_is_refused() -> None:
    prefix = os.urandom(16)
    challenge = waf.parse_challenge(challenge_page(900, prefix))
    assert challenge is not None
    with pytest.raises(waf.ChallengeError):
        waf.solve(challenge, limit=100)
    wrong = waf.solution_cookies(challenge, 899)["_wafchallengeid"]
    assert waf.solved_prefix(wrong) is None
    assert waf.solved_prefix("not base64 json") is None


# --- pages: challenge, redirects, headers --------------------------------------------------------


async def test_a_challenged_page_is_solved_and_fetched_again_with_the_answer() -> None:
    prefix = os.urandom(16)
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        answered = cookies_of(request).get("_wafchallengeid", "")
        if waf.solved_prefix(answered) == prefix:
            return httpx.Response(200, text=profile(ROOM))
        # a cookie the WAF sets on its page must not travel to the next request
        return httpx.Response(
            200,
            text=challenge_page(777, prefix),
            headers={"Set-Cookie": "_wafchallengeid=stale; Max-Age=1; Path=/"},
        )

    steps: list[Step] = []
    async with client(handler, cookies={"sessionid": "s1"}, trace=steps.append) as c:
        assert await c.resolve("@alice") == RoomRef(ROOM, "alice")
    assert len(seen) == 2
    assert cookies_of(seen[0]) == {"sessionid": "s1"}
    assert set(cookies_of(seen[1])) == {"sessionid", "_wafchallengeid", "waforiginalreid"}
    assert [s.waf for s in steps] == ["solved", "passed"]
    for request in seen:  # a top-level navigation, as a browser sends it
        assert request.headers["sec-fetch-mode"] == "navigate"
        assert request.headers["sec-fetch-dest"] == "document"
        assert "origin" not in request.headers
        assert "Chrome/" in request.headers["user-agent"]
        assert request.headers["sec-ch-ua"].startswith('"Chromium";v="')


async def test_a_refused_answer_or_an_unsolvable_page_moves_on_to_the_live_page() -> None:
    prefix = os.urandom(16)

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/@alice":
            return httpx.Response(200, text=challenge_page(3, prefix))  # refuses every answer
        return httpx.Response(200, text=live_page(ROOM))

    steps: list[Step] = []
    async with client(handler, trace=steps.append) as c:
        assert await c.resolve("@alice") == RoomRef(ROOM, "alice")
    assert [(s.endpoint, s.waf) for s in steps] == [
        ("profile_page", "solved"),
        ("profile_page", "refused"),
        ("live_page", None),
    ]


async def test_redirects_within_tiktok_are_followed_and_only_login_is_a_block() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path == "/@Alice":
            return httpx.Response(301, headers={"Location": "/@alice/"})
        if path == "/@alice/":
            return httpx.Response(301, headers={"Location": "https://www.tiktok.com/@alice"})
        if path == "/@alice":
            return httpx.Response(200, text=profile(ROOM))
        if path == "/@bob":
            return httpx.Response(302, headers={"Location": "/login?redirect_url=x"})
        if path == "/@eve":
            return httpx.Response(302, headers={"Location": "https://evil.example/@eve"})
        return httpx.Response(404)

    async with client(handler) as c:
        assert (await c.profile_page("Alice")).ref == RoomRef(ROOM, "alice")
        with pytest.raises(CountryBlocked):
            await c.profile_page("bob")
        with pytest.raises(UnexpectedResponse, match="away from TikTok"):
            await c.profile_page("eve")


async def test_api_calls_look_like_the_web_app_and_carry_no_stored_cookie() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        body = {"data": [], "status_code": 0}
        return httpx.Response(200, json=body, headers={"Set-Cookie": "ttwid=t; Path=/"})

    async with client(handler, user_agent="Mozilla/5.0 Firefox/140.0") as c:
        for _ in range(2):
            with pytest.raises(WafBlocked):
                await c.check_alive([ROOM])
    assert len(seen) == 2
    for request in seen:
        assert request.headers["origin"] == "https://www.tiktok.com"
        assert request.headers["sec-fetch-mode"] == "cors"
        assert request.headers["user-agent"] == "Mozilla/5.0 Firefox/140.0"
        assert "sec-ch-ua" not in request.headers  # not a Chrome: no Chrome client hints
        assert "cookie" not in request.headers


# --- the resolution chain ---------------------------------------------------------------------


async def test_one_not_found_is_not_believed_two_are() -> None:
    pages = {"/@alice": NOT_FOUND_PROFILE, "/@alice/live": BLOCK_PAGE}

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, text=pages[request.url.path])

    async with client(handler) as c:
        with pytest.raises(WafBlocked):  # retryable: the live page could not confirm it
            await c.resolve("@alice")
        pages["/@alice/live"] = NOT_FOUND_LIVE
        with pytest.raises(UserNotFound, match="profile statusCode 10221"):
            await c.resolve("@alice")
        pages["/@alice/live"] = live_page(ROOM)  # a soft-blocked profile, a good live page
        assert await c.resolve("@alice") == RoomRef(ROOM, "alice")


async def test_api_live_is_asked_only_through_a_signer() -> None:
    asked: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        asked.append(request.url.path)
        if request.url.host == "signer.test":
            unsigned = json.loads(request.content)["url"]
            return httpx.Response(200, json={"signed_url": unsigned + "&X-Bogus=abc"})
        if request.url.path == "/api-live/user/room/":
            assert request.url.params["X-Bogus"] == "abc"
            user = {"uniqueId": "alice", "roomId": ROOM, "status": 2}
            return httpx.Response(200, json={"statusCode": 0, "data": {"user": user}})
        return httpx.Response(200, text=BLOCK_PAGE)

    async with client(handler) as c:
        with pytest.raises(WafBlocked):
            await c.resolve("@alice")
    assert "/api-live/user/room/" not in asked  # unsigned it only ever answers an empty body

    signer = _mock_signer(handler)
    async with client(handler, signer=signer) as c:
        assert await c.resolve("@alice") == RoomRef(ROOM, "alice")
    await signer.aclose()


async def test_a_signer_that_points_elsewhere_is_refused() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "signer.test":
            return httpx.Response(200, json={"signed_url": "http://evil.example/x"})
        return httpx.Response(200, text=BLOCK_PAGE)

    signer = _mock_signer(handler)
    async with client(handler, signer=signer) as c:
        with pytest.raises(UnexpectedResponse, match="another place"):
            await c.user_room("alice")
    await signer.aclose()


def _mock_signer(handler: Handler) -> Any:
    from shared.tiktok import Signer

    signer = Signer("http://signer.test/sign")
    signer._http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    return signer


async def test_10011_of_a_room_check_alive_knows_is_not_a_missing_room() -> None:
    alive = {"data": [{"alive": True, "room_id_str": ROOM}], "status_code": 0}
    params_error = {"data": {"message": "Request params error"}, "status_code": 10011}

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("check_alive/"):
            return httpx.Response(200, json=alive)
        return httpx.Response(200, json=params_error)

    async with client(handler) as c:
        with pytest.raises(AgeRestricted):  # TikTokLive #228: 10011 for an 18+ live
            await c.room_info(ROOM)
        alive["data"] = []  # check_alive does not know it either: it does not exist
        with pytest.raises(UserNotFound):
            await c.room_info(ROOM)

"""The fake's WAF: single-use proof-of-work challenges, and screening of non-browser requests."""

from __future__ import annotations

import httpx
import pytest

from shared.tiktok.waf import parse_challenge, solve
from tests.integration.fake_tiktok.correct_client import (
    BROWSER,
    FAST_WAF,
    WWW_PAGES,
    browse,
    cookie_header,
    is_challenge,
    solved_cookies,
    state_of,
)
from tests.integration.fake_tiktok.helpers import live_user, room_info
from tlr.fake_tiktok import KIND, FakeTikTok
from tlr.fake_tiktok.defences import WafChallenges

FAKE_TIKTOK_OPTIONS = {"speed": 20.0}


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

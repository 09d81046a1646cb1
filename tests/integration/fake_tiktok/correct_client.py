"""A correct client of the hostile fake TikTok: browser headers, solved WAF challenges, signing."""

from __future__ import annotations

import json
import re
from typing import Any

import httpx
import pytest

from shared.tiktok.waf import parse_challenge, solve_in_thread
from tlr.fake_tiktok import FakeTikTok

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

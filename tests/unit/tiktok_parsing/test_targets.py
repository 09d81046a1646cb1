"""Targets (room ids, users, TikTok URLs, short links) parse and resolve; other hosts refused."""

from __future__ import annotations

import httpx
import pytest

from shared.tiktok import RoomRef, Target, UnexpectedResponse, parse_target
from tests.unit.tiktok_parsing.helpers import ROOM, mock_client, no_network, profile_html

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

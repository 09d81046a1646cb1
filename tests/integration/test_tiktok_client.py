"""TikTokClient over real HTTP against the fake TikTok: resolution, batch checks, confirmation,
stream choice, and every failure mapped to its ErrorCode (TIKTOK.md §5.6)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager

import httpx
import pytest
import structlog
from prometheus_client import REGISTRY

from shared.errors import ErrorCode
from shared.tiktok import (
    AgeRestricted,
    CountryBlocked,
    LiveOffline,
    NetworkTimeout,
    RoomRef,
    TikTokClient,
    UserNotFound,
    WafBlocked,
    choose_stream,
)
from shared.tiktok import client as client_module
from tests.fake_tiktok.server import FakeTikTok

# 20x real time: the first FLV kilobytes arrive at once.
FAKE_TIKTOK_OPTIONS = {"speed": 20.0}
UNKNOWN_ROOM = "7999999999999999999"

ClientFactory = Callable[..., AbstractAsyncContextManager[TikTokClient]]


@pytest.fixture
def make_client(fake_tiktok: FakeTikTok) -> ClientFactory:
    """TikTokClient factory aimed at the fake: only the base URLs differ from production."""

    def make(**kwargs: object) -> TikTokClient:
        return TikTokClient(
            web_base=fake_tiktok.base_url,
            webcast_base=fake_tiktok.base_url,
            timeout=5.0,
            **kwargs,  # type: ignore[arg-type]
        )

    return make


@pytest.fixture
async def client(make_client: ClientFactory) -> AsyncIterator[TikTokClient]:
    async with make_client() as c:
        yield c


def requests_total(endpoint: str, outcome: str) -> float:
    value = REGISTRY.get_sample_value(
        "tlr_tiktok_requests_total", {"endpoint": endpoint, "outcome": outcome}
    )
    return value or 0.0


# --- resolution ---------------------------------------------------------------------------


async def test_resolve_user_and_live_url_to_the_current_room(
    fake_tiktok: FakeTikTok, client: TikTokClient
) -> None:
    await fake_tiktok.create_user("alice")
    live = await fake_tiktok.go_live("alice", title="hi")
    expected = RoomRef(live.room_id, "alice")
    assert await client.resolve("@alice") == expected
    assert await client.resolve("alice") == expected
    assert await client.resolve("https://www.tiktok.com/@alice/live") == expected
    assert await client.resolve("https://m.tiktok.com/@alice") == expected

    (first, *_) = await fake_tiktok.requests("/api-live/user/room/")
    assert first["query"]["aid"] == "1988"
    assert first["query"]["uniqueId"] == "alice"
    headers = first["headers"]
    assert "Chrome/" in headers["user-agent"]
    assert headers["referer"] == "https://www.tiktok.com/"
    assert headers["origin"] == "https://www.tiktok.com"
    assert headers["accept-language"].startswith("en-US")


async def test_stale_and_missing_room_ids(fake_tiktok: FakeTikTok, client: TikTokClient) -> None:
    await fake_tiktok.create_user("alice")
    await fake_tiktok.create_user("bob")
    live = await fake_tiktok.go_live("alice")
    await fake_tiktok.end("alice")
    # A finished live keeps its room id; room/info says it is over.
    assert await client.resolve("@alice") == RoomRef(live.room_id, "alice")
    with pytest.raises(LiveOffline) as caught:
        await client.confirm_live(live.room_id)
    assert caught.value.code is ErrorCode.LIVE_OFFLINE
    assert caught.value.status == 4
    # Never live: the user exists, no room.
    assert await client.resolve("@bob") == RoomRef(None, "bob")


async def test_unknown_user_and_room(fake_tiktok: FakeTikTok, client: TikTokClient) -> None:
    with pytest.raises(UserNotFound) as caught:
        await client.resolve("@nobody")
    assert caught.value.code is ErrorCode.USER_NOT_FOUND
    # api-live answered: no fallback to the live page was needed
    assert await fake_tiktok.requests("/@") == []
    with pytest.raises(UserNotFound):
        await client.live_page_room("nobody")  # SIGI_STATE without LiveRoom
    with pytest.raises(UserNotFound):
        await client.room_info(UNKNOWN_ROOM)  # 10011


# --- check_alive and confirmation ---------------------------------------------------------


async def test_check_alive_is_one_batched_request(
    fake_tiktok: FakeTikTok, client: TikTokClient
) -> None:
    for name in ("alice", "bob", "carol"):
        await fake_tiktok.create_user(name)
    alice = await fake_tiktok.go_live("alice")
    bob = await fake_tiktok.go_live("bob")
    carol = await fake_tiktok.go_live("carol")
    await fake_tiktok.end("bob")
    await fake_tiktok.pause("carol")

    ids = [bob.room_id, UNKNOWN_ROOM, alice.room_id, carol.room_id, alice.room_id]
    alive = await client.check_alive(ids)
    assert alive == {alice.room_id: True, bob.room_id: False, carol.room_id: True}

    (call,) = await fake_tiktok.requests("/webcast/room/check_alive/")
    assert call["query"]["room_ids"].split(",") == ids[:4]  # de-duplicated, order kept
    assert call["query"]["aid"] == "1988"
    # paused is live-but-paused, never ended
    paused = await client.confirm_live(carol.room_id)
    assert paused.is_paused


async def test_fake_alive_is_caught_by_confirm_live(
    fake_tiktok: FakeTikTok, client: TikTokClient
) -> None:
    await fake_tiktok.create_user("alice")
    live = await fake_tiktok.go_live("alice")
    await fake_tiktok.end("alice")
    await fake_tiktok.set_scenario(fake_alive=True)
    assert await client.check_alive([live.room_id]) == {live.room_id: True}
    with pytest.raises(LiveOffline):
        await client.confirm_live(live.room_id)


async def test_live_room_info_gives_a_playable_flv_url(
    fake_tiktok: FakeTikTok, client: TikTokClient
) -> None:
    await fake_tiktok.create_user("alice", nickname="Alice A")
    live = await fake_tiktok.go_live("alice", title="cooking")
    ok_before = requests_total("room_info", "ok")
    info = await client.confirm_live(live.room_id)
    assert requests_total("room_info", "ok") == ok_before + 1
    assert (info.room_id, info.status, info.title) == (live.room_id, 2, "cooking")
    assert (info.unique_id, info.nickname) == ("alice", "Alice A")
    assert {"origin", "hd", "sd", "ld", "ao"} <= set(info.streams)

    variant = choose_stream(info)
    assert variant.quality == "origin"
    assert variant.flv_url.startswith(f"{fake_tiktok.base_url}/game/stream-{live.stream_id}")
    assert "\\u0026" not in variant.flv_url
    received = bytearray()
    async with (
        asyncio.timeout(10),
        httpx.AsyncClient() as http,
        http.stream("GET", variant.flv_url) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"] == "video/x-flv"
        async for chunk in response.aiter_bytes():
            received += chunk
            if len(received) >= 4096:
                break
    assert received[:3] == b"FLV"


# --- restricted rooms and cookies ---------------------------------------------------------


async def test_age_restricted_needs_a_session_cookie(
    fake_tiktok: FakeTikTok, client: TikTokClient, make_client: ClientFactory
) -> None:
    await fake_tiktok.create_user("dora", age_restricted=True)
    live = await fake_tiktok.go_live("dora")
    with pytest.raises(AgeRestricted) as caught:
        await client.room_info(live.room_id)
    assert caught.value.code is ErrorCode.AGE_RESTRICTED
    assert "cookies" in str(caught.value)
    assert not caught.value.private

    await fake_tiktok.clear_requests()
    async with make_client(cookies={"sessionid": "abc"}) as logged_in:
        info = await logged_in.confirm_live(live.room_id)
    assert info.is_live
    assert info.age_restricted
    assert choose_stream(info).flv_url
    (call,) = await fake_tiktok.requests("/webcast/room/info/")
    assert call["cookies"] == {"sessionid": "abc"}


async def test_private_live_is_restricted(fake_tiktok: FakeTikTok, client: TikTokClient) -> None:
    await fake_tiktok.create_user("pat", private=True)
    live = await fake_tiktok.go_live("pat")
    with pytest.raises(AgeRestricted) as caught:
        await client.room_info(live.room_id)
    assert caught.value.private


# --- blocking -----------------------------------------------------------------------------


async def test_waf_is_reported_not_crashed(fake_tiktok: FakeTikTok, client: TikTokClient) -> None:
    await fake_tiktok.create_user("alice")
    live = await fake_tiktok.go_live("alice")
    await fake_tiktok.set_scenario(waf=True)
    with pytest.raises(WafBlocked) as caught:
        await client.resolve("@alice")  # empty api-live body, then the challenge page
    assert (caught.value.code, caught.value.retryable) == (ErrorCode.WAF_BLOCKED, True)
    with pytest.raises(WafBlocked):
        await client.check_alive([live.room_id])  # empty data list
    # Behind the WAF room/info answers 4003110, indistinguishable from an age gate.
    with pytest.raises(AgeRestricted):
        await client.room_info(live.room_id)


async def test_empty_api_body_falls_back_to_the_live_page(
    fake_tiktok: FakeTikTok, client: TikTokClient
) -> None:
    await fake_tiktok.create_user("alice")
    live = await fake_tiktok.go_live("alice")
    await fake_tiktok.set_scenario(empty_api_body=True)
    with pytest.raises(WafBlocked):
        await client.user_room("alice")
    assert await client.resolve("@alice") == RoomRef(live.room_id, "alice")
    assert [r["path"] for r in await fake_tiktok.requests("/@")] == ["/@alice/live"]


async def test_country_block_still_allows_room_ids(
    fake_tiktok: FakeTikTok, client: TikTokClient
) -> None:
    await fake_tiktok.create_user("alice")
    await fake_tiktok.create_user("bob")
    live = await fake_tiktok.go_live("alice")
    await fake_tiktok.set_scenario(blocked_country=True)

    assert await client.resolve(live.room_id) == RoomRef(live.room_id, None)
    assert (await client.confirm_live(live.room_id)).is_live  # webcast keeps working
    assert await fake_tiktok.requests("/@") == []  # no page was asked for a room id
    with pytest.raises(CountryBlocked) as caught:
        await client.live_page_room("alice")
    assert caught.value.code is ErrorCode.COUNTRY_BLOCKED

    # api-live down too: the live page redirects, the profile page still names the room.
    await fake_tiktok.set_scenario(empty_api_body=True)
    assert await client.resolve("@alice") == RoomRef(live.room_id, "alice")
    with pytest.raises(CountryBlocked):
        await client.resolve("@bob")  # never live: nothing to record from here


# --- network failures ---------------------------------------------------------------------


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_refused_connection_is_network_timeout() -> None:
    base = f"http://127.0.0.1:{closed_port()}"
    async with TikTokClient(web_base=base, webcast_base=base, timeout=2.0) as client:
        with pytest.raises(NetworkTimeout) as caught:
            await client.room_info(UNKNOWN_ROOM)
        with pytest.raises(NetworkTimeout):
            await client.resolve("@alice")
    assert (caught.value.code, caught.value.retryable) == (ErrorCode.NETWORK_TIMEOUT, True)


async def test_silent_server_times_out() -> None:
    writers: list[asyncio.StreamWriter] = []

    async def never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        await reader.read()  # until the client gives up, or the test closes it

    server = await asyncio.start_server(never_answer, "127.0.0.1", 0)
    base = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    try:
        async with TikTokClient(web_base=base, webcast_base=base, timeout=0.3) as client:
            with pytest.raises(NetworkTimeout):
                await client.check_alive([UNKNOWN_ROOM])
    finally:
        server.close()
        for writer in writers:
            writer.close()
            await writer.wait_closed()
        await server.wait_closed()
    assert writers  # the request reached the server and got no answer


# --- logging ------------------------------------------------------------------------------


@pytest.fixture
def fresh_structlog() -> Iterator[None]:
    # Earlier tests may have configured (and cached) loggers at INFO.
    structlog.reset_defaults()
    yield
    structlog.reset_defaults()


@pytest.mark.usefixtures("fresh_structlog")
async def test_requests_are_logged_without_cookie_values(
    fake_tiktok: FakeTikTok, make_client: ClientFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    await fake_tiktok.create_user("alice", age_restricted=True)
    live = await fake_tiktok.go_live("alice")
    with structlog.testing.capture_logs() as logs:
        monkeypatch.setattr(client_module, "log", structlog.get_logger("test"))
        async with make_client(cookies={"sessionid": "very-secret-cookie"}) as client:
            await client.room_info(live.room_id)
    (entry,) = [e for e in logs if e["event"] == "tiktok.request"]
    assert entry["endpoint"] == "room_info"
    assert entry["outcome"] == "ok"
    assert entry["http_status"] == 200
    assert "very-secret-cookie" not in repr(logs)

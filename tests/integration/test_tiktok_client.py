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
    Signer,
    TikTokClient,
    UnexpectedResponse,
    UserNotFound,
    WafBlocked,
    choose_stream,
    stream_candidates,
)
from shared.tiktok import http as http_module
from tlr.fake_tiktok.server import FakeTikTok

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
    assert await client.resolve("https://www.tiktok.com/@Alice/live") == expected
    assert await client.resolve("https://m.tiktok.com/@alice") == expected

    # The profile page first (yt-dlp's step), behind a proof of work solved each time;
    # unsigned api-live answers an empty body, so without a signer it is never asked.
    pages = await fake_tiktok.requests("/@")
    assert pages
    # /@Alice is answered 301 to the canonical /@alice, which is followed
    assert {(r["path"], r["status"]) for r in pages if r["path"] == "/@Alice"} == {("/@Alice", 301)}
    assert {r["path"] for r in pages} == {"/@alice", "/@Alice"}
    assert await fake_tiktok.requests("/api-live/") == []
    stats = await fake_tiktok.stats()
    assert stats["waf_solutions_accepted"] == 4
    assert stats["access_denied"] == 0
    for record in pages:  # a browser's top-level navigation
        headers = record["headers"]
        assert "Chrome/" in headers["user-agent"]
        assert headers["sec-fetch-mode"] == "navigate"
        assert "origin" not in headers
        assert headers["accept-language"].startswith("en-US")
    assert await client.check_alive([live.room_id]) == {live.room_id: True}
    (alive,) = await fake_tiktok.requests("/webcast/")
    assert alive["headers"]["origin"] == "https://www.tiktok.com"  # an XHR of the web app
    assert alive["headers"]["sec-fetch-mode"] == "cors"


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
    # believed only because two sources said so: the profile, then the live page
    asked = [r["path"] for r in await fake_tiktok.requests("/@")]
    assert list(dict.fromkeys(asked)) == ["/@nobody", "/@nobody/live"]
    with pytest.raises(UserNotFound):
        await client.live_page("nobody")  # SIGI state without LiveRoom
    with pytest.raises(UserNotFound):
        await client.room_info(UNKNOWN_ROOM)  # 10011, and check_alive does not know it


async def test_one_false_not_found_does_not_end_anything(
    fake_tiktok: FakeTikTok, make_client: ClientFactory
) -> None:
    await fake_tiktok.create_user("alice")
    live = await fake_tiktok.go_live("alice")
    # TikTok-Live-Connector #323: 19881007 for live users; a soft block drops LiveRoom.
    await fake_tiktok.set_scenario(api_live_user_not_found=True, live_page_soft_block=True)
    signer = Signer(fake_tiktok.signer_url)
    async with make_client(signer=signer) as client:
        with pytest.raises(UserNotFound):
            await client.user_room("alice")
        assert await client.resolve("@alice") == RoomRef(live.room_id, "alice")
    await signer.aclose()


async def test_10011_for_an_age_gated_live_is_not_a_missing_room(
    fake_tiktok: FakeTikTok, client: TikTokClient
) -> None:
    await fake_tiktok.create_user("alice", age_restricted=True)
    live = await fake_tiktok.go_live("alice")
    await fake_tiktok.set_scenario(room_info_10011_for_age_gated=True)  # TikTokLive #228
    with pytest.raises(AgeRestricted):
        await client.room_info(live.room_id)


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

    candidates = stream_candidates(info)
    assert [(c.quality, c.source) for c in candidates[:3]] == [
        ("origin", "main"),
        ("origin", "backup"),
        ("uhd", "main"),
    ]
    base = f"{fake_tiktok.base_url}/game/stream-{live.stream_id}"
    assert candidates[0].url.startswith(base)
    assert candidates[1].url.startswith(f"{fake_tiktok.base_url}/bk/game/stream-{live.stream_id}")
    assert all("\\u0026" not in c.url for c in candidates)
    # The top rung's main URL is dead (StreamCap #120); its backup plays.
    async with asyncio.timeout(10), httpx.AsyncClient() as http:
        dead = await http.get(candidates[0].url)
        assert dead.status_code == 404
        received = bytearray()
        async with http.stream("GET", candidates[1].url) as response:
            assert response.status_code == 200
            assert response.headers["content-type"] == "video/x-flv"
            async for chunk in response.aiter_bytes():
                received += chunk
                if len(received) >= 4096:
                    break
    assert received[:3] == b"FLV"


async def test_a_flagged_ip_gets_the_streams_from_the_live_page(
    fake_tiktok: FakeTikTok, client: TikTokClient
) -> None:
    await fake_tiktok.create_user("alice")
    live = await fake_tiktok.go_live("alice", title="t")
    await fake_tiktok.set_scenario(room_info_restricted=True)  # 4003110 to every room/info
    with pytest.raises(AgeRestricted):
        await client.confirm_live(live.room_id)  # nobody known: nothing else to ask
    info = await client.confirm_live(live.room_id, "alice")
    assert (info.room_id, info.status, info.source) == (live.room_id, 2, "live_page")
    assert info.streams
    assert stream_candidates(info)[0].url.startswith(fake_tiktok.base_url)


async def test_signed_api_live(fake_tiktok: FakeTikTok, make_client: ClientFactory) -> None:
    await fake_tiktok.create_user("alice")
    live = await fake_tiktok.go_live("alice")
    signer = Signer(fake_tiktok.signer_url)
    async with make_client(signer=signer) as client:
        state = await client.user_room("alice")
        assert state.ref == RoomRef(live.room_id, "alice")
        assert state.live is not None
        assert state.live.streams
        await fake_tiktok.set_scenario(signer_down=True)
        with pytest.raises(UnexpectedResponse, match="HTTP 503"):
            await client.user_room("alice")
        # a signer outage costs api-live, never the resolution (upstream #469)
        assert await client.resolve("@alice") == RoomRef(live.room_id, "alice")
    await signer.aclose()
    async with make_client() as unsigned:
        with pytest.raises(WafBlocked, match="empty body"):
            await unsigned.user_room("alice")


async def test_www_pages_through_an_impersonating_session(
    fake_tiktok: FakeTikTok, make_client: ClientFactory
) -> None:
    await fake_tiktok.create_user("alice")
    live = await fake_tiktok.go_live("alice")
    async with make_client(impersonate="chrome") as client:
        assert await client.resolve("@alice") == RoomRef(live.room_id, "alice")
    pages = await fake_tiktok.requests("/@alice")
    assert pages
    # curl_cffi's own Chrome identity, not httpx's: its UA and client hints
    assert all("Chrome/" in r["headers"]["user-agent"] for r in pages)
    assert all("sec-ch-ua" in r["headers"] for r in pages)
    assert (await fake_tiktok.stats())["access_denied"] == 0


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
        await client.resolve("@alice")  # profile and live page: a block with no puzzle
    assert (caught.value.code, caught.value.retryable) == (ErrorCode.WAF_BLOCKED, True)
    with pytest.raises(WafBlocked):
        await client.check_alive([live.room_id])  # empty data list
    # Behind the WAF room/info answers 4003110, indistinguishable from an age gate.
    with pytest.raises(AgeRestricted):
        await client.room_info(live.room_id)


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
        await client.live_page("alice")  # only a redirect to /login is a block
    assert caught.value.code is ErrorCode.COUNTRY_BLOCKED
    # The profile page is not redirected: it still names the room (or says "no room").
    assert await client.resolve("@alice") == RoomRef(live.room_id, "alice")
    assert await client.resolve("@bob") == RoomRef(None, "bob")


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
        monkeypatch.setattr(http_module, "log", structlog.get_logger("test"))
        async with make_client(cookies={"sessionid": "very-secret-cookie"}) as client:
            await client.room_info(live.room_id)
    (entry,) = [e for e in logs if e["event"] == "tiktok.request"]
    assert entry["endpoint"] == "room_info"
    assert entry["outcome"] == "ok"
    assert entry["http_status"] == 200
    assert "very-secret-cookie" not in repr(logs)

"""The fake TikTok answers with TikTok's shapes and serves a well-formed, controllable FLV."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fake_tiktok_plugin import fake_media_dir, fake_tiktok  # noqa: F401
from tlr.fake_tiktok import KIND, FakeTikTok, parse_profile
from tlr.fake_tiktok.amf0 import amf0_decode_all
from tlr.fake_tiktok.media import ffmpeg_binary
from tlr.fake_tiktok.server import LiveHandle

# 20x real time: a test sees a 10 s media loop go by in half a second.
FAKE_TIKTOK_OPTIONS = {"speed": 20.0}
WAIT_S = 10.0
# Under the default scenario (TikTok's defences on) the main URL of the top rung (`origin`, the
# suffix-less URL) is dead; every lower rung plays, so streaming tests use one of those.
PLAYING_SUFFIX = "_sd5"

Tag = tuple[int, int, bytes]  # (tag type, timestamp ms, payload)


# --- helpers -------------------------------------------------------------------------------


def walk_tags(buf: bytes | bytearray) -> list[Tag]:
    """An independent FLV walker: complete tags only, checking every PreviousTagSize."""
    if len(buf) < 13:
        return []
    assert buf[:3] == b"FLV"
    pos = int.from_bytes(buf[5:9], "big") + 4
    tags: list[Tag] = []
    while pos + 11 <= len(buf):
        size = int.from_bytes(buf[pos + 1 : pos + 4], "big")
        ts = int.from_bytes(buf[pos + 4 : pos + 7], "big") | (buf[pos + 7] << 24)
        end = pos + 11 + size
        if end + 4 > len(buf):
            break
        assert int.from_bytes(buf[end : end + 4], "big") == size + 11
        tags.append((buf[pos] & 0x1F, ts, bytes(buf[pos + 11 : end])))
        pos = end + 4
    return tags


def is_avc_config(tag: Tag) -> bool:
    kind, _, data = tag
    return kind == 9 and data[0] & 0x0F == 7 and data[1] == 0


def is_aac_config(tag: Tag) -> bool:
    kind, _, data = tag
    return kind == 8 and data[0] >> 4 == 10 and data[1] == 0


def is_metadata(tag: Tag) -> bool:
    return tag[0] == 18 and b"onMetaData" in tag[2][:16]


def metadata_of(tag: Tag) -> dict[str, Any]:
    name, values = amf0_decode_all(tag[2])
    assert name == "onMetaData"
    assert isinstance(values, dict)
    return values


def assert_monotonic(tags: list[Tag]) -> None:
    """Per track strictly increasing (media tags), and never backwards overall."""
    for kind in (8, 9):
        stamps = [ts for k, ts, data in tags if k == kind and data[1:2] != b"\x00"]
        assert stamps == sorted(set(stamps)), f"track {kind} not strictly increasing"
    stamps = [ts for _, ts, _ in tags]
    assert all(a <= b for a, b in itertools.pairwise(stamps))


def stream_data_of(info: dict[str, Any]) -> dict[str, Any]:
    raw = info["data"]["stream_url"]["live_core_sdk_data"]["pull_data"]["stream_data"]
    assert isinstance(raw, str)
    decoded = json.loads(raw)
    assert isinstance(decoded, dict)
    return decoded


class FlvReader:
    """Reads one FLV response in a background task so tests can wait on progress with timeouts."""

    def __init__(self, client: httpx.AsyncClient, url: str) -> None:
        self.data = bytearray()
        self.status: int | None = None
        self.error: httpx.HTTPError | None = None
        self.done = asyncio.Event()
        self._progress = asyncio.Event()
        self._task = asyncio.create_task(self._run(client, url))

    async def _run(self, client: httpx.AsyncClient, url: str) -> None:
        try:
            async with client.stream("GET", url) as response:
                self.status = response.status_code
                async for chunk in response.aiter_raw():
                    self.data += chunk
                    self._progress.set()
        except httpx.HTTPError as exc:
            self.error = exc
        finally:
            self.done.set()
            self._progress.set()

    async def wait_until(
        self, predicate: Callable[[bytearray], bool], timeout: float = WAIT_S
    ) -> None:
        async with asyncio.timeout(timeout):
            while not predicate(self.data):
                assert not self.done.is_set(), f"stream ended early: {self.error!r}"
                self._progress.clear()
                await self._progress.wait()

    async def wait_bytes(self, count: int) -> None:
        await self.wait_until(lambda data: len(data) >= count)

    async def wait_silent(self, quiet_s: float = 0.4, timeout: float = WAIT_S) -> None:
        """Wait until nothing arrives for `quiet_s` while the connection stays open."""
        async with asyncio.timeout(timeout):
            while True:
                self._progress.clear()
                try:
                    await asyncio.wait_for(self._progress.wait(), quiet_s)
                except TimeoutError:
                    assert not self.done.is_set()
                    return

    async def wait_done(self, timeout: float = WAIT_S) -> None:
        await asyncio.wait_for(self.done.wait(), timeout)

    async def close(self) -> None:
        self._task.cancel()
        with suppress(asyncio.CancelledError):
            await self._task


@asynccontextmanager
async def read_flv(client: httpx.AsyncClient, url: str) -> AsyncIterator[FlvReader]:
    reader = FlvReader(client, url)
    try:
        yield reader
    finally:
        await reader.close()


@pytest.fixture
def fake(fake_tiktok: FakeTikTok) -> FakeTikTok:  # noqa: F811 - the imported fixture
    return fake_tiktok


@pytest.fixture
async def client(fake: FakeTikTok) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=fake.base_url, timeout=WAIT_S) as http:
        yield http


@pytest.fixture
async def kind(fake: FakeTikTok) -> None:
    """TikTok's defences off (`KIND`): for tests of page and api-live shapes with a plain client."""
    await fake.set_scenario(**KIND)


def playing_url(fake: FakeTikTok, stream_id: str) -> str:
    """A correctly signed CDN URL that plays under the default (harsh) scenario."""
    return fake.flv_url(stream_id, PLAYING_SUFFIX)


@asynccontextmanager
async def client_with_cookies(
    fake: FakeTikTok, cookies: dict[str, str]
) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=fake.base_url, cookies=cookies) as http:
        yield http


async def live_user(fake: FakeTikTok, name: str = "alice", **kwargs: Any) -> LiveHandle:
    await fake.create_user(name, **kwargs)
    return await fake.go_live(name, title="hello", profile="h264_360p")


async def room_info(client: httpx.AsyncClient, room_id: str) -> dict[str, Any]:
    response = await client.get("/webcast/room/info/", params={"aid": "1988", "room_id": room_id})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    body: dict[str, Any] = response.json()
    return body


async def api_live(client: httpx.AsyncClient, user: str) -> httpx.Response:
    params = {"aid": "1988", "sourceType": "54", "uniqueId": user, "X-Bogus": "whatever"}
    return await client.get("/api-live/user/room/", params=params)


def sigi_of(html: str) -> dict[str, Any]:
    start = html.index('<script id="SIGI_STATE" type="application/json">')
    start = html.index(">", start) + 1
    state: dict[str, Any] = json.loads(html[start : html.index("</script>", start)])
    return state


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


# --- FLV -----------------------------------------------------------------------------------


async def test_flv_stream_structure_and_timestamps(
    fake: FakeTikTok,
    client: httpx.AsyncClient,
) -> None:
    handle = await live_user(fake)
    url = stream_data_of(await room_info(client, handle.room_id))["data"]["sd"]["main"]["flv"]
    async with read_flv(client, url) as reader:
        # Read past the end of the 10 s source loop to cover the timestamp rewrite.
        await reader.wait_until(lambda d: (t := walk_tags(d)) != [] and t[-1][1] - t[0][1] > 12_000)
        assert reader.status == 200
    tags = walk_tags(reader.data)
    assert reader.data[:5] == b"FLV\x01\x05"
    assert is_metadata(tags[0])
    assert metadata_of(tags[0])["duration"] == 0
    assert metadata_of(tags[0])["width"] == 640
    assert is_avc_config(tags[1])
    assert is_aac_config(tags[2])
    assert tags[3][0] == 9
    assert tags[3][2][0] >> 4 == 1  # the first frame is a keyframe
    assert_monotonic(tags)


async def test_only_audio(fake: FakeTikTok, client: httpx.AsyncClient) -> None:
    handle = await live_user(fake)
    # The top rung's audio-only URL plays even while its main URL is dead (the default).
    async with read_flv(client, fake.flv_url(handle.stream_id, only_audio=True)) as reader:
        await reader.wait_until(lambda d: len(walk_tags(d)) > 50)
    tags = walk_tags(reader.data)
    assert reader.data[4] == 0x04  # audio-only header flags
    assert {kind for kind, _, _ in tags} == {18, 8}
    assert "width" not in metadata_of(tags[0])


async def test_extended_timestamp_byte(fake: FakeTikTok, client: httpx.AsyncClient) -> None:
    await fake.set_scenario(ts_offset_ms=2**24 - 1_000)
    handle = await live_user(fake)
    async with read_flv(client, playing_url(fake, handle.stream_id)) as reader:
        await reader.wait_until(lambda d: (t := walk_tags(d)) != [] and t[-1][1] > 2**24 + 1_000)
    tags = walk_tags(reader.data)
    assert tags[0][1] < 2**24
    assert_monotonic(tags)


async def test_bad_sign_expired_and_not_live(
    fake: FakeTikTok,
    client: httpx.AsyncClient,
) -> None:
    handle = await live_user(fake)
    good = fake.flv_url(handle.stream_id, "_hd5")
    assert (await client.get(good.replace("sign=", "sign=0"))).status_code == 403
    assert (await client.get(good.split("&sign=")[0])).status_code == 403
    expired = fake.flv_url(handle.stream_id, "_hd5", ttl_s=-60)
    assert (await client.get(expired)).status_code == 403
    unknown = playing_url(fake, "1999999999999999999")
    assert (await client.get(unknown)).status_code == 404

    await fake.set_scenario(url_ttl_s=-60)
    info = await room_info(client, handle.room_id)
    assert (await client.get(info["data"]["stream_url"]["rtmp_pull_url"])).status_code == 403


@pytest.mark.parametrize("mode", ["reset", "eof"])
async def test_drop_after_bytes(
    fake: FakeTikTok,
    client: httpx.AsyncClient,
    mode: Any,
) -> None:
    handle = await live_user(fake)
    url = playing_url(fake, handle.stream_id)
    await fake.drop(handle.stream_id, after_bytes=100_000, mode=mode)  # next connection
    async with read_flv(client, url) as reader:
        await reader.wait_done()
    assert len(reader.data) == 100_000
    if mode == "reset":
        assert isinstance(reader.error, httpx.TransportError)
    else:
        assert reader.error is None
    assert fake.stream(handle.stream_id).status == 2  # the room stays live

    async with read_flv(client, url) as again:  # a transient fault: reconnecting works
        await again.wait_bytes(10_000)
        await fake.drop(handle.stream_id, after_bytes=0, mode="reset")  # open connection
        await again.wait_done()
    assert isinstance(again.error, httpx.TransportError)


async def test_pause_stalls_then_resume(fake: FakeTikTok, client: httpx.AsyncClient) -> None:
    handle = await live_user(fake)
    url = playing_url(fake, handle.stream_id)
    async with read_flv(client, url) as reader:
        await reader.wait_bytes(50_000)
        await fake.pause("alice")
        await reader.wait_silent()
        assert (await client.get(url)).status_code == 404
        assert (await room_info(client, handle.room_id))["data"]["status"] == 3

        stalled_at = len(reader.data)
        await fake.resume("alice")
        await reader.wait_bytes(stalled_at + 50_000)  # the open connection carries on
        async with read_flv(client, url) as fresh:
            await fresh.wait_bytes(1_000)
            assert fresh.status == 200
    assert_monotonic(walk_tags(reader.data))


async def test_end_eof_finishes_the_body(fake: FakeTikTok, client: httpx.AsyncClient) -> None:
    handle = await live_user(fake)
    url = playing_url(fake, handle.stream_id)
    async with read_flv(client, url) as reader:
        await reader.wait_bytes(50_000)
        await fake.end("alice", mode="eof")
        await reader.wait_done()
    assert reader.error is None
    tags = walk_tags(reader.data)
    last_type, _, last_data = tags[-1]
    end_of_last = len(reader.data)
    assert sum(11 + len(data) + 4 for _, _, data in tags) + 13 == end_of_last  # whole tags only
    assert last_type in (8, 9)
    assert last_data
    assert (await client.get(url)).status_code == 404


async def test_end_reset_and_stall(fake: FakeTikTok, client: httpx.AsyncClient) -> None:
    first = await live_user(fake, "alice")
    second = await live_user(fake, "bob")
    async with (
        read_flv(client, playing_url(fake, first.stream_id)) as reset_reader,
        read_flv(client, playing_url(fake, second.stream_id)) as stall_reader,
    ):
        await reset_reader.wait_bytes(20_000)
        await stall_reader.wait_bytes(20_000)
        await fake.end("alice", mode="reset")
        await fake.end("bob", mode="stall")
        await reset_reader.wait_done()
        assert isinstance(reset_reader.error, httpx.TransportError)
        await stall_reader.wait_silent()


async def test_switch_injects_new_sequence_header(
    fake: FakeTikTok,
    client: httpx.AsyncClient,
) -> None:
    handle = await live_user(fake)
    async with read_flv(client, playing_url(fake, handle.stream_id)) as reader:
        await reader.wait_bytes(100_000)
        await fake.switch(handle.stream_id, "h264_720p")
        await reader.wait_until(
            lambda d: sum(map(is_avc_config, walk_tags(d))) == 2 and len(walk_tags(d)) > 400
        )
    tags = walk_tags(reader.data)
    configs = [i for i, tag in enumerate(tags) if is_avc_config(tag)]
    switch_at = configs[1]
    assert is_metadata(tags[switch_at - 1])
    assert metadata_of(tags[switch_at - 1])["width"] == 1280
    assert is_aac_config(tags[switch_at + 1])
    assert tags[switch_at + 2][2][0] >> 4 == 1  # the new rendition starts on a keyframe
    assert_monotonic(tags)


async def test_captured_stream_decodes_with_ffmpeg(
    fake: FakeTikTok,
    client: httpx.AsyncClient,
    tmp_path: Path,
) -> None:
    handle = await live_user(fake)
    async with read_flv(client, fake.flv_url(handle.stream_id, "_ld5")) as reader:
        await reader.wait_until(lambda d: (t := walk_tags(d)) != [] and t[-1][1] - t[0][1] > 11_000)
        await fake.switch(handle.stream_id, "h264_720p")
        await reader.wait_until(lambda d: sum(map(is_avc_config, walk_tags(d))) == 2)
        await reader.wait_bytes(len(reader.data) + 200_000)
        await fake.end("alice")
        await reader.wait_done()
    capture = tmp_path / "capture.flv"
    capture.write_bytes(reader.data)
    proc = await asyncio.create_subprocess_exec(
        ffmpeg_binary(),
        "-nostdin",
        "-v",
        "error",
        "-i",
        str(capture),
        "-f",
        "null",
        "-",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0
    assert stderr.decode().strip() == ""


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

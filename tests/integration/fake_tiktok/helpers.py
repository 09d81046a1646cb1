"""Reading the fake TikTok: an independent FLV walker, a background FLV reader, its API calls."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from typing import Any

import httpx

from tlr.fake_tiktok import FakeTikTok
from tlr.fake_tiktok.amf0 import amf0_decode_all
from tlr.fake_tiktok.server import LiveHandle

WAIT_S = 10.0
# Under the default scenario (TikTok's defences on) the main URL of the top rung (`origin`, the
# suffix-less URL) is dead; every lower rung plays, so streaming tests use one of those.
PLAYING_SUFFIX = "_sd5"

Tag = tuple[int, int, bytes]  # (tag type, timestamp ms, payload)


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

"""The fake TikTok serves a well-formed FLV that tests can sign, drop, pause, end and switch."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.fake_tiktok.helpers import (
    assert_monotonic,
    is_aac_config,
    is_avc_config,
    is_metadata,
    live_user,
    metadata_of,
    playing_url,
    read_flv,
    room_info,
    stream_data_of,
    walk_tags,
)
from tlr.fake_tiktok import FakeTikTok
from tlr.fake_tiktok.media import ffmpeg_binary

# 20x real time: a test sees a 10 s media loop go by in half a second.
FAKE_TIKTOK_OPTIONS = {"speed": 20.0}


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

        def switched(data: bytearray) -> bool:
            # Two configs and the new rendition's first frames (with a CDN-like delivery they
            # arrive in later writes than the config).
            tags = walk_tags(data)
            configs = [i for i, tag in enumerate(tags) if is_avc_config(tag)]
            return len(configs) == 2 and len(tags) > max(400, configs[1] + 2)

        await reader.wait_until(switched)
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

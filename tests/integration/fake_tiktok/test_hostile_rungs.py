"""Backup URLs beside every main URL; a dead top rung (404 or an empty FLV) while backups play."""

from __future__ import annotations

from urllib.parse import urlsplit

import httpx
import pytest

from tests.integration.fake_tiktok.correct_client import first_bytes
from tests.integration.fake_tiktok.helpers import live_user, room_info, stream_data_of, walk_tags
from tlr.fake_tiktok import KIND, FakeTikTok

FAKE_TIKTOK_OPTIONS = {"speed": 20.0}


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

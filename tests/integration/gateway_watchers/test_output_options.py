"""A watcher's output options (format, join, keep_segments): created, shown, changed, refused."""

from __future__ import annotations

import httpx
import pytest

from shared import events as ev
from shared.bus import Bus
from shared.events import RecordingOptions
from tests.integration.gateway_watchers.helpers import (
    ROOM,
    FakeScheduler,
    H,
    create,
    event_count,
    stored_events,
    watch_requested,
)


async def test_create_carries_the_output_options(
    client: httpx.AsyncClient,
    bus: Bus,
    scheduler: FakeScheduler,  # noqa: ARG001  (answers the gateway's watcher lookups)
) -> None:
    options = {"format": "mkv", "join": True, "keep_segments": False}
    task_id = await create(client, {"url": "@alice", "options": options})
    event = await watch_requested(bus, task_id)
    assert (event.options.format, event.options.join, event.options.keep_segments) == (
        "mkv",
        True,
        False,
    )


async def test_create_without_them_is_mp4_with_segments_only(
    client: httpx.AsyncClient,
    bus: Bus,
    scheduler: FakeScheduler,  # noqa: ARG001  (answers the gateway's watcher lookups)
) -> None:
    task_id = await create(client, {"url": "@bob"})
    event = await watch_requested(bus, task_id)
    assert (event.options.format, event.options.join, event.options.keep_segments) == (
        "mp4",
        False,
        True,
    )


async def test_patch_changes_them_and_keeps_what_it_does_not_name(
    client: httpx.AsyncClient, bus: Bus, scheduler: FakeScheduler
) -> None:
    scheduler.add("@alice", options=RecordingOptions(format="ts", join=True, quality="hd"))
    r = await client.get("/watchers/@alice", headers=H)
    assert r.status_code == 200, r.text
    shown = r.json()["options"]
    assert (shown["format"], shown["join"], shown["keep_segments"]) == ("ts", True, True)

    body = {"options": {"format": "flv", "keep_segments": False}}
    r = await client.patch("/watchers/@alice", json=body, headers=H)
    assert r.status_code == 202, r.text
    (event,) = await stored_events(bus)
    assert isinstance(event, ev.WatchUpdated)
    assert event.options is not None
    o = event.options
    assert (o.format, o.join, o.keep_segments, o.quality) == ("flv", True, False, "hd")


async def test_patch_null_format_is_mp4_and_null_join_is_kept(
    client: httpx.AsyncClient, bus: Bus, scheduler: FakeScheduler
) -> None:
    scheduler.add("@alice", options=RecordingOptions(format="mkv", join=True))
    body = {"options": {"format": None, "join": None}}
    r = await client.patch("/watchers/@alice", json=body, headers=H)
    assert r.status_code == 202, r.text
    (event,) = await stored_events(bus)
    assert isinstance(event, ev.WatchUpdated)
    assert event.options is not None
    assert (event.options.format, event.options.join) == ("mp4", True)


@pytest.mark.parametrize(
    "options",
    [
        {"format": "avi"},
        {"format": "MP4"},
        {"format": ""},
        {"join": "perhaps"},
        {"keep_segments": 2},
    ],
)
async def test_create_refuses_a_bad_value_with_422(
    client: httpx.AsyncClient, bus: Bus, options: dict[str, object]
) -> None:
    r = await client.post("/watchers", json={"room_id": ROOM, "options": options}, headers=H)
    assert r.status_code == 422, r.text
    assert r.json()["error_code"] == "VALIDATION_ERROR"
    assert f"options.{next(iter(options))}" in r.json()["error_message"]
    assert await event_count(bus) == 0


@pytest.mark.parametrize("options", [{"format": "avi"}, {"join": 1}, {"keep_segments": "false"}])
async def test_patch_refuses_a_bad_value_with_422(
    client: httpx.AsyncClient, bus: Bus, scheduler: FakeScheduler, options: dict[str, object]
) -> None:
    scheduler.add(ROOM)
    r = await client.patch(f"/watchers/{ROOM}", json={"options": options}, headers=H)
    assert r.status_code == 422, r.text
    assert r.json()["error_code"] == "VALIDATION_ERROR"
    assert f"options.{next(iter(options))}" in r.json()["error_message"]
    assert await event_count(bus) == 0

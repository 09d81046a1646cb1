"""PATCH /watchers/{key}: validated as on create, published as watch.updated, never a cancel."""

from __future__ import annotations

import httpx
import pytest

from shared import events as ev
from shared.bus import Bus
from shared.events import RecordingOptions
from shared.secrets import SecretBox
from tests.integration.gateway_watchers.helpers import (
    PASSWORD,
    PROXY,
    ROOM,
    SHORT,
    FakeScheduler,
    H,
    desired,
    event_count,
    path,
    recording_job,
    stored_events,
)


async def test_patch_changes_the_interval_and_options_but_not_the_recording(
    client: httpx.AsyncClient, bus: Bus, scheduler: FakeScheduler, secret: str
) -> None:
    current = await recording_job(bus, "STARTED")
    before = scheduler.add(
        "@alice",
        poll_interval=60,
        current_job_id=current,
        options=RecordingOptions(quality="hd", upload_s3=True, cookies="alice.txt"),
    )
    body = {
        "poll_interval": 15,
        "options": {"quality": "sd", "proxy": PROXY, "cookies": None},
    }
    r = await client.patch(
        "/watchers/@alice", json=body, headers={**H, "X-Correlation-ID": "corr-u"}
    )
    assert r.status_code == 202, r.text
    shown = r.json()
    assert shown["poll_interval"] == 15
    # Fields sent replace, null clears, the rest is kept; the proxy shows only as set.
    assert {k: shown["options"][k] for k in ("upload_s3", "quality", "proxy", "cookies")} == {
        "upload_s3": True,
        "quality": "sd",
        "proxy": True,
        "cookies": None,
    }
    assert shown["current_job_id"] == current
    assert PASSWORD not in r.text

    (event,) = await stored_events(bus)
    assert isinstance(event, ev.WatchUpdated)
    assert (event.key, event.task_id, event.correlation_id) == ("@alice", before.task_id, "corr-u")
    assert (event.poll_interval, event.paused) == (15, None)
    assert event.options is not None
    assert (event.options.quality, event.options.upload_s3, event.options.cookies) == (
        "sd",
        True,
        None,
    )
    # Sealed in the event, as on create: only the scheduler and the recorders can open it.
    assert event.options.proxy is not None
    assert PASSWORD not in ev.encode(event).decode()
    assert SecretBox(secret).unseal(event.options.proxy) == PROXY
    assert await desired(bus, current) == "run"  # the recording goes on


async def test_patch_paused_only_stops_the_checks(
    client: httpx.AsyncClient, bus: Bus, scheduler: FakeScheduler
) -> None:
    current = await recording_job(bus, "STARTED")
    scheduler.add(SHORT, current_job_id=current)
    r = await client.patch(path(SHORT), json={"paused": True}, headers=H)
    assert r.status_code == 202, r.text
    assert r.json()["status"] == "paused"
    (event,) = await stored_events(bus)
    assert isinstance(event, ev.WatchUpdated)
    assert (event.key, event.paused, event.poll_interval, event.options) == (
        SHORT,
        True,
        None,
        None,
    )
    assert await desired(bus, current) == "run"  # unlike POST .../pause


async def test_patch_changes_the_engine_of_the_next_lives(
    client: httpx.AsyncClient, bus: Bus, scheduler: FakeScheduler
) -> None:
    """An operator moves a watcher to the upstream CLI (a TikTok change our engine does not
    follow yet) and back, without deleting it; null: the deployment's RECORDER_ENGINE."""
    current = await recording_job(bus, "STARTED")
    scheduler.add("@alice", current_job_id=current, options=RecordingOptions(quality="hd"))
    r = await client.patch("/watchers/@alice", json={"options": {"engine": "tlr-cli"}}, headers=H)
    assert r.status_code == 202, r.text
    assert r.json()["options"]["engine"] == "tlr-cli"
    assert r.json()["options"]["quality"] == "hd"  # kept
    (event,) = await stored_events(bus)
    assert isinstance(event, ev.WatchUpdated)
    assert event.options is not None
    assert (event.options.engine, event.options.quality) == ("tlr-cli", "hd")
    assert await desired(bus, current) == "run"  # the recording in progress goes on


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "poll_interval"),
        ({"options": {}}, "poll_interval"),
        ({"poll_interval": 5}, "poll_interval"),
        ({"poll_interval": "soon"}, "poll_interval"),
        ({"paused": "maybe"}, "paused"),
        ({"paused": 0}, "paused"),  # not read as false
        ({"poll_interval": "120"}, "poll_interval"),
        ({"options": {"upload_s3": 1}}, "options.upload_s3"),
        ({"options": {"quality": "8k"}}, "options.quality"),
        ({"options": {"output_template": "../../etc/passwd"}}, "options.output_template"),
        ({"options": {"cookies": "../secret.txt"}}, "options.cookies"),
        ({"options": {"proxy": "ftp://proxy.example"}}, "options.proxy"),
        ({"options": {"proxy": "http://127.0.0.1:3128"}}, "options.proxy"),
        ({"key": "@bob"}, "key"),
        ({"options": {"engine": "ffmpeg"}}, "options.engine"),
    ],
)
async def test_bad_changes_are_422_and_publish_nothing(
    client: httpx.AsyncClient,
    bus: Bus,
    scheduler: FakeScheduler,
    body: dict[str, object],
    field: str,
) -> None:
    scheduler.add(ROOM)
    r = await client.patch(f"/watchers/{ROOM}", json=body, headers=H)
    assert r.status_code == 422, r.text
    assert r.json()["error_code"] == "VALIDATION_ERROR"
    assert field in r.json()["error_message"]
    assert await event_count(bus) == 0


async def test_another_keys_or_unknown_or_deleted_watcher(
    client: httpx.AsyncClient, bus: Bus, scheduler: FakeScheduler
) -> None:
    scheduler.add("@carol", owner="someone-else")
    scheduler.add("@dave", status="deleted")
    for key, status in (("@carol", 404), ("@nobody", 404), ("@dave", 409)):
        r = await client.patch(f"/watchers/{key}", json={"poll_interval": 30}, headers=H)
        assert r.status_code == status, (key, r.text)
        assert r.json()["error_code"] == ("NOT_FOUND" if status == 404 else "CONFLICT")
    assert await event_count(bus) == 0

"""POST /watchers/bulk (a result per item, not all-or-nothing); GET /watchers?format= exports."""

from __future__ import annotations

import csv
import io

import httpx
import pytest

from shared import events as ev
from shared.bus import Bus
from shared.events import RecordingOptions
from tests.integration.gateway_watchers.helpers import (
    OWNER,
    PASSWORD,
    PROXY,
    ROOM,
    FakeScheduler,
    H,
    event_count,
    kv_keys,
    stored_events,
)

OTHER_ROOM = "7503448765740976903"


async def test_each_item_gets_its_own_result_and_the_good_ones_are_made(
    client: httpx.AsyncClient, bus: Bus, scheduler: FakeScheduler
) -> None:
    scheduler.add("@taken")
    items = [
        {"url": "@alice", "poll_interval": 30, "options": {"quality": "hd"}},
        {"room_id": ROOM},
        {"url": "@bob", "poll_interval": 5},  # below the minimum
        {"poll_interval": 60},  # no target
        {"url": "https://www.tiktok.com/@alice/live"},  # the same key as item 0
        {"url": "@taken"},  # watched already
        {"url": "https://evil.example/@x"},
        {"room_id": OTHER_ROOM, "options": {"proxy": PROXY}},
        "not an object",
    ]
    r = await client.post("/watchers/bulk", json={"items": items}, headers=H)
    assert r.status_code == 422  # a body that is not a list of objects is refused whole
    assert await event_count(bus) == 0

    r = await client.post("/watchers/bulk", json={"items": items[:-1]}, headers=H)
    assert r.status_code == 202, r.text
    body = r.json()
    got = [(x["index"], x["key"], x["status"], x["error_code"]) for x in body["results"]]
    assert got == [
        (0, "@alice", 202, None),
        (1, ROOM, 202, None),
        (2, None, 422, "VALIDATION_ERROR"),
        (3, None, 422, "VALIDATION_ERROR"),
        (4, "@alice", 409, "CONFLICT"),
        (5, "@taken", 409, "CONFLICT"),
        (6, None, 422, "VALIDATION_ERROR"),
        (7, OTHER_ROOM, 202, None),
    ]
    assert (body["created"], body["failed"]) == (3, 5)
    assert "poll_interval" in body["results"][2]["error_message"]
    assert PASSWORD not in r.text

    made = {x["task_id"] for x in body["results"] if x["status"] == 202}
    events = await stored_events(bus)
    assert events
    assert all(isinstance(e, ev.WatchRequested) for e in events)
    assert {e.task_id for e in events if isinstance(e, ev.WatchRequested)} == made
    assert all(e.owner == OWNER for e in events if isinstance(e, ev.WatchRequested))
    assert all(PASSWORD not in ev.encode(e).decode() for e in events)
    assert {k.removeprefix("job.") for k in await kv_keys(bus)} == made


@pytest.mark.usefixtures("scheduler")
async def test_a_thousand_items_in_one_request_and_no_more(
    client: httpx.AsyncClient, bus: Bus
) -> None:
    too_many = [{"url": f"@user{n}", "poll_interval": 600} for n in range(1001)]
    r = await client.post("/watchers/bulk", json={"items": too_many}, headers=H)
    assert r.status_code == 422
    assert r.json()["error_code"] == "VALIDATION_ERROR"
    assert await event_count(bus) == 0

    # Larger than MAX_BODY_BYTES (64 KiB), as 1,000 watchers are: the bulk route takes it.
    template = "{user}/{YYYY}/{MM}/{DD}/{timestamp}_{title}.mp4"
    items = [{**i, "options": {"output_template": template}} for i in too_many[:1000]]
    r = await client.post("/watchers/bulk", json={"items": items}, headers=H)
    assert r.status_code == 202, r.text[:300]
    assert r.json()["created"] == 1000
    assert await event_count(bus) == 1000


async def test_export_is_the_keys_own_watchers_without_secrets_and_imports_again(
    client: httpx.AsyncClient, scheduler: FakeScheduler
) -> None:
    scheduler.add(
        "@alice",
        url="https://www.tiktok.com/@alice/live",
        unique_id="alice",
        poll_interval=30,
        options=RecordingOptions(quality="hd", upload_s3=True, proxy="sealed-proxy-value"),
    )
    scheduler.add(ROOM, room_id=ROOM, status="paused")
    scheduler.add("@carol", url="@carol", owner="someone-else")

    r = await client.get("/watchers", params={"format": "json"}, headers=H)
    assert r.status_code == 200, r.text
    items = r.json()["items"]
    shown = [
        (i["room_id"], i["url"], i["poll_interval"], i["options"]["proxy"], i["options"]["quality"])
        for i in items
    ]
    assert shown == [
        (None, "https://www.tiktok.com/@alice/live", 30, None, "hd"),
        (ROOM, None, 60, None, None),
    ]
    assert items[0]["options"]["upload_s3"] is True
    assert "sealed-proxy-value" not in r.text

    r = await client.get("/watchers", params={"format": "csv"}, headers=H)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert [(row["url"], row["room_id"], row["quality"]) for row in rows] == [
        ("https://www.tiktok.com/@alice/live", "", "hd"),
        ("", ROOM, ""),
    ]
    assert "sealed-proxy-value" not in r.text

    r = await client.get("/watchers", params={"format": "xml"}, headers=H)
    assert r.status_code == 422
    assert r.json()["error_code"] == "VALIDATION_ERROR"

    # What was exported is a bulk body: gone from the scheduler, it is made again.
    scheduler.watchers.clear()
    r = await client.post("/watchers/bulk", json={"items": items}, headers=H)
    assert r.status_code == 202
    assert [x["status"] for x in r.json()["results"]] == [202, 202]

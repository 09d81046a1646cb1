"""POST /watchers publishes watch.requested and stores the watch job, or refuses bad input."""

from __future__ import annotations

import httpx
import pytest

from services.gateway.app import create_app
from services.gateway.nats_link import NatsLink
from services.gateway.settings import GatewaySettings
from shared import events as ev
from shared.bus import Bus
from shared.secrets import SecretBox
from shared.subjects import JOBS_BUCKET
from tests.helpers import job_store
from tests.integration.gateway_watchers.helpers import (
    KEY,
    PASSWORD,
    PROXY,
    ROOM,
    SHORT,
    FakeScheduler,
    H,
    create,
    event_count,
    kv_keys,
    path,
    stored_events,
    watch_requested,
)
from tlr.nats_server import NatsServer

# --- create -----------------------------------------------------------------------------------


async def test_create_stores_the_job_and_the_event_with_the_proxy_sealed(
    client: httpx.AsyncClient, bus: Bus, scheduler: FakeScheduler, secret: str
) -> None:
    options = {
        "upload_s3": True,
        "proxy": PROXY,
        "cookies": "alice.txt",
        "quality": "hd",
        "output_template": "{user}/{YYYY}/{timestamp}.mp4",
    }
    r = await client.post(
        "/watchers",
        json={"url": "https://www.tiktok.com/@alice/live", "poll_interval": 30, "options": options},
        headers={**H, "X-Correlation-ID": "corr-w1"},
    )
    assert r.status_code == 202
    assert r.json()["status"] == "PENDING"
    task_id = r.json()["task_id"]

    event = await watch_requested(bus, task_id)
    assert event.event_id == f"watch:{task_id}"
    assert event.correlation_id == "corr-w1"
    assert event.key == "@alice"
    assert event.unique_id == "alice"
    assert event.url == "https://www.tiktok.com/@alice/live"
    assert event.poll_interval == 30
    assert event.options.upload_s3 is True
    assert event.options.cookies == "alice.txt"
    assert event.options.quality == "hd"
    assert event.options.output_template == "{user}/{YYYY}/{timestamp}.mp4"
    assert event.options.proxy is not None
    assert SecretBox(secret).unseal(event.options.proxy) == PROXY

    doc = await (await job_store(bus)).request(task_id)
    assert doc is not None
    assert (doc.kind, doc.watcher_key, doc.desired) == ("watch", "@alice", "run")
    assert doc.options == event.options

    # Not known to the scheduler yet: PENDING, no watcher.
    status = (await client.get(f"/jobs/{task_id}", headers=H)).json()
    assert (status["kind"], status["status"], status["watcher"], status["jobs"]) == (
        "watch",
        "PENDING",
        None,
        [],
    )

    # The scheduler registered it and has recorded two lives since.
    scheduler.register(event, jobs=["rec-1", "rec-2"], current_job_id="rec-2", live_state="live")
    r = await client.get(f"/jobs/{task_id}", headers=H)
    status = r.json()
    assert status["status"] == "STARTED"
    assert status["jobs"] == ["rec-1", "rec-2"]
    assert status["watcher"]["key"] == "@alice"
    assert status["watcher"]["task_id"] == task_id
    assert status["watcher"]["options"]["proxy"] is True
    assert status["watcher"]["current_job_id"] == "rec-2"

    watcher = (await client.get(path("@alice"), headers=H)).text
    # Neither the password nor the sealed value leaves: not in events, KV or any response.
    for text in (r.text, watcher):
        assert PASSWORD not in text
        assert event.options.proxy not in text
    for e in await stored_events(bus):
        assert PASSWORD not in ev.encode(e).decode()
    kv = await bus.kv(JOBS_BUCKET)
    keys = await kv_keys(bus)
    assert keys
    for key in keys:
        assert PASSWORD.encode() not in ((await kv.get(key)).value or b"")


@pytest.mark.parametrize(
    ("body", "key", "room_id", "unique_id"),
    [
        ({"room_id": ROOM}, ROOM, ROOM, None),
        ({"url": "alice_2"}, "@alice_2", None, "alice_2"),
        ({"url": "https://www.tiktok.com/@bob.b"}, "@bob.b", None, "bob.b"),
        ({"url": SHORT}, SHORT, None, None),
    ],
)
@pytest.mark.usefixtures("scheduler")
async def test_key_of_each_kind_of_target(
    client: httpx.AsyncClient,
    bus: Bus,
    body: dict[str, object],
    key: str,
    room_id: str | None,
    unique_id: str | None,
) -> None:
    event = await watch_requested(bus, await create(client, body))
    assert (event.key, event.room_id, event.unique_id, event.poll_interval) == (
        key,
        room_id,
        unique_id,
        60,
    )
    assert event.options == ev.RecordingOptions()


async def test_duplicate_key_is_409(
    client: httpx.AsyncClient, bus: Bus, scheduler: FakeScheduler
) -> None:
    scheduler.add("@alice")
    scheduler.add(ROOM, status="paused")
    for body in (
        {"url": "@alice"},
        {"url": "https://www.tiktok.com/@alice/live"},
        {"room_id": ROOM},
    ):
        r = await client.post("/watchers", json=body, headers=H)
        assert r.status_code == 409, body
        assert r.json()["error_code"] == "CONFLICT"
    assert await event_count(bus) == 0
    # A watcher the scheduler is deleting frees its key.
    scheduler.add("@alice", status="deleted")
    await create(client, {"url": "@alice"})


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({}, 400),
        ({"poll_interval": 60}, 400),
        ({"room_id": ROOM, "url": "@alice"}, 400),
        ({"room_id": ROOM, "poll_interval": 9}, 422),
        ({"room_id": ROOM, "poll_interval": 86_401}, 422),
        ({"room_id": ROOM, "poll_interval": "often"}, 422),
        ({"room_id": "123"}, 422),
        ({"room_id": "; rm -rf /"}, 422),
        ({"room_id": "$(id)"}, 422),
        ({"url": "; rm -rf /"}, 422),
        ({"url": "$(id)"}, 422),
        ({"url": "@alice`id`"}, 422),
        ({"url": "`id`"}, 422),
        ({"url": "../../etc/passwd"}, 422),
        ({"url": "https://www.tiktok.com/../../etc/passwd"}, 422),
        ({"url": "file:///etc/passwd"}, 422),
        ({"url": "https://evil.example/@alice/live"}, 422),
        ({"url": "http://www.tiktok.com/@alice/live"}, 422),
        ({"url": "https://www.tiktok.com/"}, 422),
        ({"url": "https://www.tiktok.com/@a/live\nX-Injected: 1"}, 422),
        ({"url": "@alice\n"}, 422),
        ({"room_id": ROOM + "\n"}, 422),
        ({"room_id": ROOM, "output_template": "{room_id}.mp4"}, 422),  # lives in options
        ({"room_id": ROOM, "options": {"output_template": "../../etc/passwd"}}, 422),
        ({"room_id": ROOM, "options": {"output_template": "/abs/{room_id}.mp4"}}, 422),
        ({"room_id": ROOM, "options": {"output_template": "{room_id}/{nope}.mp4"}}, 422),
        ({"room_id": ROOM, "options": {"output_template": "$(id)/{room_id}\x00.mp4"}}, 422),
        ({"room_id": ROOM, "options": {"proxy": "ftp://h:21"}}, 422),
        ({"room_id": ROOM, "options": {"proxy": "http://h"}}, 422),
        ({"room_id": ROOM, "options": {"proxy": "http://h:8080/$(id)"}}, 422),
        ({"room_id": ROOM, "options": {"proxy": "http://h:8080\n"}}, 422),
        ({"room_id": ROOM, "options": {"cookies": "../../etc/passwd"}}, 422),
        ({"room_id": ROOM, "options": {"cookies": "/etc/passwd"}}, 422),
        ({"room_id": ROOM, "options": {"cookies": "c.txt; rm -rf /"}}, 422),
        ({"room_id": ROOM, "options": {"cookies": "c.txt\n"}}, 422),
        ({"room_id": ROOM, "options": {"quality": "8k"}}, 422),
        ({"room_id": ROOM, "options": {"unknown": 1}}, 422),
        ({"room_id": ROOM, "duration": 60}, 422),
    ],
)
@pytest.mark.usefixtures("scheduler")
async def test_bad_input_is_refused_with_error_code(
    client: httpx.AsyncClient,
    bus: Bus,
    body: dict[str, object],
    status: int,
) -> None:
    r = await client.post("/watchers", json=body, headers=H)
    assert r.status_code == status, r.text
    assert r.json()["error_code"] == "VALIDATION_ERROR"
    assert r.json()["correlation_id"]
    assert await event_count(bus) == 0
    assert await kv_keys(bus) == []  # no job either


async def test_proxy_needs_a_secret_key(nats_server: NatsServer, bus: Bus) -> None:
    settings = GatewaySettings(api_keys=[KEY], nats_url=nats_server.client_url)
    async with NatsLink(settings) as link:
        await link.wait_connected()
        transport = httpx.ASGITransport(app=create_app(settings, link=link))
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as c:
            r = await c.post(
                "/watchers", json={"room_id": ROOM, "options": {"proxy": PROXY}}, headers=H
            )
    assert r.status_code == 422
    assert PASSWORD not in r.text
    assert await event_count(bus) == 0

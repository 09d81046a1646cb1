"""Idempotency-Key on POST /recordings and /watchers, against a real nats-server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest

from services.gateway.app import create_app
from services.gateway.nats_link import NatsLink
from services.gateway.settings import GatewaySettings
from shared import events as ev
from shared.bus import Bus
from shared.secrets import new_key
from shared.subjects import EVENTS, EVENTS_STREAM, JOBS_BUCKET
from tests.integration.gateway_watchers.helpers import (
    FakeScheduler,
    event_count,
    kv_keys,
    stored_events,
)
from tlr.nats_server import NatsServer

KEY, OTHER_KEY = "k-idem-1", "k-idem-2"
H = {"X-API-Key": KEY}
ROOM = "7503448765740976902"
BODY = {"room_id": ROOM, "duration": 60}
IDEM = "retry-secret-7f3a9c"


@pytest.fixture
async def client(nats_server: NatsServer, bus: Bus) -> AsyncIterator[httpx.AsyncClient]:
    assert bus.nc.is_connected  # the streams and buckets are provisioned before any request
    settings = GatewaySettings(
        api_keys=[KEY, OTHER_KEY], nats_url=nats_server.client_url, secret_key=new_key()
    )
    async with NatsLink(settings) as link:
        await link.wait_connected()
        transport = httpx.ASGITransport(app=create_app(settings, link=link))
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as c:
            yield c


@pytest.fixture
async def scheduler(nats_server: NatsServer) -> AsyncIterator[FakeScheduler]:
    fake = FakeScheduler()
    await fake.start(nats_server.client_url)
    yield fake
    await fake.stop()


def keyed(idem: str = IDEM, api_key: str = KEY) -> dict[str, str]:
    return {"X-API-Key": api_key, "Idempotency-Key": idem}


async def job_docs(bus: Bus) -> list[str]:
    """The job ids of the request documents (``job.<id>``) in KV."""
    return [k[4:] for k in await kv_keys(bus) if k.startswith("job.") and k.count(".") == 1]


async def test_same_key_twice_is_one_job_and_one_event(client: httpx.AsyncClient, bus: Bus) -> None:
    first = await client.post("/recordings", json=BODY, headers=keyed())
    assert first.status_code == 202, first.text
    task_id = first.json()["task_id"]
    # The same request, normalised: keys in another order, a default spelt out.
    again = {"duration": 60, "room_id": ROOM, "output_template": None}
    second = await client.post("/recordings", json=again, headers=keyed())
    assert second.status_code == 202, second.text
    assert second.json() == {"task_id": task_id, "status": "PENDING"}

    (event,) = await stored_events(bus)
    assert isinstance(event, ev.RecordingRequested)
    assert event.job_id == task_id
    assert await job_docs(bus) == [task_id]
    # Neither the API key nor the Idempotency-Key is readable in KV.
    kv = await bus.kv(JOBS_BUCKET)
    for name in await kv.keys():
        assert IDEM not in name
        assert KEY not in name
        value = (await kv.get(name)).value or b""
        assert IDEM.encode() not in value
        assert KEY.encode() not in value
    assert (await client.get(f"/jobs/{task_id}", headers=H)).json()["status"] == "PENDING"


async def test_same_key_other_body_is_409(client: httpx.AsyncClient, bus: Bus) -> None:
    assert (await client.post("/recordings", json=BODY, headers=keyed())).status_code == 202
    other = await client.post("/recordings", json={**BODY, "duration": 61}, headers=keyed())
    assert other.status_code == 409
    assert other.json()["error_code"] == "CONFLICT"
    assert IDEM not in other.text
    # The same body on another operation is another request too.
    other_route = await client.post("/watchers", json={"room_id": ROOM}, headers=keyed())
    assert other_route.status_code == 409
    assert other_route.json()["error_code"] == "CONFLICT"
    assert len(await stored_events(bus)) == 1
    assert len(await job_docs(bus)) == 1


async def test_concurrent_requests_with_one_key_make_one_job(
    client: httpx.AsyncClient, bus: Bus
) -> None:
    answers = await asyncio.gather(
        *(client.post("/recordings", json=BODY, headers=keyed()) for _ in range(8))
    )
    assert {r.status_code for r in answers} == {202}
    (task_id,) = {r.json()["task_id"] for r in answers}
    (event,) = await stored_events(bus)
    assert isinstance(event, ev.RecordingRequested)
    assert event.job_id == task_id
    assert await job_docs(bus) == [task_id]


async def test_keys_are_scoped_per_api_key(client: httpx.AsyncClient, bus: Bus) -> None:
    mine = await client.post("/recordings", json=BODY, headers=keyed(api_key=KEY))
    theirs = await client.post("/recordings", json=BODY, headers=keyed(api_key=OTHER_KEY))
    assert mine.status_code == theirs.status_code == 202
    assert mine.json()["task_id"] != theirs.json()["task_id"]
    assert len(await stored_events(bus)) == 2
    assert sorted(await job_docs(bus)) == sorted([mine.json()["task_id"], theirs.json()["task_id"]])


async def test_a_retried_watcher_is_one_watch_job(
    client: httpx.AsyncClient, bus: Bus, scheduler: FakeScheduler
) -> None:
    body = {"url": "@alice", "poll_interval": 60}
    first = await client.post("/watchers", json=body, headers=keyed())
    assert first.status_code == 202, first.text
    (event,) = await stored_events(bus)
    assert isinstance(event, ev.WatchRequested)
    scheduler.register(event)  # the watcher exists now: without the key, a retry is a 409
    second = await client.post("/watchers", json=body, headers=keyed())
    assert second.status_code == 202, second.text
    assert second.json()["task_id"] == first.json()["task_id"] == event.task_id
    assert len(await stored_events(bus)) == 1
    unkeyed = await client.post("/watchers", json=body, headers=H)
    assert unkeyed.status_code == 409


@pytest.mark.parametrize(
    "idem",
    [b"", b"x" * 129, b"caf\xc3\xa9", b"a\x7fb", b"tab\there"],
    ids=["empty", "too-long", "non-ascii", "del", "tab"],
)
async def test_a_bad_key_is_422(client: httpx.AsyncClient, bus: Bus, idem: bytes) -> None:
    for path, body in (("/recordings", BODY), ("/watchers", {"room_id": ROOM})):
        r = await client.post(path, json=body, headers={"X-API-Key": KEY, "Idempotency-Key": idem})
        assert r.status_code == 422, (path, r.text)
        assert r.json()["error_code"] == "VALIDATION_ERROR"
        assert "Idempotency-Key" in r.json()["error_message"]
    assert await event_count(bus) == 0
    assert await job_docs(bus) == []


async def test_a_failed_publish_is_finished_by_the_retry(
    client: httpx.AsyncClient, bus: Bus
) -> None:
    # A real failure: with EVENTS gone, nothing answers the publish (the bus retries ~10 s).
    await bus.js.delete_stream(EVENTS_STREAM)
    keyed_try, plain_try = await asyncio.gather(
        client.post("/recordings", json=BODY, headers=keyed()),
        client.post("/recordings", json={"room_id": ROOM}, headers=H),
    )
    assert keyed_try.status_code == plain_try.status_code == 503
    assert keyed_try.json()["error_code"] == "SERVICE_UNAVAILABLE"
    # Without a key the job is taken back; with one it stays, for the retry to start.
    (kept,) = await job_docs(bus)

    await bus.ensure_stream(EVENTS)
    retry = await client.post("/recordings", json=BODY, headers=keyed())
    assert retry.status_code == 202, retry.text
    assert retry.json()["task_id"] == kept
    again = await client.post("/recordings", json=BODY, headers=keyed())
    assert again.json()["task_id"] == kept
    (event,) = await stored_events(bus)
    assert isinstance(event, ev.RecordingRequested)
    assert event.job_id == kept
    assert event.event_id == f"rec:{kept}"
    assert await job_docs(bus) == [kept]

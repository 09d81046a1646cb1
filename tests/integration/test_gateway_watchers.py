"""The /watchers routes against a real nats-server and a real nats.micro stand-in scheduler.

The stand-in answers ``tlr.scheduler.watchers.get`` / ``.list`` from a dict, exactly on the
contract of ``shared.watchers``; tests change that dict to play what the scheduler would do
with the commands the gateway publishes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from urllib.parse import quote

import httpx
import msgspec
import nats
import nats.js.errors
import pytest
from nats.aio.client import Client
from nats.micro import add_service
from nats.micro.request import Request, ServiceError
from nats.micro.service import Service

from services.gateway.app import create_app
from services.gateway.nats_link import NatsLink
from services.gateway.settings import GatewaySettings
from shared import events as ev
from shared import jobs
from shared.bus import Bus
from shared.jobs import Claim, Outcome
from shared.secrets import SecretBox, new_key
from shared.subjects import EVENTS_STREAM, JOBS_BUCKET
from shared.watchers import GetRequest, ListReply, ListRequest, Watcher
from tests.helpers import job_store
from tlr.nats_server import NatsServer

KEY = "k-watchers"
H = {"X-API-Key": KEY}
ROOM = "7503448765740976902"
PASSWORD = "hunter2"
PROXY = f"http://bob:{PASSWORD}@proxy.example:8080"
SHORT = "https://vm.tiktok.com/ZMabc123/"
NOT_FOUND = "404"  # the scheduler's nats.micro error code for an unknown key
BROKEN = "@broken"  # the stand-in fails on this key with an unexpected error


class FakeScheduler:
    """A real nats.micro service named like the scheduler, answering from ``watchers``."""

    def __init__(self) -> None:
        self.watchers: dict[str, Watcher] = {}
        self.nc: Client | None = None
        self.service: Service | None = None

    async def start(self, url: str) -> None:
        self.nc = await nats.connect(url)
        self.service = await add_service(self.nc, name="scheduler", version="0.0.1")
        group = self.service.add_group(name="tlr.scheduler")
        await group.add_endpoint(name="watchers_get", subject="watchers.get", handler=self.on_get)
        await group.add_endpoint(
            name="watchers_list", subject="watchers.list", handler=self.on_list
        )

    async def stop(self) -> None:
        if self.service is not None:
            await self.service.stop()
        if self.nc is not None:
            await self.nc.close()

    async def on_get(self, req: Request) -> None:
        key = msgspec.json.decode(req.data, type=GetRequest).key
        if key == BROKEN:
            msg = "store exploded"
            raise RuntimeError(msg)  # nats.micro answers with error code 500
        watcher = self.watchers.get(key)
        if watcher is None:
            raise ServiceError(NOT_FOUND, "no such watcher")
        await req.respond(msgspec.json.encode(watcher))

    async def on_list(self, req: Request) -> None:
        ask = msgspec.json.decode(req.data, type=ListRequest)
        ordered = sorted(self.watchers.values(), key=lambda w: (w.created_at, w.key))
        start = (ask.page - 1) * ask.page_size
        reply = ListReply(items=ordered[start : start + ask.page_size], total=len(ordered))
        await req.respond(msgspec.json.encode(reply))

    def add(self, key: str, **fields: object) -> Watcher:
        """A watcher as the scheduler would hold it (``task_id`` defaults to a fresh id)."""
        fields.setdefault("task_id", ev.new_id())
        fields.setdefault("created_at", ev.utc_now())
        watcher = Watcher(key=key, **fields)  # type: ignore[arg-type]
        self.watchers[key] = watcher
        return watcher

    def register(self, event: ev.WatchRequested, **fields: object) -> Watcher:
        """What the scheduler does with ``watch.requested``."""
        return self.add(
            event.key,
            task_id=event.task_id,
            room_id=event.room_id,
            unique_id=event.unique_id,
            url=event.url,
            poll_interval=event.poll_interval,
            options=event.options,
            created_at=event.occurred_at,
            **fields,
        )


@pytest.fixture
def secret() -> str:
    return new_key()


@pytest.fixture
async def client(nats_server: NatsServer, secret: str) -> AsyncIterator[httpx.AsyncClient]:
    settings = GatewaySettings(api_keys=[KEY], nats_url=nats_server.client_url, secret_key=secret)
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


async def stored_events(bus: Bus) -> list[ev.Event]:
    info = await bus.js.stream_info(EVENTS_STREAM)
    out = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        msg = await bus.js.get_msg(EVENTS_STREAM, seq)
        out.append(ev.decode(msg.data or b""))
    return out


async def kv_keys(bus: Bus) -> list[str]:
    try:
        keys: list[str] = await (await bus.kv(JOBS_BUCKET)).keys()
    except nats.js.errors.NoKeysError:
        return []
    return keys


async def event_count(bus: Bus) -> int:
    return (await bus.js.stream_info(EVENTS_STREAM)).state.messages


async def create(client: httpx.AsyncClient, body: dict[str, object]) -> str:
    r = await client.post("/watchers", json=body, headers=H)
    assert r.status_code == 202, r.text
    task_id: str = r.json()["task_id"]
    return task_id


async def watch_requested(bus: Bus, task_id: str) -> ev.WatchRequested:
    (event,) = [
        e
        for e in await stored_events(bus)
        if isinstance(e, ev.WatchRequested) and e.task_id == task_id
    ]
    assert isinstance(event, ev.WatchRequested)
    return event


async def recording_job(bus: Bus, state: jobs.RecState | None = None) -> str:
    """A recording job the scheduler started for a watcher (and, with ``state``, its progress)."""
    store = await job_store(bus)
    job_id = ev.new_id()
    await store.submit(jobs.JobRequest(job_id=job_id, room_id=ROOM, watcher_key=ROOM))
    if state is not None:
        await store.claim(job_id, 1, Claim("rec-1", ROOM, None, None, attempt=1))
    if state is not None and state != "STARTED":
        await store.finish(job_id, Outcome(state), token=1)
    return job_id


async def desired(bus: Bus, job_id: str) -> str:
    found = await (await job_store(bus)).request(job_id)
    assert found is not None
    return found.desired


def path(key: str) -> str:
    return "/watchers/" + quote(key, safe="")


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


# --- read -------------------------------------------------------------------------------------


async def test_list_pages(client: httpx.AsyncClient, scheduler: FakeScheduler) -> None:
    t0 = ev.utc_now()
    keys = [f"@user{i}" for i in range(5)]
    for i, key in enumerate(keys):
        scheduler.add(
            key, created_at=t0 + timedelta(seconds=i), options=ev.RecordingOptions(proxy="sealed-x")
        )
    r = await client.get("/watchers", params={"page": 2, "page_size": 2}, headers=H)
    assert r.status_code == 200
    body = r.json()
    assert (body["page"], body["page_size"], body["total"]) == (2, 2, 5)
    assert [w["key"] for w in body["items"]] == keys[2:4]
    assert "sealed-x" not in r.text
    assert body["items"][0]["options"]["proxy"] is True

    body = (await client.get("/watchers", headers=H)).json()
    assert (body["page"], body["page_size"], body["total"]) == (1, 50, 5)
    assert [w["key"] for w in body["items"]] == keys
    body = (await client.get("/watchers?page=4&page_size=2", headers=H)).json()
    assert (body["items"], body["total"]) == ([], 5)


@pytest.mark.parametrize(
    "query", ["page=0", "page=-1", "page_size=0", "page_size=501", "page=x", "page_size=1.5"]
)
@pytest.mark.usefixtures("scheduler")
async def test_list_refuses_bad_paging(client: httpx.AsyncClient, query: str) -> None:
    r = await client.get(f"/watchers?{query}", headers=H)
    assert r.status_code == 422
    assert r.json()["error_code"] == "VALIDATION_ERROR"


async def test_get_one_by_room_id_user_or_url(
    client: httpx.AsyncClient, scheduler: FakeScheduler
) -> None:
    scheduler.add(ROOM, room_id=ROOM)
    scheduler.add("@alice", unique_id="alice", url="@alice", status="paused")
    scheduler.add(SHORT, url=SHORT, poll_interval=15)
    cases = {
        f"/watchers/{ROOM}": ROOM,
        "/watchers/@alice": "@alice",
        path("@alice"): "@alice",
        path("https://www.tiktok.com/@alice/live"): "@alice",  # the registered URL
        path(SHORT): SHORT,
    }
    for url, key in cases.items():
        r = await client.get(url, headers=H)
        assert r.status_code == 200, url
        assert r.json()["key"] == key
    got = (await client.get(path(SHORT), headers=H)).json()
    assert (got["poll_interval"], got["status"], got["options"]["proxy"]) == (15, "active", False)


@pytest.mark.parametrize(
    "key",
    [
        "@nobody",
        "7503448765740976999",
        "https://www.tiktok.com/@nobody/live",
        "$(id)",
        "; rm -rf /",
        "`id`",
        "../../etc/passwd",
        "file:///etc/passwd",
        "@alice\n",
        "@" + "a" * 400,
    ],
)
async def test_unknown_or_malformed_key_is_404_with_error_body(
    client: httpx.AsyncClient, scheduler: FakeScheduler, key: str
) -> None:
    scheduler.add("@alice")
    for method, suffix in (("GET", ""), ("DELETE", ""), ("POST", "/pause"), ("POST", "/resume")):
        r = await client.request(
            method, path(key) + suffix, headers={**H, "X-Correlation-ID": "corr-404"}
        )
        assert r.status_code == 404, (method, suffix)
        body = r.json()
        assert set(body) == {"error_code", "error_message", "correlation_id"}
        assert (body["error_code"], body["correlation_id"]) == ("NOT_FOUND", "corr-404")


# --- delete, pause, resume ---------------------------------------------------------------------


async def test_delete_cancels_the_recording_and_publishes(
    client: httpx.AsyncClient, bus: Bus, scheduler: FakeScheduler
) -> None:
    task_id = await create(client, {"url": "@alice"})
    old = await recording_job(bus, "SUCCESS")
    current = await recording_job(bus, "STARTED")
    scheduler.register(
        await watch_requested(bus, task_id), jobs=[old, current], current_job_id=current
    )

    r = await client.delete(path("https://www.tiktok.com/@alice/live"), headers=H)
    assert r.status_code == 200
    assert r.json() == {"ok": True}
    deleted = [e for e in await stored_events(bus) if isinstance(e, ev.WatchDeleted)]
    assert [e.key for e in deleted] == ["@alice"]
    assert await desired(bus, current) == "cancel"
    assert await desired(bus, old) == "run"  # finished jobs are left alone
    status = (await client.get(f"/jobs/{task_id}", headers=H)).json()
    assert (status["status"], status["error_code"]) == ("CANCELLED", "CANCELLED")

    # Until the scheduler has applied it, the watcher is "being deleted".
    r = await client.delete("/watchers/@alice", headers=H)
    assert r.status_code == 409
    assert r.json()["error_code"] == "CONFLICT"
    for action in ("pause", "resume"):
        assert (await client.post(f"/watchers/@alice/{action}", headers=H)).status_code == 409
    # ... and its key is free for a new watcher.
    await create(client, {"url": "@alice"})

    # Once it has, the watcher is gone.
    del scheduler.watchers["@alice"]
    assert (await client.delete("/watchers/@alice", headers=H)).status_code == 404


async def test_delete_a_watcher_the_scheduler_marks_deleted_is_409(
    client: httpx.AsyncClient, bus: Bus, scheduler: FakeScheduler
) -> None:
    scheduler.add(ROOM, status="deleted")
    r = await client.delete(f"/watchers/{ROOM}", headers=H)
    assert r.status_code == 409
    assert await event_count(bus) == 0


async def test_delete_a_watcher_without_a_recording(
    client: httpx.AsyncClient, bus: Bus, scheduler: FakeScheduler
) -> None:
    scheduler.add(SHORT)
    r = await client.delete(path(SHORT), headers=H)
    assert r.status_code == 200
    (event,) = await stored_events(bus)
    assert isinstance(event, ev.WatchDeleted)
    assert event.key == SHORT


async def test_pause_and_resume(
    client: httpx.AsyncClient, bus: Bus, scheduler: FakeScheduler
) -> None:
    current = await recording_job(bus)
    scheduler.add(SHORT, current_job_id=current, jobs=[current])

    r = await client.post(path(SHORT) + "/pause", headers={**H, "X-Correlation-ID": "corr-p"})
    assert r.status_code == 200
    assert r.json() == {"ok": True}
    (paused,) = await stored_events(bus)
    assert isinstance(paused, ev.WatchPaused)
    assert (paused.key, paused.correlation_id) == (SHORT, "corr-p")
    assert await desired(bus, current) == "cancel"

    assert (await client.post(path(SHORT) + "/resume", headers=H)).status_code == 409  # not yet
    scheduler.add(SHORT, status="paused")  # the scheduler applied the pause
    r = await client.post(path(SHORT) + "/pause", headers=H)
    assert r.status_code == 409
    assert r.json()["error_code"] == "CONFLICT"

    r = await client.post(path(SHORT) + "/resume", headers=H)
    assert r.status_code == 200
    assert r.json() == {"ok": True}
    events = await stored_events(bus)
    assert [type(e) for e in events] == [ev.WatchPaused, ev.WatchResumed]
    assert isinstance(events[1], ev.WatchResumed)
    assert events[1].key == SHORT


# --- watch jobs --------------------------------------------------------------------------------


async def test_cancelling_a_watch_job_deletes_its_watcher(
    client: httpx.AsyncClient, bus: Bus, scheduler: FakeScheduler
) -> None:
    task_id = await create(client, {"room_id": ROOM})
    current = await recording_job(bus)
    scheduler.register(await watch_requested(bus, task_id), current_job_id=current, jobs=[current])

    r = await client.delete(f"/jobs/{task_id}", headers=H)
    assert r.status_code == 202
    assert (r.json()["status"], r.json()["kind"]) == ("CANCELLED", "watch")
    deleted = [e for e in await stored_events(bus) if isinstance(e, ev.WatchDeleted)]
    assert [e.key for e in deleted] == [ROOM]
    assert await desired(bus, current) == "cancel"
    assert await desired(bus, task_id) == "cancel"


@pytest.mark.usefixtures("scheduler")
async def test_cancelling_a_watch_job_not_yet_registered_queues_the_delete(
    client: httpx.AsyncClient, bus: Bus
) -> None:
    task_id = await create(client, {"url": "@alice"})
    r = await client.delete(f"/jobs/{task_id}", headers=H)
    assert (r.status_code, r.json()["status"]) == (202, "CANCELLED")
    # The scheduler reads the delete after the request: the watcher never stays.
    assert [type(e) for e in await stored_events(bus)] == [ev.WatchRequested, ev.WatchDeleted]
    # Cancelling again changes nothing.
    r = await client.delete(f"/jobs/{task_id}", headers=H)
    assert (r.status_code, r.json()["status"]) == (202, "CANCELLED")
    assert await event_count(bus) == 2


async def test_a_watch_job_replaced_by_a_newer_watcher_reads_cancelled(
    client: httpx.AsyncClient, scheduler: FakeScheduler
) -> None:
    task_id = await create(client, {"room_id": ROOM})
    scheduler.add(ROOM, created_at=ev.utc_now() + timedelta(seconds=5))
    status = (await client.get(f"/jobs/{task_id}", headers=H)).json()
    assert (status["status"], status["watcher"]) == ("CANCELLED", None)


# --- scheduler trouble -------------------------------------------------------------------------


async def test_without_a_scheduler_watcher_routes_are_503(
    client: httpx.AsyncClient, bus: Bus
) -> None:
    requests = [
        ("POST", "/watchers", {"room_id": ROOM}),
        ("GET", "/watchers", None),
        ("GET", f"/watchers/{ROOM}", None),
        ("DELETE", f"/watchers/{ROOM}", None),
        ("POST", f"/watchers/{ROOM}/pause", None),
        ("POST", f"/watchers/{ROOM}/resume", None),
    ]
    for method, url, body in requests:
        r = await client.request(method, url, json=body, headers=H)
        assert r.status_code == 503, (method, url)
        assert r.json()["error_code"] == "SERVICE_UNAVAILABLE"
        assert r.json()["correlation_id"]
    assert await event_count(bus) == 0


async def test_watch_job_status_tolerates_a_missing_scheduler(
    client: httpx.AsyncClient, bus: Bus
) -> None:
    task_id = ev.new_id()
    await (await job_store(bus)).submit(
        jobs.JobRequest(job_id=task_id, kind="watch", watcher_key=ROOM, room_id=ROOM)
    )
    r = await client.get(f"/jobs/{task_id}", headers=H)
    assert r.status_code == 200
    assert (r.json()["status"], r.json()["watcher"], r.json()["jobs"]) == ("PENDING", None, [])
    # Cancelling needs the scheduler: it must know whether the watcher is this job's.
    r = await client.delete(f"/jobs/{task_id}", headers=H)
    assert r.status_code == 503


@pytest.mark.usefixtures("scheduler")
async def test_a_failing_scheduler_is_503(client: httpx.AsyncClient) -> None:
    r = await client.get(path(BROKEN), headers=H)
    assert r.status_code == 503
    assert r.json()["error_code"] == "SERVICE_UNAVAILABLE"
    assert "exploded" not in r.text

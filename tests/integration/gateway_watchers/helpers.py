"""The /watchers tests' stand-in scheduler, and reading what the gateway stored and published.

The stand-in answers ``tlr.scheduler.watchers.get`` / ``.list`` from a dict, exactly on the
contract of ``shared.watchers``; tests change that dict to play what the scheduler would do
with the commands the gateway publishes.
"""

from __future__ import annotations

from urllib.parse import quote

import httpx
import msgspec
import nats
import nats.js.errors
from nats.aio.client import Client
from nats.micro import add_service
from nats.micro.request import Request, ServiceError
from nats.micro.service import Service

from services.gateway.api_keys import key_id
from shared import events as ev
from shared import jobs
from shared.bus import Bus
from shared.jobs import Claim, Outcome
from shared.subjects import EVENTS_STREAM, JOBS_BUCKET
from shared.watchers import GetRequest, ListReply, ListRequest, Watcher
from tests.helpers import job_store

KEY = "k-watchers"
H = {"X-API-Key": KEY}
OWNER = key_id(KEY)  # what the gateway records as the owner of what KEY makes
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
        mine = [w for w in self.watchers.values() if ask.owner in (None, w.owner)]
        ordered = sorted(mine, key=lambda w: (w.created_at, w.key))
        start = (ask.page - 1) * ask.page_size
        reply = ListReply(items=ordered[start : start + ask.page_size], total=len(ordered))
        await req.respond(msgspec.json.encode(reply))

    def add(self, key: str, **fields: object) -> Watcher:
        """A watcher as the scheduler would hold it (``task_id`` defaults to a fresh id, the
        owner to KEY's name)."""
        fields.setdefault("task_id", ev.new_id())
        fields.setdefault("created_at", ev.utc_now())
        fields.setdefault("owner", OWNER)
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
            owner=event.owner,
            **fields,
        )


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
    request = jobs.JobRequest(job_id=job_id, room_id=ROOM, watcher_key=ROOM, owner=OWNER)
    await store.submit(request)
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

"""The recorder on the egress pool, black-box: tagged proxies in front of the fake TikTok, the
scheduler owning the pool, the gateway showing each job's egress.

An on-demand job records through the pool's least-loaded healthy egress, a watcher's live
through the egress of the watcher that found it, media directly when EGRESS_MEDIA_DIRECT says
so, a WAF page the recorder meets counts against its egress, and a job whose pick gets no
answer records direct instead of failing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
from nats.aio.msg import Msg
from prometheus_client import REGISTRY

from services.gateway.app import create_app
from services.gateway.nats_link import NatsLink
from services.gateway.settings import GatewaySettings
from services.recorder.service import RecorderService
from services.recorder.settings import RecorderSettings
from services.scheduler.service import SchedulerService
from services.scheduler.settings import SchedulerSettings
from shared.bus import Bus
from shared.egresses import LIST, PICK, EgressList
from shared.events import WatchRequested
from shared.secrets import new_key
from shared.watchers import GET, GetRequest, Watcher
from tests.helpers import JobsApi, eventually
from tests.http_proxy import AuthProxy
from tlr.fake_tiktok import FakeTikTok
from tlr.fake_tiktok.cdn import BACKUP_CDN_PREFIX, CDN_PREFIX
from tlr.nats_server import NatsServer

FAKE_TIKTOK_OPTIONS = {"speed": 4.0}
ADMIN = "k-egress-admin"
PASSWORD = "egress-s3cret"
POLL = 2
ROOM_INFO = "/webcast/room/info/"


def media_requests(proxy: AuthProxy) -> int:
    """FLV requests the proxy forwarded (to either of the fake's CDNs)."""
    return sum(
        n for p, n in proxy.requests.items() if p.startswith((CDN_PREFIX, BACKUP_CDN_PREFIX))
    )


@dataclass
class Stack:
    api: JobsApi
    bus: Bus
    fake: FakeTikTok
    proxies: dict[str, AuthProxy]

    async def pool(self) -> EgressList:
        reply = await self.bus.nc.request(LIST, b"", timeout=2)
        return msgspec.json.decode(reply.data, type=EgressList)

    async def watcher(self, key: str) -> Watcher:
        reply = await self.bus.nc.request(GET, msgspec.json.encode(GetRequest(key=key)), timeout=2)
        return msgspec.json.decode(reply.data, type=Watcher)


@pytest.fixture
async def proxies() -> AsyncIterator[dict[str, AuthProxy]]:
    async with (
        AuthProxy("pool", PASSWORD, tag="p1") as p1,
        AuthProxy("pool", PASSWORD, tag="p2") as p2,
    ):
        yield {"p1": p1, "p2": p2}


async def start_stack(
    exits: AsyncExitStack,
    *,
    nats_server: NatsServer,
    bus: Bus,
    fake: FakeTikTok,
    tmp: Path,
    proxies: dict[str, AuthProxy],
    scheduler: bool = True,
    **recorder: Any,
) -> Stack:
    secret = new_key()
    keys = tmp / "keys"
    keys.write_text(f"root {ADMIN} role=admin\n")
    egress_file = tmp / "egresses"
    egress_file.write_text("".join(f"{n} {p.url()} 600\n" for n, p in proxies.items()))
    if scheduler:
        settings = SchedulerSettings(
            nats_url=nats_server.client_url,
            instance_id="sched-egress",
            scheduler_db=tmp / "scheduler.sqlite3",
            tiktok_web_base=fake.base_url,
            tiktok_webcast_base=fake.base_url,
            secret_key=secret,
            allow_private_proxies=True,  # the test's proxies listen on loopback
            egress_file=egress_file,
        )
        await exits.enter_async_context(SchedulerService(bus, settings))
    rec = RecorderSettings(
        nats_url=nats_server.client_url,
        instance_id="rec-egress",
        recordings_dir=tmp / "recordings",
        tiktok_web_base=fake.base_url,
        tiktok_webcast_base=fake.base_url,
        read_timeout=2.0,
        secret_key=secret,
        allow_private_proxies=True,
        **fake.egress_settings,
        **recorder,
    )
    await exits.enter_async_context(RecorderService(bus, rec))
    gw = GatewaySettings(
        api_keys_file=keys,
        nats_url=nats_server.client_url,
        rate_limit_per_min=100_000,
        secret_key=secret,
    )
    link = await exits.enter_async_context(NatsLink(gw))
    await link.wait_connected()
    transport = httpx.ASGITransport(app=create_app(gw, link=link))
    client = await exits.enter_async_context(
        httpx.AsyncClient(transport=transport, base_url="http://gw")
    )
    stack = Stack(JobsApi(client, ADMIN), bus, fake, proxies)
    if scheduler:

        async def pool_loaded() -> bool:
            return sorted(e.name for e in (await stack.pool()).items) == sorted(proxies)

        await eventually(pool_loaded, timeout=10)
    return stack


async def test_on_demand_jobs_take_the_least_loaded_egress_and_lives_their_watchers_egress(
    nats_server: NatsServer,
    bus: Bus,
    fake_tiktok: FakeTikTok,
    tmp_path: Path,
    proxies: dict[str, AuthProxy],
) -> None:
    await fake_tiktok.create_user("watched")
    await fake_tiktok.create_user("asked")
    async with AsyncExitStack() as exits:
        stack = await start_stack(
            exits,
            nats_server=nats_server,
            bus=bus,
            fake=fake_tiktok,
            tmp=tmp_path,
            proxies=proxies,
        )
        await bus.publish(
            WatchRequested(task_id="t-w", key="@watched", unique_id="watched", poll_interval=POLL)
        )

        async def placed() -> bool:  # both empty: the first by name takes the watcher
            return {e.name: e.assigned_watchers for e in (await stack.pool()).items} == {
                "p1": 1,
                "p2": 0,
            }

        await eventually(placed, timeout=15, interval=0.2)

        # On demand: p2 carries no watcher, so it is the least loaded.
        await fake_tiktok.go_live("asked")
        task_id = await stack.api.record(url="@asked", duration=4)
        job = await stack.api.wait(task_id, "SUCCESS", "FAILURE")
        assert job["status"] == "SUCCESS", job
        assert job["progress"]["bytes"] > 0
        assert job["progress"]["egress"] == "p2"
        assert proxies["p2"].requests[ROOM_INFO] > 0  # the room lookups went through it
        assert media_requests(proxies["p2"]) > 0  # and the FLV
        assert media_requests(proxies["p1"]) == 0
        assert PASSWORD not in str(job)

        # The watcher's live: through p1, the egress its watcher polls through.
        p2_media = media_requests(proxies["p2"])
        await fake_tiktok.go_live("watched")

        live_job: list[str] = []

        async def watcher_recording() -> bool:
            job_id = (await stack.watcher("@watched")).current_job_id
            if job_id is None:
                return False
            live_job[:] = [job_id]
            return bool((await stack.api.job(job_id))["progress"]["bytes"] > 0)

        await eventually(watcher_recording, timeout=30, interval=0.2)
        assert (await stack.api.job(live_job[0]))["progress"]["egress"] == "p1"
        assert media_requests(proxies["p1"]) > 0
        assert media_requests(proxies["p2"]) == p2_media
        await fake_tiktok.end("watched")
        await stack.api.wait(live_job[0], "SUCCESS", "FAILURE")


async def test_media_direct_keeps_the_lookups_on_the_egress(
    nats_server: NatsServer,
    bus: Bus,
    fake_tiktok: FakeTikTok,
    tmp_path: Path,
    proxies: dict[str, AuthProxy],
) -> None:
    await fake_tiktok.create_user("direct_media")
    await fake_tiktok.go_live("direct_media")
    async with AsyncExitStack() as exits:
        stack = await start_stack(
            exits,
            nats_server=nats_server,
            bus=bus,
            fake=fake_tiktok,
            tmp=tmp_path,
            proxies={"p1": proxies["p1"]},
            egress_media_direct=True,
        )
        task_id = await stack.api.record(url="@direct_media", duration=4)
        job = await stack.api.wait(task_id, "SUCCESS", "FAILURE")
        assert job["status"] == "SUCCESS", job
        assert job["progress"]["bytes"] > 0
        assert job["progress"]["egress"] == "p1"
        assert proxies["p1"].requests[ROOM_INFO] > 0
        assert media_requests(proxies["p1"]) == 0


async def test_a_waf_page_the_recorder_meets_counts_against_the_egress_and_the_retry_moves_on(
    nats_server: NatsServer,
    bus: Bus,
    fake_tiktok: FakeTikTok,
    tmp_path: Path,
    proxies: dict[str, AuthProxy],
) -> None:
    # p1 is blocked and, both idle, the first by name: the job's first try goes through it.
    await fake_tiktok.set_scenario(waf_difficulty=1000, blocked_egresses=["p1"])
    await fake_tiktok.create_user("walled")
    await fake_tiktok.go_live("walled")
    async with AsyncExitStack() as exits:
        stack = await start_stack(
            exits,
            nats_server=nats_server,
            bus=bus,
            fake=fake_tiktok,
            tmp=tmp_path,
            proxies=proxies,
        )
        task_id = await stack.api.record(url="@walled", duration=4)
        job = await stack.api.wait(task_id, "SUCCESS", "FAILURE")
        assert job["status"] == "SUCCESS", job
        assert job["progress"]["egress"] == "p2"
        assert sum(proxies["p1"].requests.values()) > 0  # the first try went through p1

        async def counted() -> bool:  # the recorder's report reached the pool
            by_name = {e.name: e for e in (await stack.pool()).items}
            return by_name["p1"].waf_answers >= 1

        await eventually(counted, timeout=10, interval=0.2)
        assert {e.name: e.waf_answers for e in (await stack.pool()).items}["p2"] == 0


def failures() -> float:
    return REGISTRY.get_sample_value("tlr_recorder_egress_pick_failures_total") or 0.0


async def test_a_scheduler_that_does_not_answer_leaves_the_job_direct(
    nats_server: NatsServer,
    bus: Bus,
    fake_tiktok: FakeTikTok,
    tmp_path: Path,
    proxies: dict[str, AuthProxy],
) -> None:
    await fake_tiktok.create_user("no_answer")
    await fake_tiktok.go_live("no_answer")
    asked: list[Msg] = []

    async def stuck(msg: Msg) -> None:  # a scheduler instance that hears and never answers
        asked.append(msg)

    before = failures()
    sub = await bus.nc.subscribe(PICK, queue="q", cb=stuck)
    try:
        async with AsyncExitStack() as exits:
            stack = await start_stack(
                exits,
                nats_server=nats_server,
                bus=bus,
                fake=fake_tiktok,
                tmp=tmp_path,
                proxies=proxies,
                scheduler=False,
            )
            task_id = await stack.api.record(url="@no_answer", duration=4)
            job = await stack.api.wait(task_id, "SUCCESS", "FAILURE")
            assert job["status"] == "SUCCESS", job
            assert job["progress"]["bytes"] > 0
            assert job["progress"]["egress"] is None
            assert len(asked) == 1
            assert failures() == before + 1
            assert all(sum(p.requests.values()) == 0 for p in proxies.values())
    finally:
        await sub.unsubscribe()

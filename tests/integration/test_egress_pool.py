"""The egress pool, black-box: three proxies in front of the fake TikTok, one of them blocked.
Every watcher keeps being checked (its watchers move to the healthy proxies) and a live is
recorded; the pool is managed through the REST API by admins only, and never shows a URL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest

from services.gateway.app import create_app
from services.gateway.nats_link import NatsLink
from services.gateway.settings import GatewaySettings
from services.recorder.service import RecorderService
from services.recorder.settings import RecorderSettings
from services.scheduler.egress_pool import BLOCK_AFTER
from services.scheduler.service import SchedulerService
from services.scheduler.settings import SchedulerSettings
from shared.bus import Bus
from shared.egresses import LIST, EgressList
from shared.events import WatchRequested
from shared.secrets import new_key
from shared.watchers import GET, GetRequest, Watcher
from tests.helpers import eventually, job_store
from tests.http_proxy import AuthProxy
from tlr.fake_tiktok import FakeTikTok
from tlr.nats_server import NatsServer

FAKE_TIKTOK_OPTIONS = {"speed": 4.0}
PASSWORD = "pool-s3cret"
ADMIN = {"X-API-Key": "k-pool-admin"}
USER = {"X-API-Key": "k-pool-user"}
POLL = 2


def scheduler_settings(
    nats: NatsServer, fake: FakeTikTok, tmp: Path, secret: str, **extra: Any
) -> SchedulerSettings:
    return SchedulerSettings(
        nats_url=nats.client_url,
        instance_id="sched-pool",
        scheduler_db=tmp / "scheduler.sqlite3",
        tiktok_web_base=fake.base_url,
        tiktok_webcast_base=fake.base_url,
        secret_key=secret,
        allow_private_proxies=True,  # the test's proxies listen on loopback
        **extra,
    )


async def pool(bus: Bus) -> EgressList:
    reply = await bus.nc.request(LIST, b"", timeout=2)
    return msgspec.json.decode(reply.data, type=EgressList)


async def watcher(bus: Bus, key: str) -> Watcher | None:
    reply = await bus.nc.request(GET, msgspec.json.encode(GetRequest(key=key)), timeout=2)
    if reply.headers and reply.headers.get("Nats-Service-Error-Code"):
        return None
    return msgspec.json.decode(reply.data, type=Watcher)


@pytest.fixture
async def proxies() -> AsyncIterator[list[AuthProxy]]:
    async with (
        AuthProxy("pool", PASSWORD, tag="p1") as p1,
        AuthProxy("pool", PASSWORD, tag="p2") as p2,
        AuthProxy("pool", PASSWORD, tag="p3") as p3,
    ):
        yield [p1, p2, p3]


async def test_a_blocked_proxy_loses_its_watchers_and_every_watcher_is_still_checked(
    bus: Bus,
    nats_server: NatsServer,
    fake_tiktok: FakeTikTok,
    tmp_path: Path,
    proxies: list[AuthProxy],
) -> None:
    await fake_tiktok.set_scenario(waf_difficulty=1000, blocked_egresses=["p2"])
    users = [f"pool{i}" for i in range(6)]
    for user in users:
        await fake_tiktok.create_user(user)
    rooms = []
    for user in ("gone0", "gone1", "gone2"):  # rooms whose lives ended: watched by room id
        await fake_tiktok.create_user(user)
        rooms.append((await fake_tiktok.go_live(user)).room_id)
        await fake_tiktok.end(user)
    egress_file = tmp_path / "egresses"
    egress_file.write_text(
        "# the test's three proxies\n" + "".join(f"{p.tag} {p.url()} 600\n" for p in proxies)
    )
    secret = new_key()
    settings = scheduler_settings(
        nats_server, fake_tiktok, tmp_path, secret, egress_file=egress_file
    )
    recorder = RecorderSettings(
        nats_url=nats_server.client_url,
        instance_id="rec-pool",
        recordings_dir=tmp_path / "recordings",
        tiktok_web_base=fake_tiktok.base_url,
        tiktok_webcast_base=fake_tiktok.base_url,
        read_timeout=2.0,
        secret_key=secret,
        **fake_tiktok.egress_settings,
    )
    keys = [f"@{u}" for u in users] + rooms
    async with SchedulerService(bus, settings), RecorderService(bus, recorder):
        for user in users:
            await bus.publish(
                WatchRequested(
                    task_id=f"t-{user}", key=f"@{user}", unique_id=user, poll_interval=POLL
                )
            )
        for room in rooms:
            await bus.publish(
                WatchRequested(task_id=f"t-{room}", key=room, room_id=room, poll_interval=POLL)
            )

        async def p2_blocked_and_emptied() -> bool:
            by_name = {e.name: e for e in (await pool(bus)).items}
            return (
                by_name["p2"].state == "blocked"
                and by_name["p2"].assigned_watchers == 0
                and by_name["p1"].assigned_watchers + by_name["p3"].assigned_watchers == len(keys)
            )

        await eventually(p2_blocked_and_emptied, timeout=60, interval=0.2)
        assert sum(proxies[1].requests.values()) > 0  # p2 was tried: it is its answers that tell
        status = {e.name: e for e in (await pool(bus)).items}
        assert status["p2"].waf_answers >= BLOCK_AFTER
        assert status["p2"].reason == "WAF_BLOCKED"
        blocked_at = datetime.now().astimezone()

        async def all_checked_since() -> bool:
            seen = [await watcher(bus, k) for k in keys]
            return all(
                w is not None
                and w.last_outcome == "offline"
                and w.last_run_at is not None
                and w.last_run_at > blocked_at
                for w in seen
            )

        await eventually(all_checked_since, timeout=30, interval=0.2)
        # p1 and p3 carry everything now, each well within its budget.
        after = {e.name: e for e in (await pool(bus)).items}
        assert after["p1"].requests > 0
        assert after["p3"].requests > 0
        assert all(e.need_per_min <= e.requests_per_min for e in after.values())

        live = await fake_tiktok.go_live(users[0])
        store = await job_store(bus)

        async def recorded() -> bool:
            w = await watcher(bus, f"@{users[0]}")
            if w is None or w.current_job_id is None:
                return False
            doc = await store.recording(w.current_job_id)
            return doc is not None and doc.bytes > 0

        await eventually(recorded, timeout=40, interval=0.2)
        assert live.room_id
        await fake_tiktok.end(users[0])


@pytest.fixture
async def api(
    nats_server: NatsServer, bus: Bus, fake_tiktok: FakeTikTok, tmp_path: Path
) -> AsyncIterator[httpx.AsyncClient]:
    keys_file = tmp_path / "keys"
    keys_file.write_text(f"root {ADMIN['X-API-Key']} role=admin\nuser {USER['X-API-Key']}\n")
    secret = new_key()
    gw = GatewaySettings(
        api_keys_file=keys_file,
        nats_url=nats_server.client_url,
        rate_limit_per_min=100_000,
        secret_key=secret,
    )
    async with (
        SchedulerService(bus, scheduler_settings(nats_server, fake_tiktok, tmp_path, secret)),
        NatsLink(gw) as link,
    ):
        await link.wait_connected()
        transport = httpx.ASGITransport(app=create_app(gw, link=link))
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            yield client


async def test_admins_manage_the_pool_and_no_answer_shows_a_proxy(
    api: httpx.AsyncClient, bus: Bus
) -> None:
    proxy = f"http://pool:{PASSWORD}@proxy.example.com:3128"
    body = {"name": "eu-1", "proxy": proxy, "requests_per_min": 90}
    r = await api.post("/egresses", json=body, headers=ADMIN)
    assert r.status_code == 202, r.text
    assert r.json() == {"name": "eu-1", "kind": "proxy", "status": "PENDING"}
    r = await api.post("/egresses", json={"name": "home"}, headers=ADMIN)
    assert r.status_code == 202, r.text

    async def listed() -> bool:
        r = await api.get("/egresses", headers=ADMIN)
        return r.status_code == 200 and len(r.json()["items"]) == 2

    await eventually(listed, timeout=10)
    r = await api.get("/egresses", headers=ADMIN)
    assert PASSWORD not in r.text
    assert "proxy.example.com" not in r.text
    items = {e["name"]: e for e in r.json()["items"]}
    assert items["eu-1"]["kind"] == "proxy"
    assert items["eu-1"]["requests_per_min"] == 90
    assert items["eu-1"]["state"] == "healthy"
    assert items["home"]["kind"] == "direct"
    assert r.json()["healthy_capacity_per_min"] == 90 + 120
    # Nothing readable of the proxy in the pool's command either.
    stored = await bus.js.get_last_msg("EVENTS", "egress.added")
    assert PASSWORD.encode() not in (stored.data or b"")

    for method, path in (("GET", "/egresses"), ("DELETE", "/egresses/eu-1")):
        r = await api.request(method, path, headers=USER)
        assert r.status_code == 403, r.text
        assert r.json()["error_code"] == "FORBIDDEN"
    r = await api.post("/egresses", json={"name": "x"}, headers=USER)
    assert r.status_code == 403

    for bad in (
        {"name": "Bad Name"},
        {"name": "proxy-1234"},
        {"name": "ok", "proxy": "ftp://h:1"},
        {"name": "ok", "proxy": f"http://pool:{PASSWORD}@127.0.0.1:3128"},  # private
        {"name": "ok", "requests_per_min": 0},
    ):
        r = await api.post("/egresses", json=bad, headers=ADMIN)
        assert r.status_code == 422, (bad, r.text)
        assert r.json()["error_code"] == "VALIDATION_ERROR"
        assert PASSWORD not in r.text

    r = await api.delete("/egresses/nope", headers=ADMIN)
    assert r.status_code == 404
    assert r.json()["error_code"] == "NOT_FOUND"
    r = await api.delete("/egresses/eu-1", headers=ADMIN)
    assert r.status_code == 200, r.text

    async def removed() -> bool:
        r = await api.get("/egresses", headers=ADMIN)
        return [e["name"] for e in r.json()["items"]] == ["home"]

    await eventually(removed, timeout=10)

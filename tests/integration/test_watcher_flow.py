"""Watchers end to end: REST -> scheduler -> recorder, with scheduler processes killed."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.gateway.app import create_app
from services.gateway.nats_link import NatsLink
from services.gateway.settings import GatewaySettings
from services.recorder.service import RecorderService
from services.recorder.settings import RecorderSettings
from services.scheduler.service import LEADER_LEASE, SchedulerService
from services.scheduler.settings import SchedulerSettings
from shared.bus import Bus
from shared.events import WatchRequested
from shared.lease import current_holder
from shared.micro import ping_all
from shared.secrets import new_key
from shared.subjects import CLAIMS_BUCKET
from tests.helpers import JobsApi, decode_errors, eventually
from tlr.fake_tiktok import FakeTikTok
from tlr.nats_server import NatsServer

KEY = "k-watch"
FAKE_TIKTOK_OPTIONS = {"speed": 4.0}


class Api(JobsApi):
    async def watch(self, correlation_id: str | None = None, **body: Any) -> str:
        headers = dict(self.headers)
        if correlation_id:
            headers["X-Correlation-ID"] = correlation_id
        r = await self.client.post("/watchers", json=body, headers=headers)
        assert r.status_code == 202, r.text
        task_id: str = r.json()["task_id"]
        return task_id

    async def watcher(self, key: str) -> httpx.Response:
        return await self.client.get(f"/watchers/{key}", headers=self.headers)


@pytest.fixture
async def api(
    nats_server: NatsServer, bus: Bus, fake_tiktok: FakeTikTok, tmp_path: Path
) -> AsyncIterator[Api]:
    secret = new_key()
    common = {
        "nats_url": nats_server.client_url,
        "tiktok_web_base": fake_tiktok.base_url,
        "tiktok_webcast_base": fake_tiktok.base_url,
        "secret_key": secret,
    }
    gw = GatewaySettings(api_keys=[KEY], rate_limit_per_min=100_000, **common)  # type: ignore[arg-type]
    rec = RecorderSettings(
        instance_id="rec-1",
        recordings_dir=tmp_path / "recordings",
        read_timeout=2.0,
        **common,  # type: ignore[arg-type]
        **fake_tiktok.egress_settings,
    )
    sched = SchedulerSettings(
        instance_id="sched-1",
        scheduler_db=tmp_path / "scheduler.sqlite3",
        **common,  # type: ignore[arg-type]
    )
    async with NatsLink(gw) as link, RecorderService(bus, rec), SchedulerService(bus, sched):
        await link.wait_connected()
        transport = httpx.ASGITransport(app=create_app(gw, link=link))
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            yield Api(client, KEY)


async def test_watch_record_then_delete_cancels_the_recording(
    api: Api, fake_tiktok: FakeTikTok, tmp_path: Path
) -> None:
    await fake_tiktok.create_user("gus")
    task_id = await api.watch(
        url="https://www.tiktok.com/@gus/live", poll_interval=10, correlation_id="cid-gus-1"
    )

    async def known() -> bool:
        r = await api.watcher("@gus")
        return r.status_code == 200 and r.json()["live_state"] == "offline"

    await eventually(known, timeout=15)
    await fake_tiktok.go_live("gus")

    async def recording() -> bool:
        w = (await api.watcher("@gus")).json()
        if not w.get("current_job_id"):
            return False
        job = await api.job(w["current_job_id"])
        return job["status"] == "STARTED" and job["progress"]["segments"] > 0

    # Detection within about a poll, then the first segment: a generous failure guard (a
    # loaded machine solves the fake's proof of work slowly), not a speed check.
    await eventually(recording, timeout=45, interval=0.1)
    job_id = (await api.watcher("@gus")).json()["current_job_id"]
    watch_job = await api.job(task_id)
    assert job_id in watch_job["jobs"]
    # The id the client sent with the watcher follows each of its lives (logs, events, status).
    assert (await api.job(job_id))["correlation_id"] == "cid-gus-1"
    assert watch_job["correlation_id"] == "cid-gus-1"

    r = await api.client.delete("/watchers/@gus", headers=api.headers)
    assert r.status_code == 200
    assert r.json() == {"ok": True}
    job = await api.wait(job_id, "CANCELLED", timeout=15)
    files = [tmp_path / "recordings" / f for f in job["result"]["files"]]
    assert files
    for f in files:
        assert decode_errors(f) == ""

    async def gone() -> bool:
        return (await api.watcher("@gus")).status_code == 404

    await eventually(gone, timeout=10)
    missing = await api.client.delete("/watchers/@nobody", headers=api.headers)
    assert missing.status_code == 404
    assert missing.json()["error_code"] == "NOT_FOUND"


async def test_a_patched_interval_is_used_while_the_recording_goes_on(
    api: Api, fake_tiktok: FakeTikTok, tmp_path: Path
) -> None:
    await fake_tiktok.create_user("ivy")
    await fake_tiktok.go_live("ivy")
    await api.watch(url="@ivy", poll_interval=10)

    async def recording() -> bool:
        w = (await api.watcher("@ivy")).json()
        if not w.get("current_job_id"):
            return False
        job = await api.job(w["current_job_id"])
        return job["status"] == "STARTED" and job["progress"]["segments"] > 0

    await eventually(recording, timeout=45, interval=0.1)
    before = (await api.watcher("@ivy")).json()
    job_id = before["current_job_id"]

    r = await api.client.patch("/watchers/@ivy", json={"poll_interval": 30}, headers=api.headers)
    assert r.status_code == 202, r.text
    assert r.json()["poll_interval"] == 30

    async def checked_since() -> bool:
        w = (await api.watcher("@ivy")).json()
        return w["poll_interval"] == 30 and w["last_run_at"] != before["last_run_at"]

    # The check planned with the old interval (10 s) comes; it plans the next with the new.
    await eventually(checked_since, timeout=30, interval=0.2)
    after = (await api.watcher("@ivy")).json()
    gap = datetime.fromisoformat(after["next_check_at"]) - datetime.fromisoformat(
        after["last_run_at"]
    )
    assert timedelta(seconds=10) < gap <= timedelta(seconds=30)
    # The same recording, still going: never stopped, never started again.
    assert after["current_job_id"] == job_id
    assert after["jobs"] == before["jobs"]
    assert (await api.job(job_id))["status"] == "STARTED"
    r = await api.client.delete("/watchers/@ivy", headers=api.headers)
    assert r.status_code == 200
    job = await api.wait(job_id, "CANCELLED", timeout=15)
    files = [tmp_path / "recordings" / f for f in job["result"]["files"]]
    assert files
    for f in files:
        assert decode_errors(f) == ""


async def test_sigkilled_scheduler_process_is_replaced(
    bus: Bus, nats_server: NatsServer, fake_tiktok: FakeTikTok, tmp_path: Path
) -> None:
    """Two scheduler processes: exactly one polls; SIGKILL it; the other polls within 30 s."""
    await fake_tiktok.create_user("hal")
    env = {
        **os.environ,
        "NATS_URL": nats_server.client_url,
        "SCHEDULER_DB": str(tmp_path / "scheduler.sqlite3"),
        "TIKTOK_WEB_BASE": fake_tiktok.base_url,
        "TIKTOK_WEBCAST_BASE": fake_tiktok.base_url,
        "LOG_FORMAT": "json",
    }
    claims = await bus.kv(CLAIMS_BUCKET)

    async def lease_owner() -> str | None:
        holder = await current_holder(claims, LEADER_LEASE)
        return holder.owner if holder else None

    procs: dict[str, asyncio.subprocess.Process] = {}
    try:
        for name in ("sched-a", "sched-b"):
            with (tmp_path / f"{name}.log").open("wb") as log:  # kept for diagnosis
                procs[name] = await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    "services.scheduler",
                    env={**env, "INSTANCE_ID": name},
                    stdout=log,
                    stderr=asyncio.subprocess.STDOUT,
                )

        async def both_up() -> bool:
            replies = await ping_all(bus.nc, wait=0.5)
            names = {r.get("metadata", {}).get("instance") for r in replies}
            return {"sched-a", "sched-b"} <= names

        try:
            await eventually(both_up, timeout=40)
        except AssertionError as exc:
            logs = {n: (tmp_path / f"{n}.log").read_text()[-2000:] for n in procs}
            msg = f"schedulers not both up: {logs}"
            raise AssertionError(msg) from exc
        await bus.publish(
            WatchRequested(task_id="t-hal", key="@hal", unique_id="hal", poll_interval=1)
        )

        async def polled(n: int) -> bool:
            # A resolve reads the profile page: the WAF challenge, then the page.
            return len(await fake_tiktok.requests("/@hal")) >= 2 * n

        await eventually(lambda: polled(3), timeout=20)
        owner = await lease_owner()
        assert owner in procs
        # Each poll (1 s) is one resolve (two page requests): two pollers would double it.
        await fake_tiktok.clear_requests()
        await asyncio.sleep(5)  # a window of polling, to count requests in it
        assert len(await fake_tiktok.requests("/@hal")) <= 12

        loop = asyncio.get_running_loop()
        procs[owner].send_signal(signal.SIGKILL)
        killed = loop.time()
        await procs[owner].wait()
        await fake_tiktok.clear_requests()
        await eventually(lambda: polled(1), timeout=30)
        assert loop.time() - killed < 30
        survivor = next(n for n in procs if n != owner)
        assert await lease_owner() == survivor
    finally:
        for proc in procs.values():
            if proc.returncode is None:
                proc.kill()
                await proc.wait()

"""Each API key sees and changes only its own jobs and watchers; an admin's key, everything.

A real nats-server, the real scheduler (polling the fake TikTok) and the gateway with three
keys: alice (API_KEYS), bob (API_KEYS_FILE) and root (API_KEYS_FILE, role=admin).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from services.gateway.api_keys import key_id
from services.gateway.app import create_app
from services.gateway.nats_link import NatsLink
from services.gateway.settings import GatewaySettings
from services.scheduler.service import SchedulerService
from services.scheduler.settings import SchedulerSettings
from shared.bus import Bus
from shared.events import WatchRequested
from tests.helpers import eventually, job_store
from tlr.fake_tiktok import FakeTikTok
from tlr.nats_server import NatsServer

ALICE = {"X-API-Key": "k-alice-own"}
BOB = {"X-API-Key": "k-bob-own"}
ROOT = {"X-API-Key": "k-root-own"}
ALICE_NAME = key_id(ALICE["X-API-Key"])  # an API_KEYS key is named by its hash prefix
KEYS_FILE = f"""bob {BOB["X-API-Key"]}
root {ROOT["X-API-Key"]} role=admin
"""


@dataclass
class Api:
    client: httpx.AsyncClient
    bus: Bus

    async def call(self, method: str, path: str, who: dict[str, str], **kw: Any) -> httpx.Response:
        return await self.client.request(method, path, headers=who, **kw)

    async def watch(self, who: dict[str, str], user: str) -> str:
        r = await self.call("POST", "/watchers", who, json={"url": f"@{user}", "poll_interval": 10})
        assert r.status_code == 202, r.text
        task_id: str = r.json()["task_id"]

        async def registered() -> bool:
            return (
                await self.call("GET", f"/watchers/{quote('@' + user)}", ROOT)
            ).status_code == 200

        await eventually(registered, timeout=15)
        return task_id


@pytest.fixture
async def api(
    nats_server: NatsServer, bus: Bus, fake_tiktok: FakeTikTok, tmp_path: Path
) -> AsyncIterator[Api]:
    keys_file = tmp_path / "keys"
    keys_file.write_text(KEYS_FILE)
    gw = GatewaySettings(
        api_keys=[ALICE["X-API-Key"]],
        api_keys_file=keys_file,
        nats_url=nats_server.client_url,
        rate_limit_per_min=100_000,
    )
    sched = SchedulerSettings(
        nats_url=nats_server.client_url,
        instance_id="sched-1",
        scheduler_db=tmp_path / "scheduler.sqlite3",
        tiktok_web_base=fake_tiktok.base_url,
        tiktok_webcast_base=fake_tiktok.base_url,
    )
    async with NatsLink(gw) as link, SchedulerService(bus, sched):
        await link.wait_connected()
        transport = httpx.ASGITransport(app=create_app(gw, link=link))
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            yield Api(client, bus)


def same_answer(a: httpx.Response, b: httpx.Response) -> bool:
    """The same status and body but for the correlation id: nothing tells them apart."""
    strip = lambda r: {k: v for k, v in r.json().items() if k != "correlation_id"}  # noqa: E731
    return a.status_code == b.status_code and strip(a) == strip(b)


async def test_another_keys_job_is_a_404_like_one_that_does_not_exist(api: Api) -> None:
    r = await api.call("POST", "/recordings", ALICE, json={"url": "@alice", "duration": 60})
    assert r.status_code == 202
    task = r.json()["task_id"]
    nothing = str(uuid.uuid4())

    for method in ("GET", "DELETE"):
        theirs = await api.call(method, f"/jobs/{task}", BOB)
        assert theirs.status_code == 404
        assert theirs.json()["error_code"] == "NOT_FOUND"
        assert same_answer(theirs, await api.call(method, f"/jobs/{nothing}", BOB))
    mine = await api.call("GET", f"/jobs/{task}", ALICE)
    assert (mine.json()["status"], mine.json()["owner"]) == ("PENDING", ALICE_NAME)  # not cancelled

    # An admin sees and cancels anyone's job.
    assert (await api.call("GET", f"/jobs/{task}", ROOT)).json()["owner"] == ALICE_NAME
    cancelled = await api.call("DELETE", f"/jobs/{task}", ROOT)
    assert (cancelled.status_code, cancelled.json()["status"]) == (202, "CANCELLED")


async def test_an_idempotency_key_is_each_api_keys_own(api: Api) -> None:
    body = {"room_id": "7503448765740976902"}
    once = {"Idempotency-Key": "same-key-1"}
    alice = await api.call("POST", "/recordings", {**ALICE, **once}, json=body)
    bob = await api.call("POST", "/recordings", {**BOB, **once}, json=body)
    assert alice.status_code == bob.status_code == 202
    assert alice.json()["task_id"] != bob.json()["task_id"]  # bob never learns alice's
    again = await api.call("POST", "/recordings", {**BOB, **once}, json=body)
    assert again.json()["task_id"] == bob.json()["task_id"]
    assert (await api.call("GET", f"/jobs/{bob.json()['task_id']}", BOB)).status_code == 200


async def test_another_keys_watcher_is_a_404_and_lists_show_only_ones_own(
    api: Api, fake_tiktok: FakeTikTok
) -> None:
    for user in ("ann", "bea", "cid"):
        await fake_tiktok.create_user(user)
    watch_task = await api.watch(ALICE, "ann")
    await api.watch(ALICE, "bea")
    await api.watch(BOB, "cid")

    for method, suffix in (("GET", ""), ("DELETE", ""), ("POST", "/pause"), ("POST", "/resume")):
        theirs = await api.call(method, f"/watchers/%40ann{suffix}", BOB)
        assert theirs.status_code == 404, (method, suffix)
        unknown = await api.call(method, f"/watchers/%40nobody{suffix}", BOB)
        assert same_answer(theirs, unknown), (method, suffix)
    theirs_job = await api.call("DELETE", f"/jobs/{watch_task}", BOB)
    assert theirs_job.status_code == 404
    assert (await api.call("GET", "/watchers/%40ann", ALICE)).json()["status"] == "active"

    alice = (await api.call("GET", "/watchers", ALICE, params={"page_size": 1})).json()
    assert (alice["total"], [w["key"] for w in alice["items"]]) == (2, ["@ann"])
    page_2 = (await api.call("GET", "/watchers", ALICE, params={"page": 2, "page_size": 1})).json()
    assert [w["key"] for w in page_2["items"]] == ["@bea"]
    bob = (await api.call("GET", "/watchers", BOB)).json()
    assert (bob["total"], [(w["key"], w["owner"]) for w in bob["items"]]) == (1, [("@cid", "bob")])
    root = (await api.call("GET", "/watchers", ROOT)).json()
    assert {w["key"] for w in root["items"]} == {"@ann", "@bea", "@cid"}

    # A target is watched once per deployment: 409 for bob, which tells nothing of alice's.
    taken = await api.call("POST", "/watchers", BOB, json={"url": "@ann"})
    assert (taken.status_code, taken.json()["error_code"]) == (409, "CONFLICT")

    # An admin changes anyone's watcher.
    assert (await api.call("POST", "/watchers/%40ann/pause", ROOT)).status_code == 200
    assert (await api.call("DELETE", "/watchers/%40cid", ROOT)).status_code == 200


async def test_the_jobs_a_watcher_starts_are_its_owners(api: Api, fake_tiktok: FakeTikTok) -> None:
    await fake_tiktok.create_user("dot")
    await fake_tiktok.go_live("dot")
    await api.watch(BOB, "dot")

    async def live_job() -> str | None:
        watcher = (await api.call("GET", "/watchers/%40dot", BOB)).json()
        current: str | None = watcher.get("current_job_id")
        return current

    async def started() -> bool:
        return await live_job() is not None

    await eventually(started, timeout=30)
    job_id = await live_job()
    assert job_id is not None
    request = await (await job_store(api.bus)).request(job_id)
    assert request is not None
    assert request.owner == "bob"
    mine = await api.call("GET", f"/jobs/{job_id}", BOB)
    assert (mine.status_code, mine.json()["owner"]) == (200, "bob")
    assert (await api.call("GET", f"/jobs/{job_id}", ALICE)).status_code == 404
    assert (await api.call("DELETE", f"/jobs/{job_id}", ALICE)).status_code == 404


async def test_what_was_made_before_ownership_is_an_admins_only(api: Api) -> None:
    # A watcher registered by a gateway of the previous release: its command has no owner.
    await api.bus.publish(WatchRequested(task_id="task-old", key="@oldie", unique_id="oldie"))

    async def registered() -> bool:
        return (await api.call("GET", "/watchers/%40oldie", ROOT)).status_code == 200

    await eventually(registered, timeout=15)
    assert (await api.call("GET", "/watchers/%40oldie", ROOT)).json()["owner"] is None
    assert (await api.call("GET", "/watchers/%40oldie", ALICE)).status_code == 404
    assert (await api.call("GET", "/watchers", ALICE)).json()["total"] == 0
    assert (await api.call("GET", "/watchers", ROOT)).json()["total"] == 1

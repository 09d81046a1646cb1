"""GET /jobs through the gateway and a real indexer following KV ``jobs`` on a real
nats-server: each key's own jobs newest first, filters, cursor pages, 422s; the index catching
up after a restart (a job updated twice meanwhile) and rebuilt when INDEX_DB is lost."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.gateway.api_keys import key_id
from services.gateway.app import create_app
from services.gateway.nats_link import NatsLink
from services.gateway.settings import GatewaySettings
from services.indexer.service import IndexerService
from services.indexer.settings import IndexerSettings
from shared.bus import Bus
from shared.job_store import JobStore
from shared.jobs import Claim, JobRequest, Outcome
from shared.subjects import JOBS_BUCKET
from tests.helpers import eventually, job_store
from tlr.nats_server import NatsServer

KEY = "k-jobs"
H = {"X-API-Key": KEY}
OWNER = key_id(KEY)
OTHER_KEY = "k-jobs-other"
ADMIN = {"X-API-Key": "k-jobs-admin"}
ROOM_A = "7000000000000000001"
ROOM_B = "7000000000000000002"
T0 = datetime(2026, 3, 1, tzinfo=UTC)


class Stack:
    """A gateway on one side; on the other an indexer that can be stopped and started."""

    def __init__(self, bus: Bus, store: JobStore, tmp_path: Path, nats_url: str) -> None:
        self.bus = bus
        self.store = store
        self.indexer = IndexerSettings(
            nats_url=nats_url,
            recordings_dir=tmp_path / "recordings",
            index_db=tmp_path / "index.sqlite3",
            instance_id="indexer-1",
        )
        self.client: httpx.AsyncClient

    @asynccontextmanager
    async def indexing(self) -> AsyncIterator[None]:
        async with IndexerService(self.bus, self.indexer):
            yield

    async def get(self, headers: dict[str, str] = H, **params: Any) -> httpx.Response:
        return await self.client.get("/jobs", params=params, headers=headers)

    async def ids(self, headers: dict[str, str] = H, **params: Any) -> list[str]:
        r = await self.get(headers, **params)
        assert r.status_code == 200, r.text
        return [j["task_id"] for j in r.json()["items"]]

    async def submit(self, job_id: str, minute: int, **kw: Any) -> None:
        kw.setdefault("owner", OWNER)
        kw.setdefault("room_id", ROOM_A)
        created = T0 + timedelta(minutes=minute)
        await self.store.submit(JobRequest(job_id=job_id, created_at=created, **kw))

    async def wait_listed(self, count: int) -> None:
        async def listed() -> bool:
            r = await self.get(ADMIN, page_size=200)
            return r.status_code == 200 and len(r.json()["items"]) == count

        await eventually(listed, timeout=15)

    async def wait_ids(self, expected: list[str]) -> None:
        async def listed() -> bool:
            return await self.ids() == expected

        await eventually(listed, timeout=15)

    async def wait_status(self, job_id: str, status: str) -> None:
        async def shown() -> bool:
            r = await self.get(ADMIN, page_size=200)
            found = [j for j in r.json()["items"] if j["task_id"] == job_id]
            return bool(found) and found[0]["status"] == status

        await eventually(shown, timeout=15)


@pytest.fixture
async def stack(nats_server: NatsServer, bus: Bus, tmp_path: Path) -> AsyncIterator[Stack]:
    keys_file = tmp_path / "keys"
    keys_file.write_text(f"root {ADMIN['X-API-Key']} role=admin\n")
    gw = GatewaySettings(
        api_keys=[KEY, OTHER_KEY],
        api_keys_file=keys_file,
        nats_url=nats_server.client_url,
        rate_limit_per_min=100_000,
    )
    found = Stack(bus, await job_store(bus), tmp_path, nats_server.client_url)
    async with NatsLink(gw) as link:
        await link.wait_connected()
        transport = httpx.ASGITransport(app=create_app(gw, link=link))
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            found.client = client
            yield found


async def _record(store: JobStore, job_id: str, outcome: Outcome | None = None) -> None:
    """A recorder takes the job (the host says @Alice_Live); ``outcome`` ends it."""
    claim = Claim(recorder_id="r1", room_id=ROOM_B, title="live", unique_id="Alice_Live", attempt=1)
    await store.claim(job_id, 1, claim)
    if outcome is not None:
        await store.finish(job_id, outcome, token=1)


async def test_a_key_lists_its_own_jobs_newest_first_filtered_and_paged(stack: Stack) -> None:
    async with stack.indexing():
        await stack.submit("j-pending", 1)
        await stack.submit("j-user", 2, room_id=None, url="@Bob.Live")
        await stack.submit("j-done", 3)
        await _record(stack.store, "j-done", Outcome(state="SUCCESS"))
        await stack.submit("j-failed", 4)
        await _record(stack.store, "j-failed", Outcome(state="FAILURE", error_code="WAF_BLOCKED"))
        await stack.submit("j-cancelled", 5)
        await stack.store.request_cancel("j-cancelled")
        await stack.submit("j-watch", 6, kind="watch", watcher_key=ROOM_A)
        await stack.submit("j-other", 7, owner=key_id(OTHER_KEY))
        await stack.submit("j-unowned", 8, owner=None)
        await stack.wait_listed(8)

        mine = ["j-watch", "j-cancelled", "j-failed", "j-done", "j-user", "j-pending"]
        assert await stack.ids() == mine
        assert await stack.ids({"X-API-Key": OTHER_KEY}) == ["j-other"]
        assert await stack.ids(ADMIN) == ["j-unowned", "j-other", *mine]

        # Cursor pages: each of the key's jobs once, in order, then no cursor.
        seen: list[str] = []
        params: dict[str, Any] = {"page_size": 4}
        for _ in range(5):
            r = await stack.get(**params)
            assert r.status_code == 200
            page = r.json()
            assert page["items"]
            seen += [j["task_id"] for j in page["items"]]
            if page["next_cursor"] is None:
                break
            params["cursor"] = page["next_cursor"]
        assert seen == mine

        assert await stack.ids(status="SUCCESS") == ["j-done"]
        assert await stack.ids(status=["FAILURE", "CANCELLED"]) == ["j-cancelled", "j-failed"]
        assert await stack.ids(kind="watch") == ["j-watch"]
        assert await stack.ids(room=ROOM_B) == ["j-failed", "j-done"]  # where it recorded
        assert await stack.ids(user="@alice_live") == ["j-failed", "j-done"]
        assert await stack.ids(user="bob.live") == ["j-user"]
        since, until = (T0 + timedelta(minutes=m) for m in (2, 4))
        assert await stack.ids(since=since.isoformat(), until=until.isoformat()) == [
            "j-failed",
            "j-done",
            "j-user",
        ]
        failed = (await stack.get(status="FAILURE")).json()["items"][0]
        assert failed["error_code"] == "WAF_BLOCKED"
        assert failed["user"] == "alice_live"
        assert failed["title"] == "live"


@pytest.mark.parametrize(
    "params",
    [
        {"status": "DONE"},
        {"kind": "cron"},
        {"room": "12"},
        {"user": "not a user"},
        {"since": "yesterday"},
        {"since": "2026-03-02T00:00:00Z", "until": "2026-03-01T00:00:00Z"},
        {"cursor": "not-a-cursor"},
        {"cursor": "x" * 500},
        {"page_size": 0},
        {"page_size": 201},
    ],
)
async def test_bad_filters_are_422_with_an_error_code(stack: Stack, params: dict[str, Any]) -> None:
    r = await stack.get(**params)
    assert r.status_code == 422, r.text
    assert r.json()["error_code"] == "VALIDATION_ERROR"


async def test_no_indexer_is_a_503(stack: Stack) -> None:
    r = await stack.get()
    assert r.status_code == 503
    assert r.json()["error_code"] == "SERVICE_UNAVAILABLE"


async def test_the_index_catches_up_after_a_restart_and_is_rebuilt_when_lost(
    stack: Stack,
) -> None:
    async with stack.indexing():
        await stack.submit("j1", 1)
        await stack.submit("j2", 2)
        await stack.wait_listed(2)

    # While no indexer runs: a new job, and j1 updated twice (started, then finished).
    await stack.submit("j3", 3)
    await _record(stack.store, "j1")
    await stack.store.finish("j1", Outcome(state="SUCCESS"), token=1)
    await stack.store.withdraw("j2")  # its starting event could not be published

    async with stack.indexing():
        await stack.wait_ids(["j3", "j1"])
        await stack.wait_status("j1", "SUCCESS")

    # INDEX_DB lost: the index is read again from the stream's first message.
    for leftover in stack.indexer.index_db.parent.glob(stack.indexer.index_db.name + "*"):
        leftover.unlink()
    async with stack.indexing():
        await stack.wait_ids(["j3", "j1"])
        await stack.wait_status("j1", "SUCCESS")
        await stack.submit("j4", 4)  # and follows new jobs again
        await stack.wait_ids(["j4", "j3", "j1"])


async def test_a_recreated_jobs_stream_empties_the_index(stack: Stack) -> None:
    """The NATS store lost: KV jobs starts over at sequence 1, behind the index's position."""
    async with stack.indexing():
        for minute, job_id in enumerate(["old1", "old2", "old3"]):
            await stack.submit(job_id, minute)
        await stack.wait_ids(["old3", "old2", "old1"])

        await stack.bus.js.delete_stream(f"KV_{JOBS_BUCKET}")
        await stack.bus.provision()
        await stack.submit("new1", 9)
        await stack.wait_ids(["new1"])

"""GET /files through the gateway and a real indexer: filters, paging, totals, 422s, 503; each
key's own files, an admin's all; POST /files/rebuild for admins only."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
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
from shared.events import RecordedFile, RecordingFinished, UploadDone, UploadedFile
from shared.jobs import JobRequest
from tests.helpers import eventually, job_store
from tlr.nats_server import NatsServer

KEY = "k-files"
H = {"X-API-Key": KEY}
OWNER = key_id(KEY)  # the name an API_KEYS key owns its jobs (and so their files) by
OTHER = {"X-API-Key": "k-files-other"}  # another ordinary key
ADMIN = {"X-API-Key": "k-files-admin"}  # role=admin in API_KEYS_FILE
ROOM_A = "7000000000000000001"
ROOM_B = "7000000000000000002"
T0 = datetime(2026, 3, 1, tzinfo=UTC)


class Files:
    """The REST client and a way to put recorded files on disk and in the index."""

    def __init__(self, client: httpx.AsyncClient, bus: Bus, root: Path) -> None:
        self.client = client
        self.bus = bus
        self.root = root
        self.published = 0

    async def get(self, **params: Any) -> httpx.Response:
        return await self.client.get("/files", params=params, headers=H)

    async def record(
        self,
        job_id: str,
        room_id: str,
        hours: list[int],
        *,
        url: str | None = None,
        unique_id: str | None = None,
        owner: str | None = OWNER,
    ) -> list[str]:
        """A finished job of ``owner`` (None: a job from before ownership, whose document is
        gone) with one file per entry of ``hours`` (its mtime = T0 + hours)."""
        if owner is not None:
            store = await job_store(self.bus)
            await store.submit(JobRequest(job_id=job_id, room_id=room_id, owner=owner))
        paths = []
        for i, hour in enumerate(hours):
            rel = f"{room_id}/{job_id}_{i}.mp4"
            path = self.root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(os.urandom(1000 + i))
            stamp = (T0 + timedelta(hours=hour)).timestamp()
            os.utime(path, (stamp, stamp))
            paths.append(rel)
        await self.bus.publish(
            RecordingFinished(
                job_id=job_id,
                room_id=room_id,
                files=[
                    RecordedFile(path=p, size=(self.root / p).stat().st_size, part=i)
                    for i, p in enumerate(paths)
                ],
                url=url,
                unique_id=unique_id,
                started_at=T0,
            )
        )
        self.published += len(paths)
        return paths

    async def wait_indexed(self) -> None:
        async def all_there() -> bool:
            r = await self.client.get("/files", headers=ADMIN)
            return r.status_code == 200 and r.json()["total"] == self.published

        await eventually(all_there, timeout=15)


@pytest.fixture
async def files(nats_server: NatsServer, bus: Bus, tmp_path: Path) -> AsyncIterator[Files]:
    root = tmp_path / "recordings"
    root.mkdir()
    indexer = IndexerSettings(
        nats_url=nats_server.client_url,
        recordings_dir=root,
        index_db=tmp_path / "index.sqlite3",
        instance_id="indexer-1",
    )
    keys_file = tmp_path / "keys"
    keys_file.write_text(f"root {ADMIN['X-API-Key']} role=admin\n")
    gw = GatewaySettings(
        api_keys=[KEY, OTHER["X-API-Key"]],
        api_keys_file=keys_file,
        nats_url=nats_server.client_url,
        rate_limit_per_min=100_000,
    )
    async with IndexerService(bus, indexer), NatsLink(gw) as link:
        await link.wait_connected()
        app = create_app(gw, link=link)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            yield Files(client, bus, root)


async def test_filters_total_and_newest_first(files: Files) -> None:
    a1 = await files.record("job-a1", ROOM_A, [1, 2, 3], url="@alice", unique_id="alice")
    a2 = await files.record("job-a2", ROOM_A, [30], unique_id="alice")
    b1 = await files.record(
        "job-b1", ROOM_B, [10, 20], url="https://www.tiktok.com/@bob/live", unique_id="bob"
    )
    await files.wait_indexed()

    everything = (await files.get()).json()
    assert everything["total"] == 6
    assert [i["path"] for i in everything["items"]] == [a2[0], b1[1], b1[0], a1[2], a1[1], a1[0]]
    first = everything["items"][0]
    assert first["name"] == Path(a2[0]).name
    assert first["room_id"] == ROOM_A
    assert first["job_id"] == "job-a2"
    assert first["size"] == (files.root / a2[0]).stat().st_size
    assert first["s3"] is None
    assert datetime.fromisoformat(first["mtime"]) == T0 + timedelta(hours=30)

    by_room = (await files.get(room_id=ROOM_B)).json()
    assert by_room["total"] == 2
    assert {i["path"] for i in by_room["items"]} == set(b1)

    # A user is a user however it is written: @name, profile URL or live URL.
    for url in ("@alice", "https://www.tiktok.com/@alice", "https://www.tiktok.com/@alice/live"):
        by_user = (await files.get(url=url)).json()
        assert by_user["total"] == 4, url
        assert {i["path"] for i in by_user["items"]} == set(a1 + a2)

    window = (
        await files.get(
            **{
                "from": (T0 + timedelta(hours=2)).isoformat(),
                "to": (T0 + timedelta(hours=20)).isoformat(),
            }
        )
    ).json()
    assert {i["path"] for i in window["items"]} == {a1[1], a1[2], b1[0], b1[1]}

    # A time without an offset is UTC.
    naive = (await files.get(**{"from": "2026-03-02T05:00:00"})).json()
    assert {i["path"] for i in naive["items"]} == {a2[0]}

    both = (await files.get(room_id=ROOM_A, **{"to": (T0 + timedelta(hours=2)).isoformat()})).json()
    assert {i["path"] for i in both["items"]} == {a1[0], a1[1]}


async def test_paging_is_stable_without_duplicates_or_gaps(files: Files) -> None:
    # Several files share an mtime: the order must still be total.
    await files.record("job-1", ROOM_A, [1, 1, 1, 2, 2, 3, 4])
    await files.record("job-2", ROOM_B, [1, 2, 2, 5, 5, 5])
    await files.wait_indexed()
    whole = [i["path"] for i in (await files.get(page_size=500)).json()["items"]]
    assert len(whole) == 13

    for size in (1, 2, 5):
        seen: list[str] = []
        page = 1
        while True:
            body = (await files.get(page=page, page_size=size)).json()
            assert body["total"] == 13
            assert body["page"] == page
            assert body["page_size"] == size
            if not body["items"]:
                break
            seen += [i["path"] for i in body["items"]]
            page += 1
        assert seen == whole, size


async def test_upload_shows_in_the_listing(files: Files) -> None:
    (path,) = await files.record("job-up", ROOM_A, [1])
    await files.wait_indexed()
    size = (files.root / path).stat().st_size
    await files.bus.publish(
        UploadDone(
            job_id="job-up",
            files=[UploadedFile(path=path, bucket="rec", key=f"p/{path}", size=size, etag="e")],
        )
    )

    async def uploaded() -> bool:
        item = (await files.get()).json()["items"][0]
        return item["s3"] == {"bucket": "rec", "key": f"p/{path}"}

    await eventually(uploaded, timeout=15)


async def test_a_key_lists_its_own_files_and_an_admin_all(files: Files) -> None:
    mine = await files.record("job-mine", ROOM_A, [1, 2], unique_id="alice")
    theirs = await files.record(
        "job-theirs", ROOM_A, [3], unique_id="alice", owner=key_id(OTHER["X-API-Key"])
    )
    old = await files.record("job-old", ROOM_B, [4], owner=None)  # from before ownership
    await files.wait_indexed()

    own = (await files.get(page_size=500)).json()
    assert own["total"] == 2
    assert [i["path"] for i in own["items"]] == [mine[1], mine[0]]
    assert {i["owner"] for i in own["items"]} == {OWNER}  # the job's owner, into the index
    # Filters and paging count the key's own files only.
    assert (await files.get(room_id=ROOM_A)).json()["total"] == 2
    assert (await files.get(url="@alice", page_size=1)).json()["total"] == 2
    assert (await files.get(room_id=ROOM_A, page=2, page_size=2)).json()["items"] == []
    # Another key's job id matches nothing, exactly as an unknown one.
    theirs_asked = (await files.get(job_id="job-theirs")).json()
    assert theirs_asked == (await files.get(job_id="job-nothing")).json()
    assert theirs_asked["total"] == 0

    other = (await files.client.get("/files", headers=OTHER)).json()
    assert [i["path"] for i in other["items"]] == theirs

    everything = (await files.client.get("/files", headers=ADMIN, params={"page_size": 10})).json()
    assert everything["total"] == 4
    by_path = {i["path"]: i["owner"] for i in everything["items"]}
    assert by_path[old[0]] is None  # an admin's only
    assert by_path[theirs[0]] == key_id(OTHER["X-API-Key"])


async def test_only_an_admin_may_rebuild_the_index(files: Files) -> None:
    r = await files.client.post("/files/rebuild", headers=H)
    assert r.status_code == 403
    assert r.json()["error_code"] == "FORBIDDEN"
    (path,) = await files.record("job-r", ROOM_A, [1])
    await files.wait_indexed()
    r = await files.client.post("/files/rebuild", headers=ADMIN)
    assert r.status_code == 200, r.text
    assert r.json()["scanned"] == 1
    # A rebuild keeps what the events said, the owner too.
    (item,) = (await files.get()).json()["items"]
    assert (item["path"], item["owner"]) == (path, OWNER)


@pytest.mark.parametrize(
    "params",
    [
        {"from": "yesterday"},
        {"to": "2026-13-01T00:00:00"},
        {"from": "2026-03-02T00:00:00Z", "to": "2026-03-01T00:00:00Z"},
        {"page": 0},
        {"page": "two"},
        {"page_size": 0},
        {"page_size": 501},
        {"room_id": "12; DROP TABLE files"},
        {"url": "https://evil.example.com/@alice"},
        {"job_id": "../../etc"},
    ],
)
async def test_bad_parameters_are_422_with_error_code(files: Files, params: dict[str, Any]) -> None:
    r = await files.get(**params)
    assert r.status_code == 422, r.text
    body = r.json()
    assert body["error_code"] == "VALIDATION_ERROR"
    assert body["correlation_id"]


async def test_503_when_no_indexer_answers(nats_server: NatsServer) -> None:
    gw = GatewaySettings(
        api_keys=[KEY], nats_url=nats_server.client_url, rate_limit_per_min=100_000
    )
    async with NatsLink(gw) as link:
        await link.wait_connected()
        transport = httpx.ASGITransport(app=create_app(gw, link=link))
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            r = await client.get("/files", headers=H)
    assert r.status_code == 503
    assert r.json()["error_code"] == "SERVICE_UNAVAILABLE"

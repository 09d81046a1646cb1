"""From POST /recordings with upload_s3 to the object store and GET /files: all five parts.

Gateway, recorder, uploader and indexer on one real nats-server, a real S3 server (moto), real
ffmpeg, and the fake TikTok.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from services.gateway.app import create_app
from services.gateway.nats_link import NatsLink
from services.gateway.settings import GatewaySettings
from services.indexer.service import IndexerService
from services.indexer.settings import IndexerSettings
from services.recorder.service import RecorderService
from services.recorder.settings import RecorderSettings
from services.uploader.service import UploaderService
from services.uploader.settings import UploaderSettings
from shared.bus import Bus
from shared.events import UploadDone
from shared.subjects import EVENTS_STREAM, subject_for
from tests.helpers import JobsApi, eventually
from tests.s3_server import S3Server
from tlr.fake_tiktok import FakeTikTok
from tlr.nats_server import NatsServer

KEY = "k-files-flow"
BUCKET = "recordings"
FAKE_TIKTOK_OPTIONS = {"speed": 4.0}


class Stack(JobsApi):
    def __init__(
        self, client: httpx.AsyncClient, fake: FakeTikTok, root: Path, s3: S3Server, bus: Bus
    ) -> None:
        super().__init__(client, KEY)
        self.fake = fake
        self.root = root
        self.s3 = s3
        self.bus = bus


@pytest.fixture
async def stack(
    nats_server: NatsServer,
    bus: Bus,
    fake_tiktok: FakeTikTok,
    s3_server: S3Server,
    tmp_path: Path,
) -> AsyncIterator[Stack]:
    root = tmp_path / "recordings"
    common = {"nats_url": nats_server.client_url, "recordings_dir": root}
    gw = GatewaySettings(
        api_keys=[KEY], nats_url=nats_server.client_url, rate_limit_per_min=100_000
    )
    rec = RecorderSettings(
        **common,
        instance_id="rec-1",
        tiktok_web_base=fake_tiktok.base_url,
        tiktok_webcast_base=fake_tiktok.base_url,
        read_timeout=2.0,
        **fake_tiktok.egress_settings,
    )
    up = UploaderSettings(
        **common, instance_id="up-1", s3_bucket=BUCKET, s3_endpoint_url=s3_server.endpoint_url
    )
    idx = IndexerSettings(**common, instance_id="idx-1", index_db=tmp_path / "index.sqlite3")
    async with (
        NatsLink(gw) as link,
        RecorderService(bus, rec),
        UploaderService(bus, up),
        IndexerService(bus, idx),
    ):
        await link.wait_connected()
        transport = httpx.ASGITransport(app=create_app(gw, link=link))
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            yield Stack(client, fake_tiktok, root, s3_server, bus)


async def upload_done_count(bus: Bus) -> int:
    info = await bus.js.stream_info(EVENTS_STREAM, subjects_filter=subject_for(UploadDone))
    return sum((info.state.subjects or {}).values())


async def test_recording_with_upload_lands_in_s3_and_in_the_index(stack: Stack) -> None:
    await stack.fake.create_user("erin")
    live = await stack.fake.go_live("erin", title="upload me")
    task_id = await stack.record(url="@erin", duration=4, options={"upload_s3": True})
    await stack.wait(task_id, "SUCCESS")

    async def uploaded() -> bool:
        return bool((await stack.job(task_id))["result"]["s3"])

    await eventually(uploaded, timeout=30)
    job = await stack.job(task_id)
    assert job["upload"]["state"] == "SUCCESS"
    files = job["result"]["files"]
    assert [o["key"] for o in job["result"]["s3"]] == files  # keys mirror the local paths
    assert {o["bucket"] for o in job["result"]["s3"]} == {BUCKET}

    async with stack.s3.client() as s3:
        for rel in files:
            local = (stack.root / rel).read_bytes()
            obj = await s3.get_object(Bucket=BUCKET, Key=rel)
            async with obj["Body"] as body:
                remote = await body.read()
            assert len(remote) == len(local)
            assert hashlib.sha256(remote).digest() == hashlib.sha256(local).digest()
    assert await upload_done_count(stack.bus) == 1

    async def listed() -> bool:
        r = await stack.client.get("/files", params={"url": "@erin"}, headers=stack.headers)
        items = r.json()["items"]
        return len(items) == len(files) and all(i["s3"] for i in items)

    await eventually(listed, timeout=15)
    r = await stack.client.get("/files", params={"room_id": live.room_id}, headers=stack.headers)
    body = r.json()
    assert body["total"] == len(files)
    assert {i["path"] for i in body["items"]} == set(files)
    assert all(i["job_id"] == task_id and i["local"] for i in body["items"])

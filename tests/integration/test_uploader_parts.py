"""Multipart uploads via a store failing some UploadPart calls: parts retried, uploads resumed."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from services.uploader.service import UploaderService
from services.uploader.settings import UploaderSettings
from shared.bus import Bus
from shared.config import MIB
from shared.errors import ErrorCode
from tests.integration.test_uploader import (
    download_sha256,
    finished,
    make_file,
    sha256_of,
    wait_upload,
)
from tests.s3_fault_proxy import S3FaultProxy
from tests.s3_server import S3Server
from tlr.nats_server import NatsServer

if TYPE_CHECKING:
    pass

PART = 5 * MIB  # S3's smallest part


@pytest.fixture
async def proxy(s3_server: S3Server) -> AsyncIterator[S3FaultProxy]:
    async with S3FaultProxy(s3_server.endpoint_url) as running:
        yield running


def settings(
    nats_server: NatsServer, proxy: S3FaultProxy, root: Path, bucket: str
) -> UploaderSettings:
    return UploaderSettings(
        nats_url=nats_server.client_url,
        instance_id="up-1",
        recordings_dir=root,
        s3_bucket=bucket,
        s3_endpoint_url=proxy.endpoint_url,
        s3_multipart_threshold=PART,
        s3_part_size=PART,
        s3_attempts=1,  # a failed part must be retried on its own, not through a new upload
    )


async def test_failed_parts_are_retried_on_their_own(
    bus: Bus,
    nats_server: NatsServer,
    s3_server: S3Server,
    proxy: S3FaultProxy,
    tmp_path: Path,
    uid: str,
) -> None:
    root, bucket = tmp_path / "rec", f"rec-{uid}"
    recorded = make_file(root, "7001/big.mp4", 3 * PART + 1000)  # 4 parts
    proxy.reset(fail=lambda n: n % 3 == 0)  # every 3rd UploadPart answers 500
    async with (
        s3_server.client() as s3,
        UploaderService(bus, settings(nats_server, proxy, root, bucket)),
    ):
        await bus.publish(finished("p1", recorded))
        doc = await wait_upload(bus, "p1", "SUCCESS", timeout=60)
        [uploaded] = doc.files
        assert uploaded.etag is not None
        assert uploaded.etag.endswith("-4")
        assert await download_sha256(s3, bucket, uploaded.key) == sha256_of(root / recorded.path)
        assert (await s3.list_multipart_uploads(Bucket=bucket)).get("Uploads", []) == []
    assert proxy.failed >= 1
    # Each part reached the store once: nothing was sent again from byte 0.
    assert proxy.part_bytes == recorded.size
    assert doc.attempt == 1  # within the first delivery


async def test_an_interrupted_upload_resumes_where_it_stopped(
    bus: Bus,
    nats_server: NatsServer,
    s3_server: S3Server,
    proxy: S3FaultProxy,
    tmp_path: Path,
    uid: str,
) -> None:
    root, bucket = tmp_path / "rec", f"rec-{uid}"
    recorded = make_file(root, "7001/long.mp4", 4 * PART + 1000)  # 5 parts
    proxy.reset(fail=lambda n: n > 2)  # the store goes away after two parts
    async with (
        s3_server.client() as s3,
        UploaderService(bus, settings(nats_server, proxy, root, bucket)),
    ):
        await bus.publish(finished("p2", recorded))
        await wait_upload(bus, "p2", "RETRY", code=ErrorCode.S3_UNAVAILABLE, timeout=60)
        assert proxy.part_bytes == 2 * PART
        [pending] = (await s3.list_multipart_uploads(Bucket=bucket)).get("Uploads", [])
        assert pending.get("Key") == recorded.path  # kept for the next delivery

        proxy.reset()  # the store is back; count what the next delivery sends
        doc = await wait_upload(bus, "p2", "SUCCESS", timeout=60)
        [uploaded] = doc.files
        assert await download_sha256(s3, bucket, uploaded.key) == sha256_of(root / recorded.path)
        assert (await s3.list_multipart_uploads(Bucket=bucket)).get("Uploads", []) == []
    assert doc.attempt > 1
    assert proxy.part_bytes == recorded.size - 2 * PART  # the first two parts were not resent

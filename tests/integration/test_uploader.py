"""The uploader against a real nats-server and a real S3-compatible server (moto, by HTTP)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

import nats.js.errors
import pytest

from services.uploader.service import UploaderService
from services.uploader.settings import UploaderSettings
from shared import jobs
from shared.bus import Bus
from shared.config import MIB
from shared.errors import ErrorCode
from shared.events import (
    Event,
    FileDeleted,
    RecordedFile,
    RecordingFinished,
    UploadDone,
    decode,
)
from shared.subjects import EVENTS_STREAM, JOBS_BUCKET, UPLOADER, subject_for
from tests.helpers import eventually, job_store
from tests.s3_server import S3Server
from tlr.nats_server import NatsServer

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client

OUTAGE = 20.0  # seconds the S3 server is down in the outage test


def settings_for(
    nats_server: NatsServer, s3: S3Server, root: Path, bucket: str | None, **extra: object
) -> UploaderSettings:
    return UploaderSettings(
        nats_url=nats_server.client_url,
        instance_id=str(extra.pop("instance_id", "up-1")),
        recordings_dir=root,
        s3_bucket=bucket,
        s3_endpoint_url=s3.endpoint_url,
        **extra,  # type: ignore[arg-type]
    )


@pytest.fixture
def root(tmp_path: Path) -> Path:
    path = tmp_path / "recordings"
    path.mkdir()
    return path


@pytest.fixture
def bucket(uid: str) -> str:
    return f"rec-{uid}"


@pytest.fixture
async def s3(s3_server: S3Server) -> AsyncIterator[S3Client]:
    async with s3_server.client() as client:
        yield client


def make_file(root: Path, relative: str, size: int) -> RecordedFile:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(os.urandom(size))
    return RecordedFile(path=relative, size=size)


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def finished(job_id: str, *files: RecordedFile, upload: bool = True) -> RecordingFinished:
    return RecordingFinished(
        event_id=f"fin:{job_id}",
        correlation_id=f"corr-{job_id}",
        job_id=job_id,
        room_id="7001",
        files=list(files),
        upload_s3=upload,
    )


async def download_sha256(s3: S3Client, bucket: str, key: str) -> str:
    obj = await s3.get_object(Bucket=bucket, Key=key)
    async with obj["Body"] as body:
        return hashlib.sha256(await body.read()).hexdigest()


async def wait_upload(
    bus: Bus, job_id: str, *states: str, code: str | None = None, timeout: float = 20
) -> jobs.UploadPart:
    store = await job_store(bus)

    async def reached() -> bool:
        found = await store.upload(job_id)
        return (
            found is not None
            and found.state in states
            and (code is None or found.error_code == code)
        )

    await eventually(reached, timeout=timeout, interval=0.1)
    found = await store.upload(job_id)
    assert found is not None
    return found


async def events_on(bus: Bus, event_type: type[Event]) -> list[Event]:
    """Every event of ``event_type`` stored in the EVENTS stream, oldest first."""
    subject = subject_for(event_type)
    out: list[Event] = []
    seq = 1
    while True:
        try:
            msg = await bus.js.get_msg(EVENTS_STREAM, seq, subject=subject, next=True)
        except nats.js.errors.NotFoundError:
            return out
        out.append(decode(msg.data or b""))
        assert msg.seq is not None
        seq = msg.seq + 1


async def wait_settled(bus: Bus, seq: int, timeout: float = 20) -> None:
    """Wait until the uploader durable acked (or terminated) the message at stream ``seq``."""

    async def settled() -> bool:
        info = await bus.js.consumer_info(EVENTS_STREAM, UPLOADER.name)
        return info.ack_floor is not None and (info.ack_floor.stream_seq or 0) >= seq

    await eventually(settled, timeout=timeout, interval=0.1)


async def versions(s3: S3Client, bucket: str) -> dict[str, int]:
    """How many versions of each key the bucket holds."""
    listed = await s3.list_object_versions(Bucket=bucket)
    counts: dict[str, int] = {}
    for version in listed.get("Versions", []):
        counts[version["Key"]] = counts.get(version["Key"], 0) + 1
    return counts


async def versioned_bucket(s3: S3Client, bucket: str) -> None:
    """Versioning on: a second upload of a key would leave a second version behind."""
    with contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou):
        await s3.create_bucket(Bucket=bucket)
    await s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})


async def test_uploads_every_file_verified_and_announces_once(
    bus: Bus, nats_server: NatsServer, s3_server: S3Server, s3: S3Client, root: Path, bucket: str
) -> None:
    files = [
        make_file(root, "7001/2025/01/02/a.mp4", 300_000),
        make_file(root, "7001/2025/01/02/b.mp4", 1),
        make_file(root, "7001/2025/01/02/c.mp4", 0),
    ]
    settings = settings_for(nats_server, s3_server, root, bucket, s3_prefix="archive/")
    async with UploaderService(bus, settings):
        await bus.publish(finished("j1", *files))
        doc = await wait_upload(bus, "j1", "SUCCESS")

        async def announced() -> bool:
            return len(await events_on(bus, UploadDone)) >= 1

        await eventually(announced)

    assert [f.key for f in doc.files] == [f"archive/{f.path}" for f in files]
    assert {f.bucket for f in doc.files} == {bucket}
    assert doc.bytes_done == doc.bytes_total == sum(f.size for f in files)
    assert doc.uploader_id == "up-1"
    for recorded, uploaded in zip(files, doc.files, strict=True):
        head = await s3.head_object(Bucket=bucket, Key=uploaded.key)
        assert head["ContentLength"] == recorded.size
        assert head["ETag"].strip('"') == uploaded.etag
        assert await download_sha256(s3, bucket, uploaded.key) == sha256_of(root / recorded.path)
        assert (root / recorded.path).exists()
        assert not uploaded.local_deleted
    done = await events_on(bus, UploadDone)
    assert len(done) == 1
    assert isinstance(done[0], UploadDone)
    assert done[0].event_id == "up:j1"
    assert done[0].correlation_id == "corr-j1"
    assert done[0].files == doc.files
    assert await events_on(bus, FileDeleted) == []


async def test_s3_outage_keeps_job_queued_then_uploads_once(
    bus: Bus, nats_server: NatsServer, s3_server: S3Server, s3: S3Client, root: Path, bucket: str
) -> None:
    recorded = make_file(root, "7001/live.mp4", 500_000)
    local_sha = sha256_of(root / recorded.path)
    loop = asyncio.get_running_loop()
    await s3_server.stop()
    went_down = loop.time()
    async with UploaderService(bus, settings_for(nats_server, s3_server, root, bucket)):
        await bus.publish(finished("j2", recorded))
        doc = await wait_upload(bus, "j2", "RETRY", code=ErrorCode.S3_UNAVAILABLE)
        assert (root / recorded.path).exists()
        assert doc.error_message
        assert "testing-secret-key" not in doc.error_message
        assert "testing-key-id" not in doc.error_message

        # The outage itself: the store stays down this long whatever the uploader does.
        await asyncio.sleep(max(0.0, went_down + OUTAGE - loop.time()))
        assert (root / recorded.path).exists()
        await s3_server.start()

        doc = await wait_upload(bus, "j2", "SUCCESS", timeout=45)
        assert doc.attempt > 1  # redelivered by JetStream all along, never dropped
        [uploaded] = doc.files
        assert await download_sha256(s3, bucket, uploaded.key) == local_sha
        assert sha256_of(root / recorded.path) == local_sha

        # The same job again (a new event id gets past JetStream's dedupe): no second upload.
        await versioned_bucket(s3, bucket)
        again = await bus.publish(
            RecordingFinished(
                job_id="j2", correlation_id="corr-j2", files=[recorded], upload_s3=True
            )
        )
        await wait_settled(bus, again.seq)
    assert await versions(s3, bucket) == {uploaded.key: 1}
    listed = await s3.list_object_versions(Bucket=bucket)
    assert [v["VersionId"] for v in listed.get("Versions", [])] == ["null"]  # from before
    assert len(await events_on(bus, UploadDone)) == 1


async def test_large_file_uploads_in_parts(
    bus: Bus, nats_server: NatsServer, s3_server: S3Server, s3: S3Client, root: Path, bucket: str
) -> None:
    recorded = make_file(root, "7001/big.mp4", 12 * MIB)
    settings = settings_for(
        nats_server,
        s3_server,
        root,
        bucket,
        s3_multipart_threshold=5 * MIB,
        s3_part_size=5 * MIB,
    )
    async with UploaderService(bus, settings):
        await bus.publish(finished("j3", recorded))
        doc = await wait_upload(bus, "j3", "SUCCESS", timeout=40)
    [uploaded] = doc.files
    assert uploaded.etag is not None
    assert uploaded.etag.endswith("-3")
    head = await s3.head_object(Bucket=bucket, Key=uploaded.key)
    assert head["ETag"].strip('"') == uploaded.etag
    assert head["ContentLength"] == 12 * MIB
    assert await download_sha256(s3, bucket, uploaded.key) == sha256_of(root / recorded.path)
    no_leftovers = await s3.list_multipart_uploads(Bucket=bucket)
    assert no_leftovers.get("Uploads", []) == []


async def test_job_without_upload_is_acked_and_nothing_uploaded(
    bus: Bus, nats_server: NatsServer, s3_server: S3Server, s3: S3Client, root: Path, bucket: str
) -> None:
    recorded = make_file(root, "7001/keep.mp4", 1000)
    async with UploaderService(bus, settings_for(nats_server, s3_server, root, bucket)):
        ack = await bus.publish(finished("j4", recorded, upload=False))
        await wait_settled(bus, ack.seq)
    listed = await s3.list_buckets()
    assert [b["Name"] for b in listed.get("Buckets", [])] == []
    assert await events_on(bus, UploadDone) == []
    assert await (await job_store(bus)).upload("j4") is None
    assert (root / recorded.path).exists()


async def test_delete_local_only_once_uploaded(
    bus: Bus, nats_server: NatsServer, s3_server: S3Server, s3: S3Client, root: Path, bucket: str
) -> None:
    recorded = make_file(root, "7001/gone.mp4", 200_000)
    local_sha = sha256_of(root / recorded.path)
    settings = settings_for(nats_server, s3_server, root, bucket, delete_local_after_upload=True)
    await s3_server.stop()
    async with UploaderService(bus, settings):
        await bus.publish(finished("j5", recorded))
        await wait_upload(bus, "j5", "RETRY", code=ErrorCode.S3_UNAVAILABLE)
        assert sha256_of(root / recorded.path) == local_sha  # not uploaded: kept
        await s3_server.start()
        doc = await wait_upload(bus, "j5", "SUCCESS", timeout=30)

        async def announced() -> bool:
            return len(await events_on(bus, UploadDone)) == 1

        await eventually(announced)
    assert not (root / recorded.path).exists()
    [uploaded] = doc.files
    assert uploaded.local_deleted
    assert await download_sha256(s3, bucket, uploaded.key) == local_sha
    [deleted] = await events_on(bus, FileDeleted)
    assert isinstance(deleted, FileDeleted)
    assert (deleted.path, deleted.reason, deleted.job_id) == (recorded.path, "uploaded", "j5")
    assert deleted.size == recorded.size
    [done] = await events_on(bus, UploadDone)
    assert isinstance(done, UploadDone)
    assert done.files[0].local_deleted


async def test_unset_bucket_keeps_jobs_waiting(
    bus: Bus, nats_server: NatsServer, s3_server: S3Server, root: Path
) -> None:
    recorded = make_file(root, "7001/wait.mp4", 1000)
    local_sha = sha256_of(root / recorded.path)
    async with UploaderService(bus, settings_for(nats_server, s3_server, root, None)):
        await bus.publish(finished("j6", recorded))
        doc = await wait_upload(bus, "j6", "RETRY", code=ErrorCode.S3_NOT_CONFIGURED)
    assert doc.error_message
    assert sha256_of(root / recorded.path) == local_sha
    assert await events_on(bus, UploadDone) == []
    info = await bus.js.consumer_info(EVENTS_STREAM, UPLOADER.name)
    assert (info.ack_floor.stream_seq if info.ack_floor else 0) == 0  # still queued


async def test_two_uploaders_upload_each_object_once(
    bus: Bus, nats_server: NatsServer, s3_server: S3Server, s3: S3Client, root: Path, bucket: str
) -> None:
    await versioned_bucket(s3, bucket)
    job_ids = [f"m{i}" for i in range(8)]
    files = {
        job_id: [make_file(root, f"{job_id}/part{n}.mp4", 50_000 + n) for n in range(2)]
        for job_id in job_ids
    }
    second = await Bus.connect([nats_server.client_url], service="uploader-2")
    assert second is not None
    try:
        async with (
            UploaderService(bus, settings_for(nats_server, s3_server, root, bucket)),
            UploaderService(
                second,
                settings_for(
                    nats_server, s3_server, root, bucket, instance_id="up-2", upload_concurrency=2
                ),
            ),
        ):
            for job_id in job_ids:
                await bus.publish(finished(job_id, *files[job_id]))
            docs = [await wait_upload(bus, job_id, "SUCCESS", timeout=30) for job_id in job_ids]
    finally:
        await second.close()
    expected = {f.path: 1 for fs in files.values() for f in fs}
    assert await versions(s3, bucket) == expected
    assert {d.uploader_id for d in docs} <= {"up-1", "up-2"}
    done = await events_on(bus, UploadDone)
    assert sorted(e.job_id for e in done if isinstance(e, UploadDone)) == sorted(job_ids)


async def test_redelivery_after_lost_status_skips_stored_files(
    bus: Bus, nats_server: NatsServer, s3_server: S3Server, s3: S3Client, root: Path, bucket: str
) -> None:
    """A crash after the uploads but before SUCCESS: HEAD finds each object and skips it."""
    kept = make_file(root, "7001/kept.mp4", 100_000)
    removed = make_file(root, "7001/removed.mp4", 120_000)
    settings = settings_for(nats_server, s3_server, root, bucket)
    async with UploaderService(bus, settings):
        await bus.publish(finished("j8", kept, removed))
        await wait_upload(bus, "j8", "SUCCESS")
        await versioned_bucket(s3, bucket)
        kv = await bus.kv(JOBS_BUCKET)
        await kv.purge(jobs.upload_key("j8"))
        (root / removed.path).unlink()  # e.g. retention: only the bucket has it now
        again = await bus.publish(
            RecordingFinished(
                job_id="j8", correlation_id="corr-j8", files=[kept, removed], upload_s3=True
            )
        )
        await wait_settled(bus, again.seq)
        doc = await wait_upload(bus, "j8", "SUCCESS")
    assert await versions(s3, bucket) == {kept.path: 1, removed.path: 1}
    assert [f.path for f in doc.files] == [kept.path, removed.path]
    assert [f.size for f in doc.files] == [kept.size, removed.size]


async def test_missing_file_fails_the_job_and_releases_the_rest(
    bus: Bus, nats_server: NatsServer, s3_server: S3Server, s3: S3Client, root: Path, bucket: str
) -> None:
    """One missing file fails the job, but the uploaded ones are released, not pinned."""
    present = make_file(root, "7001/here.mp4", 10_000)
    absent = RecordedFile(path="7001/never-written.mp4", size=10_000)
    settings = settings_for(nats_server, s3_server, root, bucket, delete_local_after_upload=True)
    async with UploaderService(bus, settings):
        ack = await bus.publish(finished("j9", present, absent))
        doc = await wait_upload(bus, "j9", "FAILURE")
        await wait_settled(bus, ack.seq)  # terminated, not redelivered forever
    assert doc.error_code == ErrorCode.FILE_MISSING
    assert doc.error_message is not None
    assert absent.path in doc.error_message
    assert [(f.path, f.local_deleted) for f in doc.files] == [(present.path, True)]
    assert await versions(s3, bucket) == {present.path: 1}
    assert not (root / present.path).exists()  # safe in the bucket: released
    [deleted] = await events_on(bus, FileDeleted)
    assert isinstance(deleted, FileDeleted)
    assert (deleted.path, deleted.reason, deleted.job_id) == (present.path, "uploaded", "j9")
    # upload.done names the partial set, so the index learns where those files are.
    [done] = await events_on(bus, UploadDone)
    assert isinstance(done, UploadDone)
    assert done.files == doc.files


async def test_path_outside_recordings_dir_is_refused(
    bus: Bus, nats_server: NatsServer, s3_server: S3Server, s3: S3Client, root: Path, bucket: str
) -> None:
    (root.parent / "secret.txt").write_text("not a recording")
    async with UploaderService(bus, settings_for(nats_server, s3_server, root, bucket)):
        await bus.publish(finished("j10", RecordedFile(path="../secret.txt", size=15)))
        doc = await wait_upload(bus, "j10", "FAILURE")
    assert doc.error_code == ErrorCode.VALIDATION_ERROR
    assert [b["Name"] for b in (await s3.list_buckets()).get("Buckets", [])] == []


async def test_bucket_recreated_when_the_store_loses_it(
    bus: Bus, nats_server: NatsServer, s3_server: S3Server, s3: S3Client, root: Path, bucket: str
) -> None:
    first = make_file(root, "7001/first.mp4", 20_000)
    second = make_file(root, "7001/second.mp4", 30_000)
    async with UploaderService(bus, settings_for(nats_server, s3_server, root, bucket)):
        await bus.publish(finished("j11", first))
        await wait_upload(bus, "j11", "SUCCESS")
        await s3_server.stop()
        await s3_server.start()  # moto keeps nothing: the bucket is gone
        await bus.publish(finished("j12", second))
        doc = await wait_upload(bus, "j12", "SUCCESS")
    assert await download_sha256(s3, bucket, doc.files[0].key) == sha256_of(root / second.path)

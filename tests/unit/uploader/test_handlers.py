"""The uploader's decisions on recording.finished, over the real job store and in-memory fakes."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest

from services.uploader.files import OPERATOR_DELAY
from services.uploader.handlers import BUSY_DELAY, UploaderDeps, on_recording_finished
from services.uploader.settings import UploaderSettings
from shared.consumer import Delivery
from shared.errors import ErrorCode, PermanentError, RetryLater
from shared.events import FileDeleted, RecordedFile, RecordingFinished, UploadDone, UploadedFile
from shared.job_store import JobStore
from shared.jobs import UploadPart
from shared.lease import Holder
from tests.fakes.documents import MemoryDocuments
from tests.fakes.leases import MemoryLeases
from tests.fakes.object_store import MemoryObjectStore
from tests.fakes.publisher import MemoryPublisher

ROOM = "7503448765740976902"
JOB = "job1"
LEASE = f"upload.{JOB}"


@dataclass
class World:
    """One uploader process with its fakes; ``deps`` is built from them as they are now."""

    root: Path
    jobs: JobStore = field(default_factory=lambda: JobStore(MemoryDocuments()))
    leases: MemoryLeases = field(default_factory=MemoryLeases)
    publisher: MemoryPublisher = field(default_factory=MemoryPublisher)
    bucket: MemoryObjectStore | None = field(default_factory=MemoryObjectStore)

    @property
    def deps(self) -> UploaderDeps:
        return UploaderDeps(
            uploader_id="up-a",
            settings=UploaderSettings(recordings_dir=self.root, s3_bucket="recordings"),
            jobs=self.jobs,
            leases=self.leases,
            store=self.bucket,  # type: ignore[arg-type]  # the in-memory store
            publisher=self.publisher,
        )

    def file(self, relative: str, data: bytes) -> RecordedFile:
        path = self.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return RecordedFile(path=relative, size=len(data))

    async def run(self, files: list[RecordedFile], attempt: int = 1) -> None:
        event = RecordingFinished(job_id=JOB, room_id=ROOM, files=files, upload_s3=True)
        await on_recording_finished(event, delivery(attempt), self.deps)

    async def upload(self) -> UploadPart:
        doc = await self.jobs.upload(JOB)
        assert doc is not None
        return doc

    def done(self) -> list[UploadDone]:
        return [e for e in self.publisher.events if isinstance(e, UploadDone)]

    @property
    def uploads(self) -> list[str]:
        assert self.bucket is not None
        return self.bucket.uploads


@pytest.fixture
def world(tmp_path: Path) -> World:
    root = tmp_path / "recordings"
    root.mkdir()
    return World(root=root)


async def _no_progress() -> None:
    return None


def delivery(attempt: int = 1) -> Delivery:
    return Delivery("recording.finished", attempt, attempt, _no_progress)


async def test_an_upload_puts_every_file_and_announces_them(world: World) -> None:
    a, b = b"first" * 100, b"second" * 50
    files = [world.file(f"{ROOM}/a.mp4", a), world.file(f"{ROOM}/b.mp4", b)]
    await world.run(files)

    doc = await world.upload()
    assert (doc.state, doc.uploader_id, doc.error_code) == ("SUCCESS", "up-a", None)
    assert doc.bytes_done == doc.bytes_total == len(a) + len(b)
    expected = [
        (f"{ROOM}/a.mp4", f"{ROOM}/a.mp4", len(a), hashlib.md5(a).hexdigest()),
        (f"{ROOM}/b.mp4", f"{ROOM}/b.mp4", len(b), hashlib.md5(b).hexdigest()),
    ]
    assert [(f.path, f.key, f.size, f.etag) for f in doc.files] == expected
    assert world.bucket is not None
    assert world.bucket.objects == {f"{ROOM}/a.mp4": a, f"{ROOM}/b.mp4": b}
    [done] = world.done()
    assert done.files == doc.files
    assert (world.root / ROOM / "a.mp4").exists()  # DELETE_LOCAL_AFTER_UPLOAD is off
    assert world.leases.held == {}


async def test_an_upload_already_done_is_announced_again_and_nothing_uploaded(
    world: World,
) -> None:
    stored = UploadedFile(path=f"{ROOM}/a.mp4", bucket="recordings", key=f"{ROOM}/a.mp4", size=3)
    await world.jobs.upload_ended(JOB, 1, "SUCCESS", uploader_id="up-x", attempt=1, files=[stored])
    await world.run([world.file(f"{ROOM}/a.mp4", b"abc")], attempt=2)

    assert world.uploads == []
    [done] = world.done()
    assert done.files == [stored]
    doc = await world.upload()
    assert (doc.state, doc.uploader_id) == ("SUCCESS", "up-x")  # unchanged
    assert world.leases.held == {}


async def test_without_s3_the_job_waits_queued(world: World) -> None:
    world.bucket = None
    with pytest.raises(RetryLater) as retry:
        await world.run([world.file(f"{ROOM}/a.mp4", b"abc")])
    assert retry.value.delay == OPERATOR_DELAY
    doc = await world.upload()
    assert (doc.state, doc.error_code) == ("RETRY", ErrorCode.S3_NOT_CONFIGURED)
    assert world.done() == []
    assert world.leases.held == {}  # released for whichever uploader has S3


async def test_a_job_uploaded_by_another_uploader_waits_and_writes_nothing(world: World) -> None:
    theirs = await world.leases.acquire(LEASE, Holder("up-x", JOB))
    with pytest.raises(RetryLater) as retry:
        await world.run([world.file(f"{ROOM}/a.mp4", b"abc")])
    assert retry.value.delay == BUSY_DELAY
    assert await world.jobs.upload(JOB) is None
    assert world.uploads == []
    assert world.done() == []
    assert world.leases.held == {LEASE: theirs}


@pytest.mark.parametrize("how", ["dot-dot", "absolute", "symlink"])
async def test_a_file_outside_recordings_dir_fails_the_job(
    world: World, tmp_path: Path, how: str
) -> None:
    outside = tmp_path / "secret.mp4"
    outside.write_bytes(b"not yours")
    if how == "dot-dot":
        path = "../secret.mp4"
    elif how == "absolute":
        path = str(outside)
    else:
        (world.root / "link.mp4").symlink_to(outside)
        path = "link.mp4"
    with pytest.raises(PermanentError):
        await world.run([RecordedFile(path=path, size=9)])
    doc = await world.upload()
    assert (doc.state, doc.error_code) == ("FAILURE", ErrorCode.VALIDATION_ERROR)
    assert doc.error_message is not None
    assert "RECORDINGS_DIR" in doc.error_message
    assert world.uploads == []
    assert world.done() == []
    assert world.leases.held == {}


async def test_a_job_that_asks_no_upload_is_left_alone(world: World) -> None:
    event = RecordingFinished(job_id=JOB, files=[world.file(f"{ROOM}/a.mp4", b"abc")])
    await on_recording_finished(event, delivery(), world.deps)
    assert await world.jobs.upload(JOB) is None
    assert world.uploads == []
    assert world.publisher.events == []


async def test_a_missing_file_fails_the_job_but_releases_the_uploaded_ones(world: World) -> None:
    world_deleting = world
    here = world.file(f"{ROOM}/here.mp4", b"kept safe")
    absent = RecordedFile(path=f"{ROOM}/never.mp4", size=5)
    deps = world_deleting.deps
    settings = deps.settings.model_copy(update={"delete_local_after_upload": True})
    event = RecordingFinished(job_id=JOB, room_id=ROOM, files=[here, absent], upload_s3=True)
    with pytest.raises(PermanentError):
        await on_recording_finished(event, delivery(), replace(deps, settings=settings))

    doc = await world.upload()
    assert (doc.state, doc.error_code) == ("FAILURE", ErrorCode.FILE_MISSING)
    assert doc.error_message is not None
    assert absent.path in doc.error_message
    assert [(f.path, f.local_deleted) for f in doc.files] == [(here.path, True)]
    assert not (world.root / here.path).exists()
    events = world_deleting.publisher.events
    assert [(e.path, e.reason) for e in events if isinstance(e, FileDeleted)] == [
        (here.path, "uploaded")
    ]
    [done] = world_deleting.done()
    assert done.files == doc.files
    assert world.leases.held == {}


async def test_under_sse_kms_a_stored_file_is_recognised_by_size_not_uploaded_again(
    world: World,
) -> None:
    world.bucket = MemoryObjectStore(sse_kms=True)
    files = [world.file(f"{ROOM}/a.mp4", b"encrypted at rest")]
    await world.run(files)
    assert (await world.upload()).state == "SUCCESS"
    await world.jobs.docs.delete(f"job.{JOB}.up")  # a crash before SUCCESS was written

    await world.run(files, attempt=2)
    assert (await world.upload()).state == "SUCCESS"
    assert world.uploads == [f"{ROOM}/a.mp4"]  # once: the opaque ETag did not force a re-upload

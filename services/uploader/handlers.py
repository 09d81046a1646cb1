"""What the uploader does with one recording.finished: every file to S3, verified, exactly once.

Plain async functions over a frozen deps object of small Protocols: no NATS here. The flow:
upload asked? -> already SUCCESS (republish upload.done)? -> take the job's upload lease ->
S3 configured? -> resolve paths -> per file: HEAD (skip what the store already holds) or
upload, with retries -> remove the local copies if asked -> SUCCESS in ``job.<id>.up`` ->
``upload.done``. Every write to the job carries the lease's token: an uploader that froze
past its lease cannot overwrite what its successor wrote.

A job never gets lost to an outage: transient failures leave it queued in JetStream (RETRY,
nak with a growing delay). Only a job that cannot succeed fails (FAILURE, term): a file that
escapes RECORDINGS_DIR, or one missing locally that the bucket does not hold either. Such a
job fails as a whole (no upload.done), but its other files are still uploaded and kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import NoReturn, Protocol

import aiohttp
import botocore.exceptions
import structlog

from services.uploader import metrics
from services.uploader.s3 import (
    BucketMissing,
    IntegrityError,
    ObjectStore,
    error_code,
    is_transient,
    object_key,
)
from services.uploader.settings import UploaderSettings
from shared.consumer import Delivery, retry_delay
from shared.errors import ErrorCode, NotMine, PermanentError, RetryLater
from shared.events import (
    DeleteReason,
    Event,
    FileDeleted,
    RecordedFile,
    RecordingFinished,
    UploadDone,
    UploadedFile,
)
from shared.job_store import JobFinished, JobStore, StaleHolder
from shared.jobs import UpState
from shared.lease import Holder, Keeper, Leases
from shared.logging import get_logger, redact_text

log = get_logger(__name__)


# Redelivery delays after an outage: 1, 2, 4 ... s, capped so a job resumes soon after the
# store is back. A refusal or a missing configuration needs a person: check once a minute.
RETRY_BASE = 1.0
RETRY_CAP = 20.0
OPERATOR_DELAY = 60.0
# Within one delivery, the pause before the 2nd, 3rd ... try of a file: 0.5, 1, 2 ... s.
ATTEMPT_BACKOFF = 0.5
BUSY_DELAY = 5.0

# What the object store (or the way to it) may raise; anything else is a bug or a local fault.
S3_FAILURES = (
    botocore.exceptions.BotoCoreError,
    botocore.exceptions.ClientError,
    IntegrityError,
    BucketMissing,
    aiohttp.ClientError,
    asyncio.TimeoutError,
)


class Publisher(Protocol):
    async def publish(self, event: Event) -> object: ...


@dataclass(frozen=True)
class UploaderDeps:
    """Everything the uploader's handlers use, built once in ``service.py``."""

    uploader_id: str
    settings: UploaderSettings
    jobs: JobStore
    leases: Leases
    store: ObjectStore | None  # None while S3_BUCKET is unset
    publisher: Publisher
    clock: Callable[[], float] = time.monotonic
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    active: set[str] = field(default_factory=set)


@dataclass(frozen=True)
class Held:
    """The job's upload lease, held by this process while it uploads."""

    token: int
    keeper: Keeper
    attempt: int  # JetStream's delivery count


@dataclass(frozen=True)
class Planned:
    """A file of the job: where it is on disk and where it goes."""

    recorded: RecordedFile
    path: Path
    relative: str  # normalized, posix, under RECORDINGS_DIR
    key: str


class _Deferred(Exception):
    """The store cannot take the job now: RETRY, and the job goes back to the queue."""

    def __init__(self, code: str, message: str, delay: float | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.delay = delay  # None: the growing outage backoff


class _Missing(Exception):
    """A file is neither on disk nor in the bucket."""


async def on_recording_finished(
    event: RecordingFinished, delivery: Delivery, deps: UploaderDeps
) -> None:
    """Upload the job's files; returning acks, RetryLater requeues, PermanentError fails it,
    NotMine leaves it to the newer uploader that took it over."""
    if not event.upload_s3:
        return
    with structlog.contextvars.bound_contextvars(job_id=event.job_id):
        await _handle(event, delivery, deps)


async def _handle(event: RecordingFinished, delivery: Delivery, deps: UploaderDeps) -> None:
    job_id = event.job_id
    found = await deps.jobs.upload(job_id)
    if found is not None and found.state == "SUCCESS":
        # A redelivery: the files are safe already. upload.done again, with the same
        # event_id, in case the first publish was lost (JetStream drops the duplicate).
        log.info("uploader.already_done", files=len(found.files))
        await _announce(deps, event, found.files)
        return
    if not event.files:
        log.info("uploader.nothing_to_upload")
        return
    lease = await deps.leases.acquire(f"upload.{job_id}", Holder(deps.uploader_id, job_id))
    if lease is None:
        holder = await deps.leases.holder(f"upload.{job_id}")
        msg = f"job {job_id} is being uploaded by {holder.owner if holder else '?'}"
        raise RetryLater(msg, delay=BUSY_DELAY)
    try:
        async with Keeper(lease, clock=deps.clock) as keeper:
            await _held(event, delivery, deps, Held(lease.token, keeper, delivery.num_delivered))
    except StaleHolder as exc:
        # Frozen past the lease: a newer uploader has the job (and its message). Hands off.
        log.warning("uploader.stale_holder", error=str(exc))
        raise NotMine(str(exc)) from exc
    except JobFinished as exc:
        log.info("uploader.finished_elsewhere", error=str(exc))
    finally:
        await lease.release()


async def _held(
    event: RecordingFinished, delivery: Delivery, deps: UploaderDeps, held: Held
) -> None:
    if deps.store is None:
        msg = "S3_BUCKET is not set: the job waits, queued, until an uploader has one"
        code = ErrorCode.S3_NOT_CONFIGURED
        await _defer(deps, event, delivery, held, code, msg, OPERATOR_DELAY)
    try:
        planned = await asyncio.to_thread(plan, deps.settings, event.files)
    except ValueError as exc:
        await _fail(deps, event, held, ErrorCode.VALIDATION_ERROR, str(exc), [])
    deps.active.add(event.job_id)
    metrics.ACTIVE.inc()
    try:
        await _upload_job(event, delivery, deps, held, deps.store, planned)
    finally:
        deps.active.discard(event.job_id)
        metrics.ACTIVE.dec()


def plan(settings: UploaderSettings, files: list[RecordedFile]) -> list[Planned]:
    """Each file's absolute path and key (blocking: it resolves symlinks).

    Raises:
        ValueError: a path is absolute, empty, or leads outside RECORDINGS_DIR.
    """
    root = settings.recordings_dir.resolve()
    out = []
    for f in files:
        rel = PurePosixPath(f.path)
        if not f.path or rel.is_absolute() or ".." in rel.parts or rel == PurePosixPath("."):
            msg = f"path {f.path!r} is not a file under RECORDINGS_DIR"
            raise ValueError(msg)
        path = (root / rel).resolve()
        if not path.is_relative_to(root) or path == root:
            msg = f"path {f.path!r} leads outside RECORDINGS_DIR"
            raise ValueError(msg)
        relative = rel.as_posix()
        out.append(Planned(f, root / rel, relative, object_key(settings.s3_prefix, relative)))
    return out


@dataclass(frozen=True)
class Stored:
    """A file the bucket is confirmed to hold."""

    planned: Planned
    size: int
    etag: str
    on_disk: bool  # False when only the bucket still has it


async def _upload_job(
    event: RecordingFinished,
    delivery: Delivery,
    deps: UploaderDeps,
    held: Held,
    store: ObjectStore,
    planned: list[Planned],
) -> None:
    sizes = await asyncio.to_thread(lambda: [_size_of(p.path) for p in planned])
    # A file already gone from disk counts with its recorded size (it may be in the bucket).
    total = sum(p.recorded.size if s is None else s for p, s in zip(planned, sizes, strict=True))

    await deps.jobs.upload_started(
        event.job_id,
        held.token,
        uploader_id=deps.uploader_id,
        attempt=delivery.num_delivered,
        bytes_total=total,
    )
    log.info("uploader.started", files=len(planned), bytes=total, attempt=delivery.num_delivered)
    progress = _Progress(deps.jobs, event.job_id, held.token)
    stored: list[Stored] = []
    missing: list[str] = []
    try:
        for p in planned:
            if held.keeper.lost.is_set():
                msg = f"the upload lease of job {event.job_id} was lost"
                raise StaleHolder(msg)
            try:
                stored.append(await _sync_file(deps, store, p, progress))
            except _Missing:
                missing.append(p.recorded.path)
            progress.commit()
    except _Deferred as exc:
        await _defer(deps, event, delivery, held, exc.code, str(exc), exc.delay)
    except (StaleHolder, JobFinished):
        raise
    except Exception as exc:
        # A local fault or a bug: say so in the job; the consume loop retries with backoff.
        await _set_state(deps, event, held, "RETRY", ErrorCode.INTERNAL, _describe(exc))
        raise

    if missing:
        metrics.FILES.labels("missing").inc(len(missing))
        msg = (
            f"{len(missing)} file(s) missing locally and absent from bucket {store.bucket}: "
            f"{', '.join(missing)}. The job's upload failed as a whole; its other "
            f"{len(stored)} file(s) are in the bucket and kept locally."
        )
        files = [_entry(store, s) for s in stored]
        await _fail(deps, event, held, ErrorCode.FILE_MISSING, msg, files)

    uploaded = [await _release_local(deps, event, store, s) for s in stored]

    await deps.jobs.upload_ended(
        event.job_id,
        held.token,
        "SUCCESS",
        uploader_id=deps.uploader_id,
        attempt=held.attempt,
        files=uploaded,
    )
    metrics.JOBS.labels("success").inc()
    log.info("uploader.job_done", files=len(uploaded), bucket=store.bucket)
    await _announce(deps, event, uploaded)


async def _sync_file(
    deps: UploaderDeps, store: ObjectStore, p: Planned, progress: _Progress
) -> Stored:
    """Make sure the bucket holds ``p``: S3_ATTEMPTS tries, exponential backoff between them.

    Raises:
        _Deferred: the store is unreachable (after the last try) or refuses the upload.
        _Missing: the file is neither on disk nor in the bucket.
    """
    attempts = deps.settings.s3_attempts
    started = time.perf_counter()
    for attempt in range(1, attempts + 1):
        progress.rewind()
        try:
            result = await _try_file(store, p, progress)
        except S3_FAILURES as exc:
            if isinstance(exc, botocore.exceptions.ClientError) and (
                error_code(exc) == "NoSuchBucket"
            ):
                store.forget_bucket()  # e.g. a restarted store: create it on the next try
            if not is_transient(exc):
                metrics.FILES.labels("failed").inc()
                raise _Deferred(ErrorCode.S3_ERROR, _describe(exc), OPERATOR_DELAY) from exc
            if attempt == attempts:
                metrics.FILES.labels("failed").inc()
                raise _Deferred(ErrorCode.S3_UNAVAILABLE, _describe(exc)) from exc
            kind = "integrity" if isinstance(exc, IntegrityError) else "transient"
            metrics.RETRIES.labels(kind).inc()
            pause = ATTEMPT_BACKOFF * 2 ** (attempt - 1)
            log.warning(
                "uploader.retry", path=p.relative, attempt=attempt, in_s=pause, error=_describe(exc)
            )
            if await _pause(deps, pause):
                msg = f"shutting down during retries: {_describe(exc)}"
                raise _Deferred(ErrorCode.S3_UNAVAILABLE, msg, 0) from exc
        else:
            metrics.FILE_SECONDS.observe(time.perf_counter() - started)
            return result
    raise AssertionError  # unreachable: the last try returns or raises


async def _try_file(store: ObjectStore, p: Planned, progress: _Progress) -> Stored:
    await store.ensure_bucket()
    size = await asyncio.to_thread(_size_of, p.path)
    remote = await store.head(p.key)
    if size is None:
        # Gone from disk: fine if the bucket has it (we uploaded it, removed it and stopped
        # before recording SUCCESS); nothing can bring it back otherwise.
        if remote is not None and remote.size == p.recorded.size:
            metrics.FILES.labels("already_present").inc()
            log.info("uploader.missing_but_stored", path=p.relative, key=p.key)
            await progress.add(remote.size)
            return Stored(p, remote.size, remote.etag, on_disk=False)
        log.error("uploader.file_missing", path=p.relative, key=p.key)
        raise _Missing(p.relative)
    # A redelivery must not upload twice: same size and same ETag means the same bytes.
    if remote is not None and remote.size == size:
        expected = await store.expected_etag(p.path, size)
        if remote.etag == expected:
            metrics.FILES.labels("already_present").inc()
            log.info("uploader.already_present", path=p.relative, key=p.key)
            await progress.add(size)
            return Stored(p, size, expected, on_disk=True)
    etag = await store.upload(p.path, p.key, size, progress.add)
    metrics.FILES.labels("uploaded").inc()
    metrics.BYTES.inc(size)
    log.info(
        "uploader.uploaded",
        path=p.relative,
        key=p.key,
        size=size,
        etag=etag,
        multipart=store.is_multipart(size),
    )
    return Stored(p, size, etag, on_disk=True)


async def _release_local(
    deps: UploaderDeps, event: RecordingFinished, store: ObjectStore, s: Stored
) -> UploadedFile:
    """Remove the confirmed file from disk when DELETE_LOCAL_AFTER_UPLOAD says so."""
    if not deps.settings.delete_local_after_upload:
        return _entry(store, s)
    path = s.planned.path
    if s.on_disk:
        current = await asyncio.to_thread(_size_of, path)
        if current != s.size:
            # Rewritten since it was verified: what is on disk is not what the bucket holds.
            log.warning("uploader.local_changed_kept", path=s.planned.relative, size=current)
            return _entry(store, s)
        await asyncio.to_thread(path.unlink, missing_ok=True)
        log.info("uploader.local_deleted", path=s.planned.relative)
    # Also when it was already gone (removed by an earlier delivery that then stopped):
    # the event id is deterministic, so JetStream drops a repeat.
    await deps.publisher.publish(
        FileDeleted(
            event_id=f"del:{s.planned.recorded.path}",
            correlation_id=event.correlation_id,
            path=s.planned.recorded.path,
            reason=DeleteReason.UPLOADED,
            job_id=event.job_id,
            room_id=event.room_id,
            size=s.size,
        )
    )
    return _entry(store, s, local_deleted=True)


def _entry(store: ObjectStore, s: Stored, *, local_deleted: bool = False) -> UploadedFile:
    return UploadedFile(
        path=s.planned.recorded.path,
        bucket=store.bucket,
        key=s.planned.key,
        size=s.size,
        etag=s.etag,
        local_deleted=local_deleted,
    )


class _Progress:
    """``bytes_done`` of ``job.<id>.up``, written after each part or file."""

    def __init__(self, jobs: JobStore, job_id: str, token: int) -> None:
        self.jobs = jobs
        self.job_id = job_id
        self.token = token
        self.committed = 0  # bytes of the files finished so far
        self.done = 0

    def rewind(self) -> None:
        """A file starts (again): its bytes count from zero."""
        self.done = self.committed

    def commit(self) -> None:
        self.committed = self.done

    async def add(self, n: int) -> None:
        self.done += n
        await self.jobs.upload_progress(self.job_id, self.token, self.done)


async def _set_state(
    deps: UploaderDeps,
    event: RecordingFinished,
    held: Held,
    state: UpState,
    code: str,
    message: str,
    files: list[UploadedFile] | None = None,
) -> None:
    await deps.jobs.upload_ended(
        event.job_id,
        held.token,
        state,
        uploader_id=deps.uploader_id,
        attempt=held.attempt,
        files=files,
        error=(code, message),
    )


async def _defer(
    deps: UploaderDeps,
    event: RecordingFinished,
    delivery: Delivery,
    held: Held,
    code: str,
    message: str,
    delay: float | None,
) -> NoReturn:
    """RETRY in the job, and back to the queue: never dropped for a transient failure."""
    if delay is None:
        delay = retry_delay(delivery.num_delivered, base=RETRY_BASE, cap=RETRY_CAP)
    await _set_state(deps, event, held, "RETRY", code, message)
    metrics.DEFERRED.labels(code).inc()
    log.warning("uploader.deferred", error_code=code, error=message, retry_in=delay)
    msg = f"{code}: {message}"
    raise RetryLater(msg, delay)


async def _fail(
    deps: UploaderDeps,
    event: RecordingFinished,
    held: Held,
    code: str,
    message: str,
    files: list[UploadedFile],
) -> NoReturn:
    """FAILURE in the job, and the message is terminated: retrying cannot help."""
    await _set_state(deps, event, held, "FAILURE", code, message, files)
    metrics.JOBS.labels("failure").inc()
    log.error("uploader.job_failed", error_code=code, error=message)
    msg = f"{code}: {message}"
    raise PermanentError(msg)


async def _announce(
    deps: UploaderDeps, event: RecordingFinished, files: list[UploadedFile]
) -> None:
    await deps.publisher.publish(
        UploadDone(
            event_id=f"up:{event.job_id}",
            correlation_id=event.correlation_id,
            job_id=event.job_id,
            files=files,
        )
    )


async def _pause(deps: UploaderDeps, seconds: float) -> bool:
    """Sleep ``seconds`` unless the service stops first; True when it is stopping."""
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(deps.stopping.wait(), seconds)
    return deps.stopping.is_set()


def _size_of(path: Path) -> int | None:
    """Size of the regular file at ``path``; None when there is none (blocking)."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_size if stat.S_ISREG(st.st_mode) else None


def _describe(exc: BaseException) -> str:
    # Error texts name endpoints and keys, never credentials; URLs are redacted anyway.
    return redact_text(f"{type(exc).__name__}: {exc}")[:500]

"""What the uploader does with one recording.finished: every file to S3, verified, exactly once.

Plain async functions over a frozen deps object of small Protocols: no NATS here. The flow:
upload asked? -> already SUCCESS (republish upload.done)? -> take the job's upload lease ->
S3 configured? -> resolve paths -> per file: HEAD (skip what the store already holds) or
upload, with retries -> remove the local copies if asked -> SUCCESS in ``job.<id>.up`` ->
``upload.done``. Every write to the job carries the lease's token: an uploader that froze
past its lease cannot overwrite what its successor wrote. The per-file work is in files.py.

A job never gets lost to an outage: transient failures leave it queued in JetStream (RETRY,
nak with a growing delay). Only a job that cannot succeed fails (FAILURE, term): a file that
escapes RECORDINGS_DIR, or one missing locally that the bucket does not hold either. Such a
job ends FAILURE FILE_MISSING naming the missing files, but its other files are uploaded and
released like a success's (removed locally if asked, file.deleted), listed in ``job.<id>.up``
and announced by an upload.done that names only them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NoReturn, Protocol

import structlog

from services.uploader import metrics
from services.uploader.files import (
    OPERATOR_DELAY,
    Deferred,
    Missing,
    Objects,
    Planned,
    Progress,
    Stored,
    describe,
    plan,
    size_of,
    sync_file,
)
from services.uploader.settings import UploaderSettings
from services.uploader.thumbnails import upload_thumbnail
from shared.consumer import Delivery, retry_delay
from shared.errors import ErrorCode, NotMine, PermanentError, RetryLater
from shared.events import (
    DeleteReason,
    Event,
    FileDeleted,
    RecordingFinished,
    UploadDone,
    UploadedFile,
)
from shared.job_store import JobFinished, JobStore, StaleHolder
from shared.jobs import UpState
from shared.lease import Holder, Keeper, Leases
from shared.logging import get_logger
from shared.thumbnails import Thumbnails

log = get_logger(__name__)


# Redelivery delays after an outage: up to 1, 2, 4 ... s (jittered), capped so a job resumes
# soon after the store is back (a refusal or a missing configuration waits OPERATOR_DELAY).
RETRY_BASE = 1.0
RETRY_CAP = 20.0
BUSY_DELAY = 5.0


class Publisher(Protocol):
    async def publish(self, event: Event) -> object: ...


@dataclass(frozen=True)
class UploaderDeps:
    """Everything the uploader's handlers use, built once in ``service.py``."""

    uploader_id: str
    settings: UploaderSettings
    jobs: JobStore
    leases: Leases
    store: Objects | None  # None while S3_BUCKET is unset
    publisher: Publisher
    thumbnails: Thumbnails | None = None  # None: no ffmpeg, no thumbnails
    clock: Callable[[], float] = time.monotonic
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    active: set[str] = field(default_factory=set)


@dataclass(frozen=True)
class Held:
    """The job's upload lease, held by this process while it uploads."""

    token: int
    keeper: Keeper
    attempt: int  # JetStream's delivery count


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


async def _upload_job(
    event: RecordingFinished,
    delivery: Delivery,
    deps: UploaderDeps,
    held: Held,
    store: Objects,
    planned: list[Planned],
) -> None:
    sizes = await asyncio.to_thread(lambda: [size_of(p.path) for p in planned])
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
    progress = Progress(deps.jobs, event.job_id, held.token)
    stored: list[Stored] = []
    missing: list[str] = []
    try:
        for p in planned:
            if held.keeper.lost.is_set():
                msg = f"the upload lease of job {event.job_id} was lost"
                raise StaleHolder(msg)
            try:
                stored.append(
                    await sync_file(
                        store,
                        p,
                        progress,
                        attempts=deps.settings.s3_attempts,
                        stopping=deps.stopping,
                    )
                )
            except Missing:
                missing.append(p.recorded.path)
            progress.commit()
    except Deferred as exc:
        await _defer(deps, event, delivery, held, exc.code, str(exc), exc.delay)
    except (StaleHolder, JobFinished):
        raise
    except Exception as exc:
        # A local fault or a bug: say so in the job; the consume loop retries with backoff.
        await _set_state(deps, event, held, "RETRY", ErrorCode.INTERNAL, describe(exc))
        raise

    # Each file's thumbnail goes beside it, before the local file may be removed.
    if deps.thumbnails is not None:
        for s in stored:
            await upload_thumbnail(store, deps.thumbnails, s)

    # What is confirmed in the bucket is released even when another file is missing: a job
    # that can never succeed must not pin its uploaded files on disk for ever.
    uploaded = [await _release_local(deps, event, store, s) for s in stored]

    if missing:
        metrics.FILES.labels("missing").inc(len(missing))
        kept = "removed locally" if deps.settings.delete_local_after_upload else "kept locally"
        msg = (
            f"{len(missing)} file(s) missing locally and absent from bucket {store.bucket}: "
            f"{', '.join(missing)}. The job's upload failed; its other "
            f"{len(uploaded)} file(s) are in the bucket ({kept})."
        )
        # upload.done for the partial set: it is how the index learns where those files are
        # (else they stay "waiting for upload", out of retention's reach). Sent before the
        # FAILURE, which has no re-announce path: a crash in between redelivers, and the
        # repeat is deduplicated by its event id.
        await _announce(deps, event, uploaded)
        await _fail(deps, event, held, ErrorCode.FILE_MISSING, msg, uploaded)

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


async def _release_local(
    deps: UploaderDeps, event: RecordingFinished, store: Objects, s: Stored
) -> UploadedFile:
    """Remove the confirmed file from disk when DELETE_LOCAL_AFTER_UPLOAD says so."""
    if not deps.settings.delete_local_after_upload:
        return _entry(store, s)
    path = s.planned.path
    if s.on_disk:
        current = await asyncio.to_thread(size_of, path)
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


def _entry(store: Objects, s: Stored, *, local_deleted: bool = False) -> UploadedFile:
    return UploadedFile(
        path=s.planned.recorded.path,
        bucket=store.bucket,
        key=s.planned.key,
        size=s.size,
        etag=s.etag,
        local_deleted=local_deleted,
    )


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

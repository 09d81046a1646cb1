"""How a recording job ends: its segments joined if asked, its terminal state written once,
and recording.finished."""

from __future__ import annotations

import dataclasses

from services.recorder import metrics
from services.recorder.deps import RecorderDeps, Work
from services.recorder.join import join_budget
from shared.errors import ErrorCode, RetryLater
from shared.events import RecordedFile, RecordingFinished, RoomLive, utc_now
from shared.job_store import NO_TOKEN
from shared.jobs import TERMINAL, Outcome, SegmentEntry, Totals
from shared.logging import get_logger, redact_text
from shared.tiktok import TikTokError

log = get_logger(__name__)

MAX_RETRIES = 5
# TikTok answers 4003110 both for 18+ lives without a login and for throttled clients, so an
# AGE_RESTRICTED answer is retried briefly before the job fails with it.
AGE_RETRIES = 3


async def finish(
    deps: RecorderDeps,
    event: Work,
    outcome: Outcome,
    totals: Totals | None = None,
    token: int = 0,
) -> None:
    """Write the terminal state and publish recording.finished (its id is per job, so a
    redelivery that finds the job finished publishes a duplicate JetStream drops). With
    ``options.join`` the lease holder (``token``) joins the job's segments first."""
    if event.options.join and token != NO_TOKEN:
        outcome = await joined(deps, event, outcome, token)
    doc, first = await deps.store.finish(event.job_id, outcome, totals, token)
    if first:
        metrics.count_finished(doc.state, doc.error_code)
    await deps.publisher.publish(
        RecordingFinished(
            event_id=f"fin:{event.job_id}",
            correlation_id=event.correlation_id,
            job_id=event.job_id,
            room_id=doc.room_id,
            returncode=doc.returncode or 0,
            files=[
                RecordedFile(
                    path=s.path,
                    size=s.size,
                    duration_s=s.duration_s,
                    part=s.part,
                    remuxed=s.state == "final",
                    joined_from=s.joined_from,
                )
                for s in doc.segments
            ],
            error_code=doc.error_code,
            error_message=doc.error_message,
            started_at=doc.started_at,
            ended_at=doc.ended_at or utc_now(),
            watcher_key=event.watcher_key if isinstance(event, RoomLive) else None,
            upload_s3=event.options.upload_s3,
            url=event.url,
            unique_id=doc.unique_id or (event.unique_id if isinstance(event, RoomLive) else None),
            title=doc.title,
        )
    )
    started, ended = doc.started_at, doc.ended_at
    log.info(
        "recorder.finished",
        state=doc.state,
        returncode=doc.returncode,
        error_code=doc.error_code,
        room_id=doc.room_id,
        duration=round((ended - started).total_seconds(), 1) if started and ended else None,
        bytes=doc.bytes,
        files=len(doc.segments),
    )


async def joined(deps: RecorderDeps, event: Work, outcome: Outcome, token: int) -> Outcome:
    """``outcome`` with the files joined from the job's segments (``options.join``), listed
    next to them; without the segments they hold when ``keep_segments`` is false (dropped
    from the job, then deleted). Nothing is joined twice: a job that is finished, or lists a
    joined file already, is left as it is."""
    doc = await deps.store.recording(event.job_id)
    if doc is not None and (doc.state in TERMINAL or any(s.joined_from for s in doc.segments)):
        return outcome
    # The job's files as this holder knows them: its own may not all have reached the job.
    mine = {_stem(f.path): f for f in outcome.files}
    listed = [s for s in doc.segments if _stem(s.path) not in mine] if doc else []
    segments = [*listed, *mine.values()]
    if len(segments) < 2:
        return outcome
    # The session has ended: the stuck-job watchdog gives the join its time.
    deps.endings.extend(event.job_id, join_budget(segments))
    made = await deps.media.join(segments, event.options.format)
    if not made:
        return outcome
    files = [*outcome.files, *made]
    if not event.options.keep_segments:
        files = await _drop_joined(deps, event.job_id, token, segments, made, files)
    return dataclasses.replace(outcome, files=tuple(files))


async def _drop_joined(
    deps: RecorderDeps,
    job_id: str,
    token: int,
    segments: list[SegmentEntry],
    made: list[SegmentEntry],
    files: list[SegmentEntry],
) -> list[SegmentEntry]:
    """The segments held by a joined file leave the job, then the disk: the joined files are
    listed first, so the job never lists less than what is on disk."""
    held = {part for entry in made for part in entry.joined_from}
    gone = [s.path for s in segments if s.part in held]
    for entry in made:
        await deps.store.segment_finalised(job_id, token, entry)
    for path in gone:
        await deps.store.segment_dropped(job_id, token, path)
    await deps.media.remove(gone)
    return [f for f in files if f.path not in gone]


def _stem(path: str) -> str:
    return path.rsplit(".", 1)[0]


async def fail_or_retry(
    deps: RecorderDeps,
    event: Work,
    exc: TikTokError,
    room_id: str | None = None,
    token: int = 0,
) -> None:
    """Retryable TikTok trouble (WAF, timeouts) is retried a few times, then the job fails.

    The budget counts failures since the job last recorded (kept in the job), not deliveries:
    hand-overs and waits for a lease do not use it up."""
    if exc.retryable or exc.code == ErrorCode.AGE_RESTRICTED:
        failures = await deps.store.retrying(event.job_id, str(exc.code), str(exc))
        budget = MAX_RETRIES if exc.retryable else AGE_RETRIES
        if failures < budget:
            raise RetryLater(str(exc), delay=min(60.0, 2.0**failures))
    outcome = Outcome("FAILURE", str(exc.code), str(exc), room_id)
    await finish(deps, event, outcome, token=token)


async def failed_unexpectedly(deps: RecorderDeps, event: Work, exc: Exception) -> None:
    """A bug or a local fault: counted like any failure; once the budget is spent the job
    fails INTERNAL instead of being retried for ever. The job shows the exception's type
    only: its text (which may quote whatever a peer sent) goes to the log."""
    log.warning(
        "recorder.failed_unexpectedly",
        job_id=event.job_id,
        error=redact_text(f"{type(exc).__name__}: {exc}")[:500],
    )
    message = f"internal error ({type(exc).__name__}); the recorder's log has the details"
    failures = await deps.store.retrying(event.job_id, ErrorCode.INTERNAL, message)
    if failures >= MAX_RETRIES:
        await finish(deps, event, Outcome("FAILURE", ErrorCode.INTERNAL, message))
        return
    raise exc

"""A recording by the holder of a room's lease: take over what a dead holder left, claim the
job, run the session with every write fenced by the lease's token, then say how it ended.

The lease is kept by a ``Keeper``; when it is lost or in doubt (NATS away, this process
frozen past its TTL) the session stops, and no file is opened once the lease is not fresh.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from datetime import datetime
from pathlib import Path

from services.recorder import metrics
from services.recorder.deps import Job, RecorderDeps, Work
from services.recorder.egress_route import Route, report_failure
from services.recorder.media import SessionPlan
from services.recorder.outcome import fail_or_retry, finish
from services.recorder.session_types import Progress, RecordedSegment, SessionResult, StreamLookup
from services.recorder.startup import Slot
from shared.bus import TRANSIENT
from shared.consumer import Delivery
from shared.egress import StreamPolicy
from shared.errors import ErrorCode, RetryLater
from shared.events import RecordingStarted
from shared.job_store import Refused
from shared.jobs import Claim, Outcome, RecordingPart, SegmentEntry, Totals
from shared.lease import HeldLease, Holder, Keeper
from shared.logging import get_logger
from shared.naming import render
from shared.tiktok import (
    RoomInfo,
    StreamCandidate,
    StreamHostNotAllowed,
    TikTokError,
    stream_candidates,
)
from shared.tiktok.client import TikTokClient
from shared.tiktok.guards import SESSION_REFUSALS, Refusals, stream_refusal

log = get_logger(__name__)

# A full disk: the next try after this long (space may come back; another host may have it).
DISK_FULL_RETRY = 10.0
# How often a recording writes its progress (bytes, bitrate) to its job document.
PROGRESS_EVERY = 10.0
# Cancels arrive at once through the service's KV watch; this re-read (every 5th lease
# renewal, ~15 s) only covers a signal lost while NATS reconnected.
CANCEL_RECHECK = 5


class LeaseNotFresh(Exception):
    """The lease may have lapsed: no new file is opened."""


async def record(
    deps: RecorderDeps,
    event: Work,
    delivery: Delivery,
    client: TikTokClient,
    route: Route,
    room_id: str,
    unique_id: str | None,
    lease: HeldLease,
    slot: Slot | None = None,
) -> None:
    """Record ``event``'s job through ``client`` (made for ``route``) while holding ``lease``;
    ``slot``, its start-up slot, is given back once the session runs. Raises Refused
    (StaleHolder or JobFinished) when the store says the job is no longer this holder's to
    write."""
    job_id = event.job_id
    job = Job(job_id)
    beats = [0]
    claimed: list[Claim] = []

    async def recheck_cancel() -> None:
        beats[0] += 1
        if beats[0] % CANCEL_RECHECK == 0:
            request = await deps.store.request(job_id)
            if request is not None and request.desired == "cancel":
                job.halt("cancelled")

    async def retake() -> HeldLease | None:
        # The lease lapsed while NATS was away (an election, a blip, a freeze): take it again
        # if no one else did, rather than hand the live over.
        return await deps.leases.acquire(lease.name, Holder(deps.recorder_id, job_id))

    async def reclaim(new: HeldLease) -> None:
        if claimed:  # the job moves to the new token; before the first claim, nothing to do
            await deps.store.claim(job_id, new.token, claimed[0])

    # A recording does not step down when renewals merely fail: its writes are fenced, so it
    # records on through an outage and stops only if another holder took the lease.
    keeper = Keeper(
        lease,
        clock=deps.clock,
        every=deps.renew_every,
        on_renewed=recheck_cancel,
        retake=retake,
        on_retaken=reclaim,
        doubt_steps_down=False,
    )
    async with keeper:
        token = keeper.lease.token
        prior = await take_over(deps, job_id, token, event.options.format)
        had_files = bool(prior and prior.segments)
        recorded_s = sum(s.duration_s or 0 for s in prior.segments) if prior else 0.0
        if event.duration is not None and recorded_s >= event.duration - 0.5:
            await finish(deps, event, Outcome("SUCCESS", room_id=room_id), token=token)
            return
        try:
            info = await client.confirm_live(room_id, unique_id)
        except TikTokError as exc:
            await report_failure(deps, route, event, exc)
            if had_files and exc.code == ErrorCode.LIVE_OFFLINE:
                # The live ended while the job changed hands: what was recorded is the result.
                await finish(deps, event, Outcome("SUCCESS", room_id=room_id), token=token)
                return
            await fail_or_retry(deps, event, exc, room_id, token)
            return

        engine = event.options.engine or deps.settings.recorder_engine
        claim = Claim(
            deps.recorder_id,
            room_id,
            info.title,
            info.unique_id,
            delivery.num_delivered,
            engine=engine,
            engine_commit=deps.engine_commits.get(engine),
            egress=route.egress,
        )
        claimed.append(claim)
        await deps.store.claim(job_id, keeper.lease.token, claim)
        await deps.publisher.publish(
            RecordingStarted(
                event_id=f"start:{job_id}:{delivery.num_delivered}",
                correlation_id=event.correlation_id,
                job_id=job_id,
                room_id=room_id,
                recorder_id=deps.recorder_id,
                part=next_part(prior),
            )
        )
        log.info("recorder.started", job_id=job_id, room_id=room_id, attempt=delivery.num_delivered)
        if slot is not None:
            slot.release()  # started: the next job in line may start up
        deps.active[job_id] = job
        metrics.ACTIVE.inc()
        lost = asyncio.create_task(_halt_when_lost(keeper, job))
        totals = Totals.of(prior)
        try:
            result = await _session(
                deps, event, client, route, info, job, keeper, prior, totals, engine
            )
        finally:
            lost.cancel()
            metrics.ACTIVE.dec()
            deps.active.pop(job_id, None)
            deps.endings.session_ended(job_id)
        root, base = deps.settings.recordings_dir.resolve(), next_part(prior)
        files = tuple(_entry(f, root, base + f.part) for f in result.files)
        await _ended(
            deps, event, job, result, totals, keeper.lease.token, had_files, room_id, files
        )


async def _ended(
    deps: RecorderDeps,
    event: Work,
    job: Job,
    result: SessionResult,
    before: Totals,
    token: int,
    had_files: bool,
    room_id: str,
    files: tuple[SegmentEntry, ...],
) -> None:
    """The outcome; ``files`` (what the session finalised) are listed with it, also those
    whose own write was lost while NATS was away."""
    totals = before.plus(result.bytes, result.reconnects, result.stalls)
    if job.reason in ("shutdown", "lease_lost"):
        # Not the end of the job: what was written is final; another recorder continues.
        await deps.store.handed_over(event.job_id, token, totals, files)
        msg = f"recording handed over ({job.reason})"
        raise RetryLater(msg, delay=0)
    if result.error_code == ErrorCode.DISK_FULL and job.reason is None:
        # Not the live's fault: try again soon (here or on a recorder with room) for as long
        # as the live goes on; the retry budget is for TikTok's refusals, not for this.
        error = (str(ErrorCode.DISK_FULL), result.error or "disk full")
        await deps.store.handed_over(event.job_id, token, totals, files, error)
        raise RetryLater(error[1], delay=DISK_FULL_RETRY)
    if job.reason == "cancelled":
        outcome = Outcome("CANCELLED", ErrorCode.CANCELLED, "cancelled", room_id, files)
    elif result.error_code is None or (
        result.error_code == ErrorCode.LIVE_OFFLINE and (had_files or result.files)
    ):
        outcome = Outcome("SUCCESS", room_id=room_id, files=files)
    else:
        message = result.error or result.reason
        if result.error_code == ErrorCode.INTERNAL:
            # A bug's text (an exception's) is for the log, not for API answers.
            log.error("recorder.session_failed", job_id=event.job_id, error=message)
            message = "internal error in the recorder; its log has the details"
        outcome = Outcome("FAILURE", result.error_code, message, room_id, files)
    await finish(deps, event, outcome, totals, token)


async def _halt_when_lost(keeper: Keeper, job: Job) -> None:
    await keeper.lost.wait()
    log.warning("recorder.lease_lost", job_id=job.job_id, lease=keeper.lease.name)
    job.halt("lease_lost")


async def take_over(
    deps: RecorderDeps, job_id: str, token: int, container: str | None = None
) -> RecordingPart | None:
    """Finalise the segments a dead holder left "recording", and try again those an earlier
    remux left raw (e.g. the disk was full then): made final in the job's ``container``, or
    dropped if gone. Returns the job as this holder starts from."""
    doc = await deps.store.recording(job_id)
    for entry in [s for s in doc.segments if s.state in ("recording", "raw")] if doc else []:
        final = await deps.media.take_over(entry, token, container)
        if final is None:
            doc = await deps.store.segment_dropped(job_id, token, entry.path)
        else:
            doc = await deps.store.segment_finalised(job_id, token, final, replaces=entry.path)
    return doc


async def _session(
    deps: RecorderDeps,
    event: Work,
    client: TikTokClient,
    route: Route,
    info: RoomInfo,
    job: Job,
    keeper: Keeper,
    prior: RecordingPart | None,
    totals: Totals,
    engine: str,
) -> SessionResult:
    settings = deps.settings
    preference = ([event.options.quality] if event.options.quality else []) + (
        settings.quality.split(",")
    )
    template = event.options.output_template or settings.output_template
    root = settings.recordings_dir.resolve()
    store, job_id = deps.store, event.job_id
    part_base = next_part(prior)
    writes: set[asyncio.Task[None]] = set()

    async def fenced(write: Awaitable[object]) -> None:
        """A write the store refuses means the job is not ours any more: stop recording.
        One lost to a NATS blip is not: the files are listed again when the job ends."""
        try:
            await write
        except Refused as exc:
            log.warning("recorder.write_refused", job_id=job_id, error=str(exc))
            job.halt("lease_lost")
        except TRANSIENT as exc:
            log.warning("recorder.write_failed", job_id=job_id, error=repr(exc))

    # Stream GETs the egress guards refused in this session (set around the session below).
    refusals = Refusals()
    handed_out = [0]  # stream URLs the last lookup gave the session

    async def lookup() -> StreamLookup:
        if handed_out[0] and refusals.count >= handed_out[0]:
            # Every URL of the last lookup was refused when fetched (a redirect, or a name,
            # to a private address or off the list): the job ends on it, nothing fetched.
            raise StreamHostNotAllowed
        refusals.count = handed_out[0] = 0
        # room/info, or the live page when room/info refuses a flagged IP (4003110).
        try:
            fresh = await client.live_info(info.room_id, info.unique_id)
        except TikTokError as exc:
            await report_failure(deps, route, event, exc)
            raise
        if fresh.has_ended:
            return StreamLookup(status="ended")
        if fresh.is_paused:
            return StreamLookup(status="paused")
        candidates = allowed(stream_candidates(fresh, preference), settings.stream_policy)
        handed_out[0] = len(candidates)
        return StreamLookup(status="live", candidates=candidates)

    def open_path(index: int, started_at: datetime) -> Path:
        if not keeper.fresh():
            # Woken from a freeze, or NATS away too long: a newer holder may write here now.
            job.halt("lease_lost")
            msg = f"lease of job {job_id} is not fresh: no new file"
            raise LeaseNotFresh(msg)
        values = {
            "room_id": info.room_id,
            "user": info.unique_id or "",
            "title": info.title,
            "job_id": job_id,
            "part": str(part_base + index),
        }
        path = render(template, values, root, when=started_at).with_suffix(".flv")
        # Listed before a byte is written, so a recorder taking over after a crash finds it.
        entry = SegmentEntry(path=_rel(path, root), part=part_base + index)
        write = store.segment_opened(job_id, keeper.lease.token, entry)
        task = asyncio.create_task(fenced(write))
        writes.add(task)
        task.add_done_callback(writes.discard)
        return path

    async def on_file(segment: RecordedSegment) -> None:
        # The session counts its segments from 0; the job's parts go on from the prior ones.
        entry = _entry(segment, root, part_base + segment.part)
        await fenced(store.segment_finalised(job_id, keeper.lease.token, entry))

    async def on_progress(progress: Progress) -> None:
        now = totals.plus(progress.bytes, progress.reconnects, progress.stalls)
        await fenced(store.progress(job_id, keeper.lease.token, now, progress.bitrate))

    async def on_stream(stream: StreamCandidate) -> None:
        wanted = preference[0] if preference else None
        write = store.streaming(
            job_id, keeper.lease.token, quality=stream.quality, source=stream.source, wanted=wanted
        )
        await fenced(write)

    recorded_s = sum(s.duration_s or 0 for s in prior.segments) if prior else 0.0
    plan = SessionPlan(
        lookup=lookup,
        open_path=open_path,
        stop=job.stop,
        on_file=on_file,
        on_progress=on_progress,
        on_stream=on_stream,
        duration=None if event.duration is None else max(1.0, event.duration - recorded_s),
        # Through the job's proxy or its pool egress's, unless EGRESS_MEDIA_DIRECT.
        http=client.http if route.media_via_proxy else None,
        engine=engine,
        job_id=job_id,
        room_id=info.room_id,
        unique_id=info.unique_id,
        options=route.media_options,
    )
    token = SESSION_REFUSALS.set(refusals)  # the session runs in this task
    try:
        return await deps.media.record(plan)
    finally:
        SESSION_REFUSALS.reset(token)
        if writes:
            await asyncio.gather(*writes, return_exceptions=True)


def allowed(candidates: list[StreamCandidate], policy: StreamPolicy) -> tuple[StreamCandidate, ...]:
    """The candidates ``policy`` lets the session fetch, in order; the others are skipped
    like dead rungs, never fetched, and logged. StreamHostNotAllowed when none is left."""
    kept = []
    for candidate in candidates:
        reason = stream_refusal(policy, candidate.url)
        if reason is None:
            kept.append(candidate)
            continue
        log.warning(
            "recorder.stream_refused",
            quality=candidate.quality,
            source=candidate.source,
            url=candidate.url.split("?", 1)[0],  # without its signature
            reason=reason,
        )
    if candidates and not kept:
        raise StreamHostNotAllowed
    return tuple(kept)


def next_part(prior: RecordingPart | None) -> int:
    """The part number of this holder's first file: after every part listed so far."""
    return max((s.part for s in prior.segments), default=-1) + 1 if prior else 0


def _rel(path: Path, root: Path) -> str:
    return str(path.relative_to(root)) if path.is_absolute() else str(path)


def _entry(segment: RecordedSegment, root: Path, part: int) -> SegmentEntry:
    return SegmentEntry(
        path=_rel(Path(segment.path), root),
        part=part,
        size=segment.size,
        duration_s=segment.duration_s,
        state="final" if segment.remuxed else "raw",
    )

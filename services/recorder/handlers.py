"""What a recorder does with one unit of recording work (room.live or recording.requested).

Plain async functions over a deps object: no NATS here except through ``deps``. The flow:
cancelled already? -> resolve the room -> take its lease -> confirm it is live -> record in
segments while renewing the lease -> write the outcome to KV and publish recording.finished.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Literal

import httpx
from nats.js.api import PubAck
from nats.js.kv import KeyValue

from services.recorder import metrics
from services.recorder.ffmpeg import remux
from services.recorder.session import (
    Progress,
    RecordedSegment,
    RecordingSession,
    SessionResult,
    StreamLookup,
)
from shared import jobs
from shared import lease as leases
from shared.bus import TRANSIENT, Delivery
from shared.config import RecorderSettings
from shared.errors import ErrorCode, RetryLater
from shared.events import (
    Event,
    RecordedFile,
    RecordingFinished,
    RecordingRequested,
    RecordingStarted,
    RoomLive,
    utc_now,
)
from shared.logging import get_logger
from shared.naming import render
from shared.secrets import SecretError
from shared.subjects import LEASE_RENEW
from shared.tiktok import (
    CookiesError,
    LiveOffline,
    RoomInfo,
    StreamCandidate,
    TikTokClient,
    TikTokError,
    stream_candidates,
)

log = get_logger(__name__)

MAX_RETRIES = 5
# Cancels arrive at once through the KV subscription; this re-read (every 5th lease renewal,
# ~15 s) only covers a signal lost while NATS reconnected.
CANCEL_RECHECK = 5
# How often a recording writes its progress (bytes, bitrate) to its job document.
PROGRESS_EVERY = 10.0
# TikTok answers 4003110 both for 18+ lives without a login and for throttled clients, so an
# AGE_RESTRICTED answer is retried briefly before the job fails with it.
AGE_RETRIES = 3

StopReason = Literal["cancelled", "lease_lost", "shutdown"]
Work = RecordingRequested | RoomLive


@dataclass
class Job:
    """A recording in progress in this process: how to stop it and why it stopped."""

    job_id: str
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    reason: StopReason | None = None

    def halt(self, reason: StopReason) -> None:
        if self.reason is None:
            self.reason = reason
        self.stop.set()


@dataclass
class RecorderDeps:
    recorder_id: str
    settings: RecorderSettings
    jobs_kv: KeyValue
    claims_kv: KeyValue
    publish: Callable[[Event], Awaitable[PubAck]]
    tiktok: Callable[[Work], Awaitable[TikTokClient]]
    http: Callable[[Work], Awaitable[httpx.AsyncClient]]
    ffmpeg: str
    active: dict[str, Job] = field(default_factory=dict)


async def on_recording_work(event: Event, delivery: Delivery, deps: RecorderDeps) -> None:
    """Record the job; returning acks it, RetryLater hands it to whichever recorder is free."""
    assert isinstance(event, Work)
    job_id = event.job_id
    request = await jobs.get_request(deps.jobs_kv, job_id)
    done = await jobs.get_recording(deps.jobs_kv, job_id)
    if done is not None and done[0].state in jobs.TERMINAL:
        log.info("recorder.already_finished", job_id=job_id, state=done[0].state)
        return
    if request is not None and request[0].desired == "cancel":
        await _finish(deps, event, None, "CANCELLED", ErrorCode.CANCELLED, "cancelled")
        return

    try:
        client = await deps.tiktok(event)
    except (CookiesError, SecretError, ValueError) as exc:
        # The job's own options cannot work here (cookie file, proxy): retrying won't help.
        await _finish(deps, event, None, "FAILURE", ErrorCode.VALIDATION_ERROR, str(exc))
        return
    unique_id = event.unique_id if isinstance(event, RoomLive) else None
    try:
        room_id = event.room_id
        if not room_id:
            ref = await client.resolve(event.url or "")
            room_id, unique_id = ref.room_id, ref.unique_id or unique_id
        if not room_id:
            raise LiveOffline(target=event.url or "")
    except TikTokError as exc:
        await _fail_or_retry(deps, event, delivery, exc)
        return

    owner = await jobs.room_owner(deps.jobs_kv, room_id)
    if owner is not None and owner != job_id:
        other = await jobs.get_recording(deps.jobs_kv, owner)
        if other is not None and other[0].state not in jobs.TERMINAL:
            # The job already recording this room keeps it, even while it changes recorder.
            msg = f"room {room_id} is recorded by job {owner}"
            raise RetryLater(msg, delay=LEASE_RENEW)
    holder = leases.Holder(owner=deps.recorder_id, purpose=job_id)
    lease = await leases.acquire(deps.claims_kv, f"room.{room_id}", holder)
    if lease is None:
        other_holder = await leases.current_holder(deps.claims_kv, f"room.{room_id}")
        # Our own job's lease, left by a recorder that died: it lapses within the TTL.
        mine = other_holder is not None and other_holder.purpose == job_id
        msg = f"room {room_id} is leased by {other_holder.owner if other_holder else '?'}"
        raise RetryLater(msg, delay=1.0 if mine else LEASE_RENEW)
    try:
        await jobs.set_room_owner(deps.jobs_kv, room_id, job_id)
        await _record(deps, event, delivery, client, room_id, unique_id, lease)
    finally:
        await lease.release()


async def _record(
    deps: RecorderDeps,
    event: Work,
    delivery: Delivery,
    client: TikTokClient,
    room_id: str,
    unique_id: str | None,
    lease: leases.Lease,
) -> None:
    job_id = event.job_id
    await recover_orphans(deps, job_id)  # a takeover: finalize what a dead recorder left
    found = await jobs.get_recording(deps.jobs_kv, job_id)
    prior = found[0] if found else None
    had_files = bool(prior and prior.segments)
    recorded_s = sum(s.duration_s or 0 for s in prior.segments) if prior else 0.0
    if event.duration is not None and recorded_s >= event.duration - 0.5:
        await _finish(deps, event, None, "SUCCESS", None, None, room_id)
        return
    try:
        info = await client.confirm_live(room_id, unique_id)
    except TikTokError as exc:
        if had_files and exc.code == ErrorCode.LIVE_OFFLINE:
            # The live ended while the job changed hands: what was recorded is the result.
            await _finish(deps, event, None, "SUCCESS", None, None, room_id)
            return
        await _fail_or_retry(deps, event, delivery, exc, room_id=room_id)
        return

    job = Job(job_id)
    deps.active[job_id] = job
    totals = Totals.of(prior)
    started = utc_now()
    await jobs.update_recording(
        deps.jobs_kv, job_id, lambda doc: _started(doc, event, deps, info, delivery, started)
    )
    await deps.publish(
        RecordingStarted(
            event_id=f"start:{job_id}:{delivery.num_delivered}",
            correlation_id=event.correlation_id,
            job_id=job_id,
            room_id=room_id,
            recorder_id=deps.recorder_id,
            part=len(prior.segments) if prior else 0,
        )
    )
    log.info("recorder.started", job_id=job_id, room_id=room_id, attempt=delivery.num_delivered)
    metrics.ACTIVE.inc()
    keeper = asyncio.create_task(_keep_lease(deps, job, lease))
    try:
        part_base = max((s.part for s in prior.segments), default=-1) + 1 if prior else 0
        result = await _run_session(deps, event, client, info, job, recorded_s, part_base, totals)
    finally:
        keeper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await keeper
        metrics.ACTIVE.dec()
        deps.active.pop(job_id, None)

    totals = totals.plus(result)
    if job.reason in ("shutdown", "lease_lost"):
        # Not the end of the job: what was written is final; another recorder continues.
        await jobs.update_recording(deps.jobs_kv, job_id, _handed_over(totals))
        msg = f"recording handed over ({job.reason})"
        raise RetryLater(msg, delay=0)
    if job.reason == "cancelled":
        await _finish(deps, event, totals, "CANCELLED", ErrorCode.CANCELLED, "cancelled", room_id)
    elif result.error_code is None or (
        result.error_code == ErrorCode.LIVE_OFFLINE and (had_files or result.files)
    ):
        await _finish(deps, event, totals, "SUCCESS", None, None, room_id)
    else:
        message = result.error or result.reason
        await _finish(deps, event, totals, "FAILURE", result.error_code, message, room_id)


@dataclass(frozen=True)
class Totals:
    """Counters of a job over all its attempts (a failover adds to them, never resets)."""

    bytes: int = 0
    reconnects: int = 0
    stalls: int = 0

    @classmethod
    def of(cls, doc: jobs.RecordingPart | None) -> Totals:
        return cls(doc.bytes, doc.reconnects, doc.stalls) if doc else cls()

    def plus(self, r: SessionResult | Progress) -> Totals:
        return Totals(self.bytes + r.bytes, self.reconnects + r.reconnects, self.stalls + r.stalls)

    def apply(self, doc: jobs.RecordingPart) -> None:
        doc.bytes, doc.reconnects, doc.stalls = self.bytes, self.reconnects, self.stalls


async def _run_session(
    deps: RecorderDeps,
    event: Work,
    client: TikTokClient,
    info: RoomInfo,
    job: Job,
    recorded_s: float,
    part_base: int,
    totals: Totals,
) -> SessionResult:
    settings = deps.settings
    preference = ([event.options.quality] if event.options.quality else []) + (
        settings.quality.split(",")
    )
    template = event.options.output_template or settings.output_template
    root = settings.recordings_dir.resolve()
    kv, job_id = deps.jobs_kv, event.job_id
    writes: set[asyncio.Task[object]] = set()

    async def lookup() -> StreamLookup:
        # room/info, or the live page when room/info refuses a flagged IP (4003110).
        fresh = await client.live_info(info.room_id, info.unique_id)
        if fresh.has_ended:
            return StreamLookup(status="ended")
        if fresh.is_paused:
            return StreamLookup(status="paused")
        candidates = tuple(stream_candidates(fresh, preference))
        return StreamLookup(status="live", candidates=candidates)

    def open_path(index: int, started_at: datetime) -> Path:
        values = {
            "room_id": info.room_id,
            "user": info.unique_id or "",
            "title": info.title,
            "job_id": job_id,
            "part": str(part_base + index),
        }
        path = render(template, values, root, when=started_at).with_suffix(".flv")
        # Listed before a byte is written, so a recorder taking over after a crash finds it.
        entry = jobs.SegmentEntry(path=_rel(path, root), part=part_base + index)
        task = asyncio.create_task(jobs.update_recording(kv, job_id, _add(entry)))
        writes.add(task)
        task.add_done_callback(writes.discard)
        return path

    async def on_file(segment: RecordedSegment) -> None:
        await jobs.update_recording(kv, job_id, _finalised(_entry(segment, root)))

    async def on_progress(progress: Progress) -> None:
        await jobs.update_recording(kv, job_id, _progressed(progress, totals))

    async def on_stream(stream: StreamCandidate) -> None:
        await jobs.update_recording(kv, job_id, _streaming(stream, preference))

    duration = None
    if event.duration is not None:
        duration = max(1.0, event.duration - recorded_s)
    session = RecordingSession(
        lookup=lookup,
        http=await deps.http(event),
        open_path=open_path,
        ffmpeg=deps.ffmpeg,
        duration=duration,
        read_timeout=settings.read_timeout,
        stop=job.stop,
        on_file=on_file,
        on_progress=on_progress,
        on_stream=on_stream,
        progress_interval=PROGRESS_EVERY,
    )
    try:
        return await session.run()
    finally:
        if writes:
            await asyncio.gather(*writes, return_exceptions=True)


def _rel(path: Path, root: Path) -> str:
    return str(path.relative_to(root)) if path.is_absolute() else str(path)


def _entry(segment: RecordedSegment, root: Path) -> jobs.SegmentEntry:
    return jobs.SegmentEntry(
        path=_rel(Path(segment.path), root),
        part=segment.part,
        size=segment.size,
        duration_s=segment.duration_s,
        state="final" if segment.remuxed else "raw",
    )


Change = Callable[[jobs.RecordingPart | None], jobs.RecordingPart | None]


def _add(entry: jobs.SegmentEntry) -> Change:
    def change(doc: jobs.RecordingPart | None) -> jobs.RecordingPart | None:
        if doc is None or any(s.path == entry.path for s in doc.segments):
            return None
        doc.segments.append(entry)
        return doc

    return change


def _finalised(entry: jobs.SegmentEntry) -> Change:
    """Replace the raw segment's entry (same stem) by its final file."""
    stem = entry.path.rsplit(".", 1)[0]

    def change(doc: jobs.RecordingPart | None) -> jobs.RecordingPart | None:
        if doc is None:
            return None
        kept = [s for s in doc.segments if s.path.rsplit(".", 1)[0] != stem]
        doc.segments = sorted([*kept, entry], key=lambda s: (s.part, s.path))
        return doc

    return change


def _progressed(progress: Progress, base: Totals) -> Change:
    def change(doc: jobs.RecordingPart | None) -> jobs.RecordingPart | None:
        if doc is None or doc.state in jobs.TERMINAL:
            return None
        doc.bitrate_kbps = round(progress.bitrate / 1000, 1)
        base.plus(progress).apply(doc)
        return doc

    return change


def _streaming(stream: StreamCandidate, preference: list[str]) -> Change:
    def change(doc: jobs.RecordingPart | None) -> jobs.RecordingPart | None:
        if doc is None or doc.state in jobs.TERMINAL:
            return None
        doc.quality = stream.quality
        doc.stream_source = stream.source
        doc.quality_wanted = preference[0] if preference else None
        return doc

    return change


def _handed_over(totals: Totals) -> Change:
    def change(doc: jobs.RecordingPart | None) -> jobs.RecordingPart | None:
        if doc is None:
            return None
        doc.state = "RETRY"
        doc.bitrate_kbps = 0.0
        totals.apply(doc)
        return doc

    return change


async def recover_orphans(deps: RecorderDeps, job_id: str) -> None:
    """Finalize segments a crashed recorder left raw: remux them, or drop them if gone."""
    found = await jobs.get_recording(deps.jobs_kv, job_id)
    if found is None:
        return
    root = deps.settings.recordings_dir.resolve()
    for entry in [s for s in found[0].segments if s.state == "recording"]:
        raw = (root / entry.path).resolve()
        if not raw.is_relative_to(root) or not raw.exists() or raw.stat().st_size == 0:
            await jobs.update_recording(deps.jobs_kv, job_id, _dropped(entry.path))
            continue
        result = await remux(raw, raw.with_suffix(".mp4"), ffmpeg=deps.ffmpeg)
        final = jobs.SegmentEntry(
            path=_rel(result.path, root),
            part=entry.part,
            size=result.size,
            duration_s=result.duration_s,
            state="final" if result.ok else "raw",
        )
        log.info("recorder.orphan_finalised", job_id=job_id, path=final.path, ok=result.ok)
        await jobs.update_recording(deps.jobs_kv, job_id, _finalised(final))


def _dropped(path: str) -> Change:
    def change(doc: jobs.RecordingPart | None) -> jobs.RecordingPart | None:
        if doc is None:
            return None
        doc.segments = [s for s in doc.segments if s.path != path]
        return doc

    return change


async def _keep_lease(deps: RecorderDeps, job: Job, lease: leases.Lease) -> None:
    """Renew the lease; now and then re-read the request in case a cancel signal was missed.

    The message's in_progress() heartbeat is the consume loop's job (same period).
    """
    beats = 0
    while not job.stop.is_set():
        await asyncio.sleep(LEASE_RENEW)
        try:
            renewed = await lease.renew()
        except TRANSIENT:
            continue  # NATS blip: the TTL leaves room for the next attempt
        if not renewed:
            log.warning("recorder.lease_lost", job_id=job.job_id, lease=lease.name)
            job.halt("lease_lost")
            return
        beats += 1
        if beats % CANCEL_RECHECK == 0:
            with contextlib.suppress(*TRANSIENT):
                found = await jobs.get_request(deps.jobs_kv, job.job_id)
                if found is not None and found[0].desired == "cancel":
                    job.halt("cancelled")


def _started(
    doc: jobs.RecordingPart | None,
    event: Work,
    deps: RecorderDeps,
    info: RoomInfo,
    delivery: Delivery,
    started: datetime,
) -> jobs.RecordingPart:
    doc = doc or jobs.RecordingPart(job_id=event.job_id, started_at=started)
    doc.state = "STARTED"
    doc.recorder_id = deps.recorder_id
    doc.room_id = info.room_id
    doc.title = info.title
    doc.unique_id = info.unique_id or doc.unique_id
    doc.attempt = delivery.num_delivered
    return doc


async def _finish(
    deps: RecorderDeps,
    event: Work,
    totals: Totals | None,
    state: jobs.RecState,
    error_code: ErrorCode | None,
    error_message: str | None,
    room_id: str | None = None,
) -> None:
    """Write the terminal state and publish recording.finished (once: its id is per job)."""
    ended = utc_now()

    def finish(doc: jobs.RecordingPart | None) -> jobs.RecordingPart:
        doc = doc or jobs.RecordingPart(job_id=event.job_id)
        doc.state = state
        # Anything still "recording" here has no file behind it any more.
        doc.segments = [s for s in doc.segments if s.state != "recording"]
        doc.room_id = doc.room_id or room_id
        doc.ended_at = ended
        doc.bitrate_kbps = 0.0
        doc.returncode = 0 if state == "SUCCESS" else 1
        doc.error_code = str(error_code) if error_code else None
        doc.error_message = error_message if error_code else None
        if totals is not None:
            totals.apply(doc)
        return doc

    doc = await jobs.update_recording(deps.jobs_kv, event.job_id, finish)
    assert doc is not None
    metrics.count_finished(state, str(error_code) if error_code else None)
    await deps.publish(
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
                )
                for s in doc.segments
            ],
            error_code=doc.error_code,
            error_message=doc.error_message,
            started_at=doc.started_at,
            ended_at=ended,
            watcher_key=event.watcher_key if isinstance(event, RoomLive) else None,
            upload_s3=event.options.upload_s3,
            url=event.url,
            unique_id=doc.unique_id or (event.unique_id if isinstance(event, RoomLive) else None),
            title=doc.title,
        )
    )
    started_at = doc.started_at
    log.info(
        "recorder.finished",
        state=state,
        returncode=doc.returncode,
        error_code=doc.error_code,
        room_id=doc.room_id,
        duration=round((ended - started_at).total_seconds(), 1) if started_at else None,
        bytes=doc.bytes,
        files=len(doc.segments),
    )


async def _fail_or_retry(
    deps: RecorderDeps,
    event: Work,
    delivery: Delivery,
    exc: TikTokError,
    room_id: str | None = None,
) -> None:
    """Retryable TikTok trouble (WAF, timeouts) is retried a few times, then the job fails."""
    ambiguous = exc.code == ErrorCode.AGE_RESTRICTED and delivery.num_delivered < AGE_RETRIES
    if (exc.retryable and delivery.num_delivered < MAX_RETRIES) or ambiguous:
        await jobs.update_recording(
            deps.jobs_kv,
            event.job_id,
            lambda d: _retrying(d, event, exc),
        )
        raise RetryLater(str(exc), delay=min(60.0, 2.0**delivery.num_delivered))
    await _finish(deps, event, None, "FAILURE", exc.code, str(exc), room_id)


def _retrying(doc: jobs.RecordingPart | None, event: Work, exc: TikTokError) -> jobs.RecordingPart:
    doc = doc or jobs.RecordingPart(job_id=event.job_id)
    doc.state = "RETRY"
    doc.error_code = str(exc.code)
    doc.error_message = str(exc)
    return doc

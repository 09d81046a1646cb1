"""Read a job's status: the parts each service wrote in KV ``jobs``, assembled for the API."""

from __future__ import annotations

from services.gateway.api_keys import ApiKey
from services.gateway.micro_client import ServiceUnavailable, get_watcher
from services.gateway.nats_link import NatsLink
from services.gateway.schemas import (
    FileOut,
    JobProgress,
    JobResult,
    JobStatus,
    JobStatusName,
    S3Object,
    UploadOut,
    WatcherOut,
)
from shared.job_store import JobStore
from shared.jobs import JobRequest, RecordingPart, UploadPart
from shared.watchers import Watcher


async def read_status(
    link: NatsLink, store: JobStore, job_id: str, *, caller: ApiKey
) -> JobStatus | None:
    """The status of job ``job_id`` as it stands; None when there is no such job, or when it
    is not ``caller``'s to see (both after the same one read).

    A watch job's status also asks the scheduler for its watcher, and still answers without
    it when the scheduler cannot.
    """
    request = await store.request(job_id)
    if request is None or not caller.sees(request.owner):
        return None
    if request.kind == "watch":
        return assemble_watch(request, await _watcher_if_any(link, request.watcher_key))
    recording = await store.recording(job_id)
    upload = await store.upload(job_id) if request.options.upload_s3 else None
    return assemble(request, recording, upload)


async def _watcher_if_any(link: NatsLink, key: str | None) -> Watcher | None:
    # The status of the job is in KV: it answers without the scheduler, only less complete.
    if not key or link.bus is None:
        return None
    try:
        return await get_watcher(link.bus.nc, key)
    except ServiceUnavailable:
        return None


def assemble(
    request: JobRequest, recording: RecordingPart | None, upload: UploadPart | None = None
) -> JobStatus:
    status: JobStatusName = "PENDING"
    if recording is not None:
        status = recording.state
    elif request.desired == "cancel":
        status = "CANCELLED"  # cancelled before any recorder took it
    result = JobResult()
    progress = JobProgress()
    title = None
    if recording is not None:
        title = recording.title
        result = JobResult(
            returncode=recording.returncode,
            files=[s.path for s in recording.segments if s.state != "recording"],
            s3=[S3Object(bucket=f.bucket, key=f.key) for f in upload.files] if upload else [],
            started_at=recording.started_at,
            ended_at=recording.ended_at,
        )
        progress = JobProgress(
            bytes=recording.bytes,
            segments=sum(not s.joined_from for s in recording.segments),
            bitrate_kbps=recording.bitrate_kbps,
            quality=recording.quality,
            quality_wanted=recording.quality_wanted,
            stream_source=recording.stream_source,
            engine=recording.engine,
            engine_commit=recording.engine_commit,
            egress=recording.egress,
            reconnects=recording.reconnects,
            stalls=recording.stalls,
            recorder_id=recording.recorder_id or None,
            files=[
                FileOut(
                    path=s.path,
                    size=s.size,
                    duration_s=s.duration_s,
                    part=s.part,
                    state=s.state,
                    joined_from=list(s.joined_from),
                )
                for s in recording.segments
            ],
        )
    failed = status in ("FAILURE", "CANCELLED")
    return JobStatus(
        task_id=request.job_id,
        kind=request.kind,
        status=status,
        room_id=(recording.room_id if recording and recording.room_id else request.room_id),
        url=request.url,
        title=title,
        created_at=request.created_at,
        result=result,
        progress=progress,
        error_code=(recording.error_code if recording else "CANCELLED") if failed else None,
        error_message=(recording.error_message if recording else "cancelled") if failed else None,
        correlation_id=request.correlation_id or None,
        upload=_upload(upload) if upload else None,
        owner=request.owner,
    )


def _upload(part: UploadPart) -> UploadOut:
    return UploadOut(
        state=part.state,
        files_done=len(part.files),
        bytes_total=part.bytes_total,
        bytes_done=part.bytes_done,
        error_code=part.error_code,
        error_message=part.error_message,
    )


def assemble_watch(request: JobRequest, watcher: Watcher | None) -> JobStatus:
    """A watch job, from its request and the scheduler's watcher under its key.

    ``watcher`` is None when the scheduler does not know the key or did not answer. A watcher
    under the same key with another task id belongs to another watch job.
    """
    mine = watcher if watcher is not None and watcher.task_id == request.job_id else None
    status: JobStatusName = "PENDING"  # the scheduler has not registered it (yet)
    if request.desired == "cancel" or (mine is not None and mine.status == "deleted"):
        status = "CANCELLED"
    elif mine is not None:
        status = "STARTED"  # active or paused: the watch goes on
    elif watcher is not None and watcher.created_at > request.created_at:
        status = "CANCELLED"  # replaced by a newer watcher of the same key
    cancelled = status == "CANCELLED"
    return JobStatus(
        task_id=request.job_id,
        kind=request.kind,
        status=status,
        room_id=(mine.room_id if mine and mine.room_id else request.room_id),
        url=request.url,
        created_at=request.created_at,
        result=JobResult(),
        progress=JobProgress(),
        error_code="CANCELLED" if cancelled else None,
        error_message="cancelled" if cancelled else None,
        correlation_id=request.correlation_id or None,
        owner=request.owner,
        watcher=WatcherOut.from_watcher(mine) if mine else None,
        jobs=list(mine.jobs) if mine else [],
    )

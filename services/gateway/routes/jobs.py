"""GET /jobs/{task_id} (status assembled from KV) and DELETE /jobs/{task_id} (cancel).

A watch job's status also asks the scheduler for its watcher; cancelling it deletes the watcher.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path
from nats.js.kv import KeyValue

from services.gateway.deps import JobsDep, LinkDep
from services.gateway.errors import CORRELATION_ID, ApiError, ErrorBody
from services.gateway.job_status import assemble, assemble_watch
from services.gateway.micro_client import ServiceUnavailable, get_watcher
from services.gateway.nats_link import NatsLink
from services.gateway.schemas import JobStatus
from shared import jobs
from shared.bus import TRANSIENT
from shared.errors import ErrorCode
from shared.events import WatchDeleted, new_id
from shared.watchers import Watcher

router = APIRouter(tags=["jobs"])

# Task ids are ours (uuid4); anything else cannot exist and must not reach a KV key.
TASK_ID_PATTERN = r"^[A-Za-z0-9-]{1,64}$"
TaskId = Annotated[
    str, Path(pattern=TASK_ID_PATTERN, description="The task_id POST /recordings returned")
]
NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorBody, "description": "No such job"}
}
UNAVAILABLE: dict[int | str, dict[str, Any]] = {
    503: {"model": ErrorBody, "description": "NATS or the scheduler is not reachable"}
}


async def cancel_request(kv: KeyValue, job_id: str) -> jobs.JobRequest | None:
    """Set ``desired=cancel`` on ``job.<id>``: the recorder holding the job stops and finalizes
    its files; one that has not taken it yet never starts it. None when the job is unknown."""

    def cancel(doc: jobs.JobRequest | None) -> jobs.JobRequest | None:
        if doc is None or doc.desired == "cancel":
            return None
        doc.desired = "cancel"
        return doc

    return await jobs.update_request(kv, job_id, cancel)


async def cancel_unfinished(kv: KeyValue, job_id: str) -> bool:
    """Cancel a job unless it is unknown or already finished; True when it was asked to stop."""
    recording = await jobs.get_recording(kv, job_id)
    if recording is not None and recording[0].state in jobs.TERMINAL:
        return False
    return await cancel_request(kv, job_id) is not None


async def watch_being_deleted(kv: KeyValue, watcher: Watcher) -> bool:
    """A delete was asked already: the scheduler marks it, or the gateway cancelled its job."""
    if watcher.status == "deleted":
        return True
    found = await jobs.get_request(kv, watcher.task_id)
    return found is not None and found[0].desired == "cancel"


async def end_watch(
    link: NatsLink, kv: KeyValue, *, key: str, task_id: str, current_job_id: str | None
) -> None:
    """Stop the watcher of watch job ``task_id``: cancel its recording in progress, tell the
    scheduler (``watch.deleted``), then mark the watch job cancelled.

    Raises the TRANSIENT errors of NATS. The order makes a failure safe to retry: the watch
    job only reads CANCELLED once ``watch.deleted`` is stored.
    """
    assert link.bus is not None
    if current_job_id:
        await cancel_unfinished(kv, current_job_id)
    await link.bus.publish(
        WatchDeleted(
            event_id=f"watch-deleted:{task_id}",
            correlation_id=CORRELATION_ID.get() or new_id(),
            key=key,
        )
    )
    await cancel_request(kv, task_id)


async def scheduler_watcher(link: NatsLink, key: str) -> Watcher | None:
    """The scheduler's watcher under ``key`` (None: unknown); 503 when it cannot answer."""
    if link.bus is None:
        raise ApiError(503, ErrorCode.SERVICE_UNAVAILABLE, "NATS is not connected")
    try:
        return await get_watcher(link.bus.nc, key)
    except ServiceUnavailable as exc:
        msg = "the scheduler is not reachable"
        raise ApiError(503, ErrorCode.SERVICE_UNAVAILABLE, msg) from exc


@router.get(
    "/jobs/{task_id}",
    summary="Status, progress and result of a job",
    responses={**NOT_FOUND, **UNAVAILABLE},
)
async def get_job(task_id: TaskId, kv: JobsDep, link: LinkDep) -> JobStatus:
    found = await jobs.get_request(kv, task_id)
    if found is None:
        raise ApiError(404, ErrorCode.NOT_FOUND, "no such job")
    request = found[0]
    if request.kind == "watch":
        watcher = None
        if request.watcher_key and link.bus is not None:
            try:
                watcher = await get_watcher(link.bus.nc, request.watcher_key)
            except ServiceUnavailable:
                watcher = None  # the status still answers, without the watcher
        return assemble_watch(request, watcher)
    recording = await jobs.get_recording(kv, task_id)
    upload = await jobs.get_upload(kv, task_id) if request.options.upload_s3 else None
    return assemble(request, recording[0] if recording else None, upload[0] if upload else None)


@router.delete(
    "/jobs/{task_id}",
    status_code=202,
    summary="Cancel a job: the recording stops, its files are finalized",
    responses={
        **NOT_FOUND,
        409: {"model": ErrorBody, "description": "Job already finished"},
        **UNAVAILABLE,
    },
)
async def cancel_job(task_id: TaskId, kv: JobsDep, link: LinkDep) -> JobStatus:
    """A watch job is cancelled by deleting its watcher (as DELETE /watchers/{key} does)."""
    found = await jobs.get_request(kv, task_id)
    if found is None:
        raise ApiError(404, ErrorCode.NOT_FOUND, "no such job")
    if found[0].kind == "watch":
        return await _cancel_watch(link, kv, found[0])
    recording = await jobs.get_recording(kv, task_id)
    if recording is not None and recording[0].state in jobs.TERMINAL:
        raise ApiError(409, ErrorCode.CONFLICT, f"job already {recording[0].state}")
    request = await cancel_request(kv, task_id)
    assert request is not None
    recording = await jobs.get_recording(kv, task_id)
    return assemble(request, recording[0] if recording else None)


async def _cancel_watch(link: NatsLink, kv: KeyValue, request: jobs.JobRequest) -> JobStatus:
    key = request.watcher_key
    watcher = None
    if request.desired != "cancel" and key:
        watcher = await scheduler_watcher(link, key)
    mine = watcher is not None and watcher.task_id == request.job_id
    # A newer watcher under the same key belongs to another job: leave it alone.
    newer = watcher is not None and not mine and watcher.created_at > request.created_at
    try:
        if request.desired == "cancel" or not key or newer:
            await cancel_request(kv, request.job_id)
        else:  # also when the scheduler has not registered it yet: the delete queues after it
            current = watcher.current_job_id if watcher is not None and mine else None
            await end_watch(link, kv, key=key, task_id=request.job_id, current_job_id=current)
        found = await jobs.get_request(kv, request.job_id)
    except TRANSIENT as exc:
        raise ApiError(503, ErrorCode.SERVICE_UNAVAILABLE, "NATS is not reachable") from exc
    assert found is not None
    return assemble_watch(found[0], watcher)

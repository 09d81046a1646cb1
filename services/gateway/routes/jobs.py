"""GET /jobs (the indexer's job index), GET /jobs/{task_id} (status assembled from KV) and
DELETE /jobs/{task_id} (cancel).

A watch job's status also asks the scheduler for its watcher; cancelling it deletes the watcher.
Another key's job is a 404, as one that does not exist (admins see every job); a listing shows
a key its own jobs (an admin's: all).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from services.gateway import commands
from services.gateway.api_keys import ApiKey
from services.gateway.deps import ApiKeyDep, CorrelationDep, JobsDep, LinkDep
from services.gateway.errors import SCHEDULER_UNAVAILABLE, ApiError, documented
from services.gateway.job_status import read_status
from services.gateway.micro_client import query_jobs
from services.gateway.nats_link import NatsLink
from services.gateway.schemas import JobList, JobStatus, JobStatusName, JobSummary
from services.gateway.validators import IsoDatetime, RoomId
from shared import job_list
from shared.errors import ErrorCode
from shared.job_store import JobStore

router = APIRouter(tags=["jobs"])

# Task ids are ours (uuid4); anything else cannot exist and must not reach a KV key.
TASK_ID_PATTERN = r"^[A-Za-z0-9-]{1,64}$"
TaskId = Annotated[
    str, Path(pattern=TASK_ID_PATTERN, description="The task_id POST /recordings returned")
]
NOT_FOUND = documented(404, "No such job")
USER_PATTERN = r"^@?[A-Za-z0-9_](?:[A-Za-z0-9_.]{0,22}[A-Za-z0-9_])?$"


@router.get(
    "/jobs",
    summary="Jobs, newest first, filtered, one page at a time (cursor paging)",
    responses=documented(503, "NATS or the indexer is not reachable"),
)
async def list_jobs(
    link: LinkDep,
    api_key: ApiKeyDep,
    status: Annotated[
        list[JobStatusName] | None, Query(description="Any of these statuses (repeat it)")
    ] = None,
    kind: Annotated[job_list.Kind | None, Query(description="recording or watch jobs")] = None,
    room: Annotated[RoomId | None, Query(description="Jobs of this room id")] = None,
    user: Annotated[
        str | None, Query(pattern=USER_PATTERN, description="Jobs of this host: @user or user")
    ] = None,
    since: Annotated[
        IsoDatetime | None, Query(description="Asked at or after (ISO 8601; no offset = UTC)")
    ] = None,
    until: Annotated[
        IsoDatetime | None, Query(description="Asked at or before (ISO 8601; no offset = UTC)")
    ] = None,
    cursor: Annotated[
        str | None,
        Query(max_length=job_list.MAX_CURSOR, description="next_cursor of the previous page"),
    ] = None,
    page_size: Annotated[
        int, Query(ge=1, le=job_list.MAX_PAGE_SIZE, description="Jobs per page")
    ] = 50,
) -> JobList:
    """The API key's own jobs (an admin's: all), newest first by ``created_at``.

    From the indexer's job index, which follows KV ``jobs`` within milliseconds (longer
    after an indexer restart, while it catches up): GET /jobs/{task_id} reads the job itself.
    """
    if since is not None and until is not None and since > until:
        msg = "since must not be after until"
        raise ApiError(422, ErrorCode.VALIDATION_ERROR, msg)
    try:
        after = job_list.decode_cursor(cursor) if cursor is not None else None
    except ValueError as exc:
        raise ApiError(422, ErrorCode.VALIDATION_ERROR, str(exc)) from None
    query = job_list.JobQuery(
        owner=api_key.owner_filter,
        statuses=list(dict.fromkeys(status or ())),
        kind=kind,
        room_id=room,
        user=user.removeprefix("@").lower() if user else None,
        since=since,
        until=until,
        after=after,
        page_size=page_size,
    )
    page = await query_jobs(link.require_bus().nc, query)
    return JobList(
        # The indexer filtered already; checked again as GET /files does (an older indexer).
        items=[_summary(j) for j in page.items if api_key.sees(j.owner)],
        next_cursor=job_list.encode_cursor(page.next) if page.next else None,
        page_size=page_size,
    )


def _summary(job: job_list.JobSummary) -> JobSummary:
    return JobSummary(
        task_id=job.job_id,
        kind=job.kind,
        status=job.status,
        created_at=job.created_at,
        updated_at=job.updated_at,
        room_id=job.room_id,
        user=job.user,
        url=job.url,
        title=job.title,
        error_code=job.error_code,
        owner=job.owner,
    )


@router.get(
    "/jobs/{task_id}",
    summary="Status, progress and result of a job",
    responses={**NOT_FOUND, **SCHEDULER_UNAVAILABLE},
)
async def get_job(task_id: TaskId, store: JobsDep, link: LinkDep, api_key: ApiKeyDep) -> JobStatus:
    # Served by hot_routes.HotRoutes unless task_id is invalid (the 422 is FastAPI's).
    return await job_status(link, store, task_id, api_key)


async def job_status(link: NatsLink, store: JobStore, task_id: str, caller: ApiKey) -> JobStatus:
    """The status of ``task_id``; 404 when there is none, or it is not ``caller``'s to see."""
    status = await read_status(link, store, task_id, caller=caller)
    if status is None:
        raise ApiError(404, ErrorCode.NOT_FOUND, commands.NO_JOB)
    return status


@router.delete(
    "/jobs/{task_id}",
    status_code=202,
    summary="Cancel a job: the recording stops, its files are finalized",
    responses={
        **NOT_FOUND,
        **documented(409, "Job already finished"),
        **SCHEDULER_UNAVAILABLE,
    },
)
async def cancel_job(
    task_id: TaskId,
    store: JobsDep,
    link: LinkDep,
    api_key: ApiKeyDep,
    correlation_id: CorrelationDep,
) -> JobStatus:
    """A watch job is cancelled by deleting its watcher (as DELETE /watchers/{key} does)."""
    return await commands.cancel_job(
        link, store, task_id, caller=api_key, correlation_id=correlation_id
    )

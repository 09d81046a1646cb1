"""GET /jobs/{task_id} (status assembled from KV) and DELETE /jobs/{task_id} (cancel).

A watch job's status also asks the scheduler for its watcher; cancelling it deletes the watcher.
Another key's job is a 404, as one that does not exist (admins see every job).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from services.gateway import commands
from services.gateway.api_keys import ApiKey
from services.gateway.deps import ApiKeyDep, CorrelationDep, JobsDep, LinkDep
from services.gateway.errors import SCHEDULER_UNAVAILABLE, ApiError, documented
from services.gateway.job_status import read_status
from services.gateway.nats_link import NatsLink
from services.gateway.schemas import JobStatus
from shared.errors import ErrorCode
from shared.job_store import JobStore

router = APIRouter(tags=["jobs"])

# Task ids are ours (uuid4); anything else cannot exist and must not reach a KV key.
TASK_ID_PATTERN = r"^[A-Za-z0-9-]{1,64}$"
TaskId = Annotated[
    str, Path(pattern=TASK_ID_PATTERN, description="The task_id POST /recordings returned")
]
NOT_FOUND = documented(404, "No such job")


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

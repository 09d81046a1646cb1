"""GET /jobs/{task_id} (status assembled from KV) and DELETE /jobs/{task_id} (cancel)."""

from __future__ import annotations

import re
from typing import Any

from fastapi import APIRouter

from services.gateway.deps import JobsDep
from services.gateway.errors import ApiError, ErrorBody
from services.gateway.job_status import assemble
from services.gateway.schemas import JobStatus
from shared import jobs
from shared.errors import ErrorCode

router = APIRouter(tags=["jobs"])

# Task ids are ours (uuid4); anything else cannot exist and must not reach a KV key.
_TASK_ID = re.compile(r"^[A-Za-z0-9-]{1,64}$")
NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorBody, "description": "No such job"}
}


def _checked(task_id: str) -> str:
    if not _TASK_ID.match(task_id):
        raise ApiError(404, ErrorCode.NOT_FOUND, "no such job")
    return task_id


@router.get("/jobs/{task_id}", summary="Status, progress and result of a job", responses=NOT_FOUND)
async def get_job(task_id: str, kv: JobsDep) -> JobStatus:
    found = await jobs.get_request(kv, _checked(task_id))
    if found is None:
        raise ApiError(404, ErrorCode.NOT_FOUND, "no such job")
    recording = await jobs.get_recording(kv, task_id)
    return assemble(found[0], recording[0] if recording else None)


@router.delete(
    "/jobs/{task_id}",
    status_code=202,
    summary="Cancel a job: the recording stops, its files are finalized",
    responses={**NOT_FOUND, 409: {"model": ErrorBody, "description": "Job already finished"}},
)
async def cancel_job(task_id: str, kv: JobsDep) -> JobStatus:
    found = await jobs.get_request(kv, _checked(task_id))
    if found is None:
        raise ApiError(404, ErrorCode.NOT_FOUND, "no such job")
    recording = await jobs.get_recording(kv, task_id)
    if recording is not None and recording[0].state in jobs.TERMINAL:
        raise ApiError(409, ErrorCode.CONFLICT, f"job already {recording[0].state}")

    def cancel(doc: jobs.JobRequest | None) -> jobs.JobRequest | None:
        if doc is None or doc.desired == "cancel":
            return None
        doc.desired = "cancel"
        return doc

    request = await jobs.update_request(kv, task_id, cancel)
    assert request is not None
    recording = await jobs.get_recording(kv, task_id)
    return assemble(request, recording[0] if recording else None)

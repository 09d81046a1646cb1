"""POST /recordings: record a live now, through the recorder fleet."""

from __future__ import annotations

from fastapi import APIRouter

from services.gateway import commands
from services.gateway.deps import (
    ApiKeyDep,
    CorrelationDep,
    JobsDep,
    LinkDep,
    SecretsDep,
    SettingsDep,
)
from services.gateway.errors import BAD_TARGET, JSON_BODY_RESPONSES, ApiError, documented
from services.gateway.idempotency import IdempotencyDep
from services.gateway.schemas import RecordingCreate, TaskAccepted
from shared.errors import ErrorCode

router = APIRouter(tags=["recordings"])


@router.post(
    "/recordings",
    status_code=202,
    summary="Record a live room now (room_id, or url / @user)",
    responses={
        **BAD_TARGET,
        **documented(409, "The Idempotency-Key was used for another request"),
        **JSON_BODY_RESPONSES,
        **documented(503, "NATS is not reachable"),
    },
)
async def create_recording(
    body: RecordingCreate,
    link: LinkDep,
    store: JobsDep,
    box: SecretsDep,
    settings: SettingsDep,
    correlation_id: CorrelationDep,
    idempotency: IdempotencyDep,
    api_key: ApiKeyDep,
) -> TaskAccepted:
    """The job is the API key's: only it (and admins) see it. With an ``Idempotency-Key``, a
    retry with the same API key answers the job the first request made."""
    if (body.room_id is None) == (body.url is None):
        raise ApiError(400, ErrorCode.VALIDATION_ERROR, "give exactly one of room_id or url")
    once = idempotency.once("POST /recordings", body) if idempotency else None
    if once and (earlier := await once.earlier(link.require_bus(), store)):
        return TaskAccepted(task_id=earlier)
    task_id = await commands.submit_recording(
        link,
        store,
        body,
        owner=api_key.name,
        secrets=box,
        cookies_dir=settings.cookies_dir,
        allow_private_proxies=settings.allow_private_proxies,
        correlation_id=correlation_id,
        start=once.start if once else None,
    )
    return TaskAccepted(task_id=task_id)

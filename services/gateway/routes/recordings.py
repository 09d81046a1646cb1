"""POST /recordings: record a live now, through the recorder fleet."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

from fastapi import APIRouter

from services.gateway.deps import JobsDep, LinkDep, SecretsDep, SettingsDep
from services.gateway.errors import CORRELATION_ID, JSON_BODY_RESPONSES, ApiError, ErrorBody
from services.gateway.schemas import RecordingCreate, RecordingOptionsIn, TaskAccepted
from shared import jobs
from shared.bus import TRANSIENT
from shared.config import GatewaySettings
from shared.errors import ErrorCode
from shared.events import RecordingOptions, RecordingRequested, new_id
from shared.secrets import SecretBox
from shared.tiktok import CookiesError, load_cookies

router = APIRouter(tags=["recordings"])

BAD_TARGET: dict[int | str, dict[str, Any]] = {
    400: {
        "model": ErrorBody,
        "description": "Neither or both of room_id and url; or a malformed request",
    }
}


async def prepare_options(
    opts: RecordingOptionsIn,
    output_template: str | None,
    box: SecretBox | None,
    settings: GatewaySettings,
) -> RecordingOptions:
    """The options as they travel in events and KV: the cookies file checked, the proxy
    sealed (never readable)."""
    if opts.cookies is not None:
        await check_cookies_file(opts.cookies, settings.cookies_dir)
    proxy = opts.proxy
    if proxy is not None:
        if box is None:
            raise ApiError(
                422,
                ErrorCode.VALIDATION_ERROR,
                "options.proxy: this deployment has no SECRET_KEY to protect proxy credentials",
            )
        proxy = box.seal(proxy)
    return RecordingOptions(
        upload_s3=opts.upload_s3,
        quality=opts.quality,
        proxy=proxy,
        cookies=opts.cookies,
        output_template=output_template,
    )


async def check_cookies_file(name: str, cookies_dir: Path) -> None:
    """422 unless ``name`` loads as cookies from ``cookies_dir`` (inside it after symlinks,
    a regular readable file, size-limited, parsable). Skipped when this host has no such
    folder: the recorders, which read the file, check it again."""
    if not await asyncio.to_thread(cookies_dir.is_dir):
        return
    try:
        await asyncio.to_thread(load_cookies, name, cookies_dir)
    except (CookiesError, OSError) as exc:
        # CookiesError messages name the file, never its content (the cookies are secrets).
        reason = str(exc) if isinstance(exc, CookiesError) else "cannot be read"
        msg = f"options.cookies: {reason}"
        raise ApiError(422, ErrorCode.VALIDATION_ERROR, msg) from None


@router.post(
    "/recordings",
    status_code=202,
    summary="Record a live room now (room_id, or url / @user)",
    responses={
        **BAD_TARGET,
        **JSON_BODY_RESPONSES,
        503: {"model": ErrorBody, "description": "NATS is not reachable"},
    },
)
async def create_recording(
    body: RecordingCreate, link: LinkDep, kv: JobsDep, box: SecretsDep, settings: SettingsDep
) -> TaskAccepted:
    if (body.room_id is None) == (body.url is None):
        raise ApiError(400, ErrorCode.VALIDATION_ERROR, "give exactly one of room_id or url")
    assert link.bus is not None  # JobsDep checked the connection
    job_id = new_id()
    correlation_id = CORRELATION_ID.get() or new_id()
    options = await prepare_options(body.options, body.output_template, box, settings)
    doc = jobs.JobRequest(
        job_id=job_id,
        room_id=body.room_id,
        url=body.url,
        duration=body.duration,
        options=options,
        correlation_id=correlation_id,
    )
    event = RecordingRequested(
        event_id=f"rec:{job_id}",
        correlation_id=correlation_id,
        job_id=job_id,
        room_id=body.room_id,
        url=body.url,
        duration=body.duration,
        options=options,
    )
    try:
        await jobs.create_request(kv, doc)
    except TRANSIENT as exc:
        raise ApiError(503, ErrorCode.SERVICE_UNAVAILABLE, "NATS is not reachable") from exc
    try:
        await link.bus.publish(event)
    except TRANSIENT as exc:
        # Never leave a PENDING job that no recorder will ever see.
        with contextlib.suppress(*TRANSIENT):
            await kv.delete(jobs.request_key(job_id))
        raise ApiError(503, ErrorCode.SERVICE_UNAVAILABLE, "NATS is not reachable") from exc
    return TaskAccepted(task_id=job_id)

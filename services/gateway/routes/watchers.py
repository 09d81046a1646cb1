"""Watchers: register, list, read, delete, pause and resume (the scheduler owns them).

Reads ask the scheduler over NATS request/reply; changes are JetStream commands it consumes
in order (``watch.requested``, ``watch.deleted``, ``watch.paused``, ``watch.resumed``), so a
change is accepted here and applied by the scheduler moments later.
"""

from __future__ import annotations

import contextlib
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from nats.js.kv import KeyValue

from services.gateway.deps import JobsDep, LinkDep, SecretsDep, SettingsDep
from services.gateway.errors import CORRELATION_ID, JSON_BODY_RESPONSES, ApiError, ErrorBody
from services.gateway.micro_client import ServiceUnavailable, list_watchers
from services.gateway.nats_link import NatsLink
from services.gateway.routes.jobs import (
    UNAVAILABLE,
    cancel_unfinished,
    end_watch,
    scheduler_watcher,
    watch_being_deleted,
)
from services.gateway.routes.recordings import BAD_TARGET, prepare_options
from services.gateway.schemas import (
    Ok,
    TaskAccepted,
    WatcherCreate,
    WatcherList,
    WatcherOut,
)
from shared import jobs
from shared.bus import TRANSIENT
from shared.errors import ErrorCode
from shared.events import WatchPaused, WatchRequested, WatchResumed, new_id
from shared.tiktok.targets import parse_target
from shared.watchers import Watcher, watcher_key

router = APIRouter(tags=["watchers"])

MAX_KEY = 320  # a room id, @user, or a short-link URL (urls are at most 300 characters)
MAX_PAGE = 1_000_000

NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorBody, "description": "No such watcher"}
}


def _conflict(description: str) -> dict[int | str, dict[str, Any]]:
    return {409: {"model": ErrorBody, "description": description}}


def _not_found(why: str = "no such watcher") -> ApiError:
    return ApiError(404, ErrorCode.NOT_FOUND, why)


# A key that cannot exist is a 404 (it names no watcher), with the reason it cannot.
_MALFORMED_KEY = "no such watcher: key must be a room id, @user, or a TikTok user/live URL"


def _unavailable() -> ApiError:
    return ApiError(503, ErrorCode.SERVICE_UNAVAILABLE, "NATS is not reachable")


def normalize_key(raw: str) -> str:
    """The watcher key a path names: a room id, ``@user``, a user/live URL (read as its
    ``@user``) or a short link. Anything else cannot be a key: 404 before asking anyone."""
    if not raw or len(raw) > MAX_KEY or not _inert(raw):
        raise _not_found(_MALFORMED_KEY)
    try:
        return watcher_key(None, raw)
    except ValueError:
        raise _not_found(_MALFORMED_KEY) from None


def _inert(text: str) -> bool:
    return not any(c.isspace() or not c.isprintable() for c in text)


def path_key(
    key: Annotated[
        str,
        Path(
            description="Room id, @user, or a user/live URL (URL-encoded)",
            examples=["7503448765740976902", "@alice"],
        ),
    ],
    request: Request,
) -> str:
    """``{key}`` of the path, normalized. The whole path is checked too: the router's ``$``
    also matches before a trailing newline, which would otherwise be dropped silently."""
    if not _inert(request.scope["path"]):
        raise _not_found(_MALFORMED_KEY)
    return normalize_key(key)


KeyDep = Annotated[str, Depends(path_key)]


async def _known(link: NatsLink, key: str) -> Watcher:
    watcher = await scheduler_watcher(link, key)
    if watcher is None:
        raise _not_found()
    return watcher


async def _deleting(kv: KeyValue, watcher: Watcher) -> bool:
    try:
        return await watch_being_deleted(kv, watcher)
    except TRANSIENT as exc:
        raise _unavailable() from exc


async def _refuse_if_deleted(kv: KeyValue, watcher: Watcher) -> None:
    if await _deleting(kv, watcher):
        raise ApiError(409, ErrorCode.CONFLICT, "watcher is being deleted")


@router.post(
    "/watchers",
    status_code=202,
    summary="Watch a room or user and record each of its lives",
    responses={
        **BAD_TARGET,
        **_conflict("A watcher with this key exists"),
        **JSON_BODY_RESPONSES,
        **UNAVAILABLE,
    },
)
async def create_watcher(
    body: WatcherCreate, link: LinkDep, kv: JobsDep, box: SecretsDep, settings: SettingsDep
) -> TaskAccepted:
    """The scheduler checks it every ``poll_interval`` seconds and records each live."""
    if (body.room_id is None) == (body.url is None):
        raise ApiError(400, ErrorCode.VALIDATION_ERROR, "give exactly one of room_id or url")
    room_id, unique_id = body.room_id, None
    try:
        key = watcher_key(body.room_id, body.url)
        if body.url is not None:
            target = parse_target(body.url)
            unique_id = target.value if target.kind == "user" else None
            room_id = target.value if target.kind == "room_id" else None
    except ValueError:
        msg = "url: names no TikTok user, room or short link (expected /@user or /@user/live)"
        raise ApiError(422, ErrorCode.VALIDATION_ERROR, msg) from None
    options = await prepare_options(body.options, body.options.output_template, box, settings)
    # A key is free again once its watcher is being deleted: the delete is queued first.
    existing = await scheduler_watcher(link, key)
    if existing is not None and not await _deleting(kv, existing):
        raise ApiError(409, ErrorCode.CONFLICT, f"a watcher with key {key} exists")
    assert link.bus is not None  # JobsDep checked the connection
    task_id = new_id()
    correlation_id = CORRELATION_ID.get() or new_id()
    doc = jobs.JobRequest(
        job_id=task_id,
        kind="watch",
        watcher_key=key,
        room_id=room_id,
        url=body.url,
        options=options,
        correlation_id=correlation_id,
    )
    event = WatchRequested(
        event_id=f"watch:{task_id}",
        correlation_id=correlation_id,
        task_id=task_id,
        key=key,
        room_id=room_id,
        url=body.url,
        unique_id=unique_id,
        poll_interval=body.poll_interval,
        options=options,
    )
    try:
        await jobs.create_request(kv, doc)
    except TRANSIENT as exc:
        raise _unavailable() from exc
    try:
        await link.bus.publish(event)
    except TRANSIENT as exc:
        # Never leave a PENDING watch job that the scheduler will never see.
        with contextlib.suppress(*TRANSIENT):
            await kv.delete(jobs.request_key(task_id))
        raise _unavailable() from exc
    return TaskAccepted(task_id=task_id)


@router.get(
    "/watchers",
    summary="List watchers, oldest first, one page at a time",
    responses=UNAVAILABLE,
)
async def get_watchers(
    link: LinkDep,
    page: Annotated[int, Query(ge=1, le=MAX_PAGE, description="1-based page number")] = 1,
    page_size: Annotated[int, Query(ge=1, le=500, description="Watchers per page")] = 50,
) -> WatcherList:
    """``total`` counts every watcher; a page past the end is empty."""
    if link.bus is None:
        raise _unavailable()
    try:
        reply = await list_watchers(link.bus.nc, page, page_size)
    except ServiceUnavailable as exc:
        msg = "the scheduler is not reachable"
        raise ApiError(503, ErrorCode.SERVICE_UNAVAILABLE, msg) from exc
    return WatcherList(
        items=[WatcherOut.from_watcher(w) for w in reply.items],
        page=page,
        page_size=page_size,
        total=reply.total,
    )


@router.get(
    "/watchers/{key:path}",
    summary="One watcher, by room id, @user or URL (URL-encoded)",
    responses={**NOT_FOUND, **UNAVAILABLE},
)
async def get_watcher(key: KeyDep, link: LinkDep) -> WatcherOut:
    """A user or live URL is read as its ``@user``; a proxy shows as true, never its value."""
    return WatcherOut.from_watcher(await _known(link, key))


@router.delete(
    "/watchers/{key:path}",
    summary="Stop watching; the recording in progress stops and its files are finalized",
    responses={**NOT_FOUND, **_conflict("The watcher is being deleted"), **UNAVAILABLE},
)
async def delete_watcher(key: KeyDep, link: LinkDep, kv: JobsDep) -> Ok:
    """Accepted now, applied by the scheduler moments later; 409 while already deleting."""
    watcher = await _known(link, key)
    await _refuse_if_deleted(kv, watcher)
    try:
        await end_watch(
            link,
            kv,
            key=watcher.key,
            task_id=watcher.task_id,
            current_job_id=watcher.current_job_id,
        )
    except TRANSIENT as exc:
        raise _unavailable() from exc
    return Ok()


@router.post(
    "/watchers/{key:path}/pause",
    summary="Stop polling a watcher (and its recording) until resumed",
    responses={
        **NOT_FOUND,
        **_conflict("The watcher is paused already, or being deleted"),
        **JSON_BODY_RESPONSES,
        **UNAVAILABLE,
    },
)
async def pause_watcher(key: KeyDep, link: LinkDep, kv: JobsDep) -> Ok:
    """The recording in progress stops cleanly; resume starts a new job for the same live."""
    watcher = await _known(link, key)
    await _refuse_if_deleted(kv, watcher)
    if watcher.status == "paused":
        raise ApiError(409, ErrorCode.CONFLICT, "watcher is paused already")
    assert link.bus is not None
    try:
        if watcher.current_job_id:
            await cancel_unfinished(kv, watcher.current_job_id)
        await link.bus.publish(
            WatchPaused(correlation_id=CORRELATION_ID.get() or new_id(), key=watcher.key)
        )
    except TRANSIENT as exc:
        raise _unavailable() from exc
    return Ok()


@router.post(
    "/watchers/{key:path}/resume",
    summary="Poll a paused watcher again",
    responses={
        **NOT_FOUND,
        **_conflict("The watcher is active already, or being deleted"),
        **JSON_BODY_RESPONSES,
        **UNAVAILABLE,
    },
)
async def resume_watcher(key: KeyDep, link: LinkDep, kv: JobsDep) -> Ok:
    """The scheduler checks the room again right away."""
    watcher = await _known(link, key)
    await _refuse_if_deleted(kv, watcher)
    if watcher.status != "paused":
        raise ApiError(409, ErrorCode.CONFLICT, "watcher is not paused")
    assert link.bus is not None
    try:
        await link.bus.publish(
            WatchResumed(correlation_id=CORRELATION_ID.get() or new_id(), key=watcher.key)
        )
    except TRANSIENT as exc:
        raise _unavailable() from exc
    return Ok()

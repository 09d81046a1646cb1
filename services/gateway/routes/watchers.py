"""Watchers: register, list, read, change, delete, pause and resume (the scheduler owns them).

Reads ask the scheduler over NATS request/reply; changes are JetStream commands it consumes
in order (``watch.requested``, ``watch.deleted``, ``watch.paused``, ``watch.resumed``,
``watch.updated``), so a
change is accepted here and applied by the scheduler moments later. A key sees and changes its
own watchers (admins: all); another key's is a 404, as one that does not exist.
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Path, Query, Request, Response

from services.gateway import commands, micro_client, watcher_bulk
from services.gateway.deps import (
    ApiKeyDep,
    CorrelationDep,
    JobsDep,
    LinkDep,
    SecretsDep,
    SettingsDep,
)
from services.gateway.errors import (
    BAD_TARGET,
    JSON_BODY_RESPONSES,
    SCHEDULER_UNAVAILABLE,
    ApiError,
    documented,
)
from services.gateway.idempotency import IdempotencyDep
from services.gateway.schemas import (
    BULK_MAX_ITEMS,
    Ok,
    TaskAccepted,
    WatcherBulk,
    WatcherBulkOut,
    WatcherCreate,
    WatcherExport,
    WatcherList,
    WatcherOut,
    WatcherUpdate,
)
from shared.errors import ErrorCode
from shared.watchers import watcher_key

router = APIRouter(tags=["watchers"])

MAX_KEY = 320  # a room id, @user, or a short-link URL (urls are at most 300 characters)
MAX_PAGE = 1_000_000
BULK_PATH = "/watchers/bulk"
# Room for 1,000 items of the largest kind (a URL, a proxy, a cookies path, a template).
BULK_MAX_BYTES = BULK_MAX_ITEMS * 2048

NOT_FOUND = documented(404, "No such watcher")


def _not_found(why: str = commands.NO_WATCHER) -> ApiError:
    return ApiError(404, ErrorCode.NOT_FOUND, why)


# A key that cannot exist is a 404 (it names no watcher), with the reason it cannot.
_MALFORMED_KEY = "no such watcher: key must be a room id, @user, or a TikTok user/live URL"


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


async def path_key(
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


@router.post(
    "/watchers",
    status_code=202,
    summary="Watch a room or user and record each of its lives",
    responses={
        **BAD_TARGET,
        **documented(
            409,
            "A watcher with this key exists, or the Idempotency-Key was used for another request",
        ),
        **JSON_BODY_RESPONSES,
        **SCHEDULER_UNAVAILABLE,
    },
)
async def create_watcher(
    body: WatcherCreate,
    link: LinkDep,
    store: JobsDep,
    box: SecretsDep,
    settings: SettingsDep,
    correlation_id: CorrelationDep,
    idempotency: IdempotencyDep,
    api_key: ApiKeyDep,
) -> TaskAccepted:
    """The scheduler checks it every ``poll_interval`` seconds and records each live. The
    watcher and its jobs are the API key's. A room or user is watched once in a deployment:
    409 when any key watches it already. With an ``Idempotency-Key``, a retry answers the
    watch job the first request made."""
    if (body.room_id is None) == (body.url is None):
        raise ApiError(400, ErrorCode.VALIDATION_ERROR, "give exactly one of room_id or url")
    once = idempotency.once("POST /watchers", body) if idempotency else None
    if once and (earlier := await once.earlier(link.require_bus(), store)):
        return TaskAccepted(task_id=earlier)
    task_id = await commands.create_watcher(
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


@router.post(
    BULK_PATH,
    status_code=202,
    summary="Watch up to 1,000 rooms or users in one request, each with its own result",
    responses={
        **documented(413, f"Request body larger than {BULK_MAX_BYTES} bytes"),
        **JSON_BODY_RESPONSES,
        **SCHEDULER_UNAVAILABLE,
    },
)
async def create_watchers(
    body: WatcherBulk,
    link: LinkDep,
    store: JobsDep,
    box: SecretsDep,
    settings: SettingsDep,
    correlation_id: CorrelationDep,
    api_key: ApiKeyDep,
) -> WatcherBulkOut:
    """Each item is a POST /watchers body, checked and made as that route makes one: its
    result has its status (202 made, 409 watched already, 422 invalid, 503 not reachable)
    and error_code. Not all-or-nothing: the good items are made, whatever the others."""
    link.require_bus()  # NATS away: one 503 for the request, not one per item

    async def create(item: WatcherCreate) -> str:
        return await commands.create_watcher(
            link,
            store,
            item,
            owner=api_key.name,
            secrets=box,
            cookies_dir=settings.cookies_dir,
            allow_private_proxies=settings.allow_private_proxies,
            correlation_id=correlation_id,
        )

    results = await watcher_bulk.create_many(body.items, create)
    created = sum(r.status == 202 for r in results)
    return WatcherBulkOut(results=results, created=created, failed=len(results) - created)


@router.get(
    "/watchers",
    summary="List watchers, oldest first, one page at a time; or export them all",
    responses={
        200: {
            "description": "A page; with format, every watcher of the key as POST bodies",
            "content": {"text/csv": {"schema": {"type": "string"}}},
        },
        **SCHEDULER_UNAVAILABLE,
    },
    response_model=WatcherList | WatcherExport,
)
async def get_watchers(
    link: LinkDep,
    api_key: ApiKeyDep,
    page: Annotated[int, Query(ge=1, le=MAX_PAGE, description="1-based page number")] = 1,
    page_size: Annotated[int, Query(ge=1, le=500, description="Watchers per page")] = 50,
    export: Annotated[
        Literal["csv", "json"] | None,
        Query(
            alias="format",
            description="Export every watcher of the key (no paging) as POST /watchers bodies: "
            "json is a POST /watchers/bulk body, csv one row each; never a proxy",
        ),
    ] = None,
) -> WatcherList | WatcherExport | Response:
    """The API key's own watchers (an admin's: all); ``total`` counts them; a page past the
    end is empty."""
    if export is not None:
        bodies = [watcher_bulk.as_create(w) async for w in watcher_bulk.watchers_of(link, api_key)]
        if export == "json":
            return WatcherExport(items=bodies)
        return Response(
            watcher_bulk.to_csv(bodies),
            media_type="text/csv",
            headers={"Content-Disposition": 'attachment; filename="watchers.csv"'},
        )
    reply = await micro_client.list_watchers(
        link.require_bus().nc, page, page_size, owner=api_key.owner_filter
    )
    return WatcherList(
        # The scheduler filtered already; checked again so that one which does not know owners
        # (an older release, mid-upgrade) shows no one's watchers but an admin's.
        items=[WatcherOut.from_watcher(w) for w in reply.items if api_key.sees(w.owner)],
        page=page,
        page_size=page_size,
        total=reply.total,
    )


@router.get(
    "/watchers/{key:path}",
    summary="One watcher, by room id, @user or URL (URL-encoded)",
    responses={**NOT_FOUND, **SCHEDULER_UNAVAILABLE},
)
async def get_watcher(key: KeyDep, link: LinkDep, api_key: ApiKeyDep) -> WatcherOut:
    """A user or live URL is read as its ``@user``; a proxy shows as true, never its value."""
    return WatcherOut.from_watcher(await commands.read_watcher(link, key, caller=api_key))


@router.patch(
    "/watchers/{key:path}",
    status_code=202,
    summary="Change a watcher's interval, options or pause; its recording in progress goes on",
    responses={
        **NOT_FOUND,
        **documented(409, "The watcher is being deleted"),
        **JSON_BODY_RESPONSES,
        **SCHEDULER_UNAVAILABLE,
    },
)
async def update_watcher(
    key: KeyDep,
    body: WatcherUpdate,
    link: LinkDep,
    store: JobsDep,
    box: SecretsDep,
    settings: SettingsDep,
    api_key: ApiKeyDep,
    correlation_id: CorrelationDep,
) -> WatcherOut:
    """Fields sent replace the watcher's (checked as on POST /watchers), the rest is kept;
    applied by the scheduler moments later, from its next check on: a shorter interval counts
    from the last check. The answer is the watcher as it will be. ``paused: true`` stops the
    checks but, unlike POST .../pause, lets the recording in progress finish."""
    watcher = await commands.update_watcher(
        link,
        store,
        key,
        body,
        caller=api_key,
        secrets=box,
        cookies_dir=settings.cookies_dir,
        allow_private_proxies=settings.allow_private_proxies,
        correlation_id=correlation_id,
    )
    return WatcherOut.from_watcher(watcher)


@router.delete(
    "/watchers/{key:path}",
    summary="Stop watching; the recording in progress stops and its files are finalized",
    responses={
        **NOT_FOUND,
        **documented(409, "The watcher is being deleted"),
        **SCHEDULER_UNAVAILABLE,
    },
)
async def delete_watcher(
    key: KeyDep, link: LinkDep, store: JobsDep, api_key: ApiKeyDep, correlation_id: CorrelationDep
) -> Ok:
    """Accepted now, applied by the scheduler moments later; 409 while already deleting."""
    await commands.delete_watcher(link, store, key, caller=api_key, correlation_id=correlation_id)
    return Ok()


@router.post(
    "/watchers/{key:path}/pause",
    summary="Stop polling a watcher (and its recording) until resumed",
    responses={
        **NOT_FOUND,
        **documented(409, "The watcher is paused already, or being deleted"),
        **JSON_BODY_RESPONSES,
        **SCHEDULER_UNAVAILABLE,
    },
)
async def pause_watcher(
    key: KeyDep, link: LinkDep, store: JobsDep, api_key: ApiKeyDep, correlation_id: CorrelationDep
) -> Ok:
    """The recording in progress stops cleanly; resume starts a new job for the same live."""
    await commands.pause_watcher(link, store, key, caller=api_key, correlation_id=correlation_id)
    return Ok()


@router.post(
    "/watchers/{key:path}/resume",
    summary="Poll a paused watcher again",
    responses={
        **NOT_FOUND,
        **documented(409, "The watcher is active already, or being deleted"),
        **JSON_BODY_RESPONSES,
        **SCHEDULER_UNAVAILABLE,
    },
)
async def resume_watcher(
    key: KeyDep, link: LinkDep, store: JobsDep, api_key: ApiKeyDep, correlation_id: CorrelationDep
) -> Ok:
    """The scheduler checks the room again right away."""
    await commands.resume_watcher(link, store, key, caller=api_key, correlation_id=correlation_id)
    return Ok()

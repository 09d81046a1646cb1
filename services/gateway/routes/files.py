"""GET /files (the indexer's index, newest first: a key's own files, an admin's all) and
POST /files/rebuild (rescan the disk: admins only)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query

from services.gateway import commands
from services.gateway.deps import ApiKeyDep, LinkDep, require_admin
from services.gateway.errors import ADMIN_ONLY, JSON_BODY_RESPONSES, ApiError, documented
from services.gateway.micro_client import query_files
from services.gateway.schemas import FileItem, FileList, RebuildResult, S3Object
from services.gateway.validators import IsoDatetime, RoomId, check_room_id, check_target_url
from shared import files
from shared.errors import ErrorCode
from shared.tiktok.targets import parse_target

router = APIRouter(tags=["files"])

MAX_PAGE = 1_000_000
UNAVAILABLE = documented(503, "NATS or the indexer is not reachable")


def _invalid(message: str) -> ApiError:
    return ApiError(422, ErrorCode.VALIDATION_ERROR, message)


def _utc(value: datetime | None) -> datetime | None:
    """Times without an offset are read as UTC, like every time this API returns."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


def build_query(
    *,
    owner: str | None,
    room_id: str | None,
    url: str | None,
    job_id: str | None,
    since: datetime | None,
    until: datetime | None,
    page: int,
    page_size: int,
) -> files.FileQuery:
    """The indexer query for the parameters; 422 for a value that cannot match anything."""
    try:
        room = check_room_id(room_id) if room_id is not None else None
        target = check_target_url(url) if url is not None else None
    except ValueError as exc:
        raise _invalid(str(exc)) from None
    since, until = _utc(since), _utc(until)
    if since is not None and until is not None and since > until:
        msg = "from must not be after to"
        raise _invalid(msg)
    user = None
    if target is not None:
        parsed = parse_target(target)
        # A user or live URL names the host: files of all their lives match, however asked.
        if parsed.kind == "user":
            user, target = parsed.value, None
    return files.FileQuery(
        owner=owner,
        room_id=room,
        user=user,
        url=target,
        job_id=job_id,
        since=since,
        until=until,
        page=page,
        page_size=page_size,
    )


@router.get(
    "/files",
    summary="Recorded files, newest first, filtered and one page at a time",
    responses=UNAVAILABLE,
)
async def list_files(
    link: LinkDep,
    api_key: ApiKeyDep,
    room_id: Annotated[RoomId | None, Query(description="Files of this room id")] = None,
    url: Annotated[
        str | None,
        Query(description="Files of this user (@user, profile or live URL) or of this URL"),
    ] = None,
    job_id: Annotated[
        str | None, Query(max_length=64, pattern=r"^[A-Za-z0-9-]+$", description="Of one job")
    ] = None,
    since: Annotated[
        IsoDatetime | None,
        Query(alias="from", description="Written at or after (ISO 8601; no offset = UTC)"),
    ] = None,
    until: Annotated[
        IsoDatetime | None,
        Query(alias="to", description="Written at or before (ISO 8601; no offset = UTC)"),
    ] = None,
    page: Annotated[int, Query(ge=1, le=MAX_PAGE, description="1-based page number")] = 1,
    page_size: Annotated[
        int, Query(ge=1, le=files.MAX_PAGE_SIZE, description="Files per page")
    ] = 50,
) -> FileList:
    """The API key's own files (an admin's: all). ``total`` counts every match; pages are
    stable while no file is added or removed.

    ``from``/``to`` filter on the time a file was last written (its ``mtime``).
    """
    query = build_query(
        owner=api_key.owner_filter,
        room_id=room_id,
        url=url,
        job_id=job_id,
        since=since,
        until=until,
        page=page,
        page_size=page_size,
    )
    result = await query_files(link.require_bus().nc, query)
    return FileList(
        # The indexer filtered already; checked again so that one which does not know owners
        # (an older release, mid-upgrade) shows no one's files but an admin's.
        items=[_item(f) for f in result.items if api_key.sees(f.owner)],
        page=result.page,
        page_size=result.page_size,
        total=result.total,
    )


@router.post(
    "/files/rebuild",
    summary="Rescan RECORDINGS_DIR: add files the index misses, drop those gone (admins)",
    responses={**ADMIN_ONLY, **JSON_BODY_RESPONSES, **UNAVAILABLE},
    dependencies=[Depends(require_admin)],
)
async def rebuild(link: LinkDep) -> RebuildResult:
    reply = await commands.rebuild_file_index(link)
    return RebuildResult(
        scanned=reply.scanned, added=reply.added, updated=reply.updated, removed=reply.removed
    )


def _item(f: files.IndexedFile) -> FileItem:
    return FileItem(
        name=f.name,
        size=f.size,
        mtime=f.mtime,
        path=f.path,
        room_id=f.room_id,
        job_id=f.job_id,
        s3=S3Object(bucket=f.s3.bucket, key=f.s3.key) if f.s3 else None,
        local=f.local,
        duration_s=f.duration_s,
        user=f.user,
        url=f.url,
        title=f.title,
        started_at=f.started_at,
        owner=f.owner,
    )

"""GET /files (the indexer's index, newest first: a key's own files, an admin's all), a file's
content and thumbnail (GET/HEAD, local with Range, else a presigned S3 URL), and
POST /files/rebuild (rescan the disk: admins only)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import PurePosixPath
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import RedirectResponse, Response

from services.gateway import commands, downloads, presign
from services.gateway.api_keys import ApiKey
from services.gateway.deps import ApiKeyDep, LinkDep, SettingsDep, require_admin
from services.gateway.errors import ADMIN_ONLY, JSON_BODY_RESPONSES, ApiError, documented
from services.gateway.micro_client import get_file, query_files
from services.gateway.schemas import FileItem, FileList, RebuildResult, S3Object
from services.gateway.settings import GatewaySettings
from services.gateway.validators import IsoDatetime, RoomId, check_room_id, check_target_url
from shared import files
from shared.errors import ErrorCode
from shared.thumbnails import thumbnail_key, thumbnail_path
from shared.tiktok.targets import parse_target

router = APIRouter(tags=["files"])

MAX_PAGE = 1_000_000
UNAVAILABLE = documented(503, "NATS or the indexer is not reachable")


FileId = Annotated[
    int, Path(ge=1, le=2**63 - 1, description="The file's id (``id`` in GET /files)")
]
_BINARY = {"schema": {"type": "string", "format": "binary"}}
_LOCATION = {"Location": {"description": "The presigned URL", "schema": {"type": "string"}}}
_FETCHED: dict[int | str, dict[str, object]] = {
    302: {
        "description": "Not readable here, but in S3: a presigned URL, valid "
        "DOWNLOAD_URL_EXPIRY seconds",
        "headers": _LOCATION,
    },
    **documented(404, "No such file (or another key's), or it has no thumbnail"),
    **documented(409, "Its local copy is not readable from this gateway and it has no S3 copy"),
    **UNAVAILABLE,
}
CONTENT_RESPONSES: dict[int | str, dict[str, object]] = {
    200: {
        "description": "The whole file",
        "content": dict.fromkeys((*downloads.MEDIA_TYPES.values(), downloads.OCTETS), _BINARY),
    },
    206: {
        "description": "The one range asked for (Content-Range says which)",
        "content": dict.fromkeys((*downloads.MEDIA_TYPES.values(), downloads.OCTETS), _BINARY),
    },
    **_FETCHED,
    **documented(416, "The range is past the end of the file (Content-Range: bytes */size)"),
}
THUMBNAIL_RESPONSES: dict[int | str, dict[str, object]] = {
    200: {"description": "The JPEG", "content": {"image/jpeg": _BINARY}},
    206: {"description": "The one range asked for", "content": {"image/jpeg": _BINARY}},
    **_FETCHED,
    **documented(416, "The range is past the end of the file (Content-Range: bytes */size)"),
}


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


@router.get(
    "/files/{file_id}/content",
    summary="Download a file: local with Range (206), else a presigned S3 URL (302)",
    response_class=Response,
    responses=CONTENT_RESPONSES,
)
async def file_content(
    file_id: FileId, request: Request, link: LinkDep, api_key: ApiKeyDep, settings: SettingsDep
) -> Response:
    """The file's bytes from RECORDINGS_DIR, whole or one ``Range`` (``bytes=0-99``,
    ``bytes=100-``, ``bytes=-100``; several ranges: the whole file); when this gateway cannot
    read it but S3 holds it, a 302 to a presigned URL."""
    found = await _owned(link, api_key, file_id)
    return _fetch(request, settings, found, found.path, _s3_key(found), head=False)


@router.head(
    "/files/{file_id}/content",
    summary="A download's headers (size, ranges, type) without its body",
    response_class=Response,
    responses=CONTENT_RESPONSES,
)
async def file_content_head(
    file_id: FileId, request: Request, link: LinkDep, api_key: ApiKeyDep, settings: SettingsDep
) -> Response:
    found = await _owned(link, api_key, file_id)
    return _fetch(request, settings, found, found.path, _s3_key(found), head=True)


@router.get(
    "/files/{file_id}/thumbnail",
    summary="A file's thumbnail (JPEG, a keyframe from about 10 % in)",
    response_class=Response,
    responses=THUMBNAIL_RESPONSES,
)
async def file_thumbnail(
    file_id: FileId, request: Request, link: LinkDep, api_key: ApiKeyDep, settings: SettingsDep
) -> Response:
    """404 while it has none (``thumbnail: false`` in GET /files)."""
    found = await _owned(link, api_key, file_id)
    if not found.thumbnail:
        raise ApiError(404, ErrorCode.NOT_FOUND, f"file {file_id} has no thumbnail")
    key = _s3_key(found)
    return _fetch(
        request,
        settings,
        found,
        thumbnail_path(found.path),
        thumbnail_key(key) if key else None,
        head=False,
        attachment=False,
    )


async def _owned(link: LinkDep, api_key: ApiKey, file_id: int) -> files.IndexedFile:
    """The file, if the key may see it; else 404, the same as for a file that does not exist."""
    found = await get_file(link.require_bus().nc, file_id)
    if found is None or not api_key.sees(found.owner):
        raise ApiError(404, ErrorCode.NOT_FOUND, f"no file {file_id}")
    return found


def _s3_key(f: files.IndexedFile) -> str | None:
    return f.s3.key if f.s3 else None


def _fetch(
    request: Request,
    settings: GatewaySettings,
    f: files.IndexedFile,
    relative: str,
    s3_key: str | None,
    *,
    head: bool,
    attachment: bool = True,
) -> Response:
    """The local copy of ``relative`` if this gateway reads it, else a redirect to S3."""
    name = PurePosixPath(relative).name
    if settings.files_local:
        # Blocking, but one open and a few stats: cheaper than a thread hop.
        opened = downloads.open_under(settings.recordings_dir, relative)
        if opened is not None:
            return downloads.respond(
                opened,
                name=name,
                range_header=request.headers.get("range"),
                if_range=request.headers.get("if-range"),
                head=head,
                attachment=attachment,
            )
    if f.s3 is None or s3_key is None:
        msg = (
            f"file {f.id} is not readable from this gateway and has no S3 copy "
            "(see the runbook: downloads)"
        )
        raise ApiError(409, ErrorCode.CONFLICT, msg)
    try:
        url = presign.presigned_get(
            settings.s3_endpoint_url,
            f.s3.bucket,
            s3_key,
            expires_in=settings.download_url_expiry,
            method="head_object" if head else "get_object",
            disposition=downloads.content_disposition(name, attachment=attachment),
        )
    except presign.NotConfigured as exc:
        raise ApiError(503, ErrorCode.SERVICE_UNAVAILABLE, str(exc)) from None
    # Never cached: the URL expires, and it is this key's alone.
    return RedirectResponse(url, status_code=302, headers={"Cache-Control": "no-store"})


def _item(f: files.IndexedFile) -> FileItem:
    return FileItem(
        id=f.id,
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
        thumbnail=f.thumbnail,
    )

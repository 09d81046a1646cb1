"""What the indexer does with each event it consumes; plain functions over :class:`IndexerDeps`.

Every handler is idempotent (a redelivery writes the same rows again) and tolerates order:
upload.done before recording.finished inserts the row, which the later event completes.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from services.indexer.jobs import JobReader, owner_of
from services.indexer.schema import from_us
from services.indexer.store import IndexStore
from shared.events import DeleteReason, Event, FileDeleted, RecordingFinished, UploadDone
from shared.files import IndexedFile, S3Location
from shared.logging import get_logger
from shared.paths import inside, normalize, regular_file
from shared.thumbnails import Thumbnails
from shared.tiktok.targets import parse_target

log = get_logger(__name__)


@dataclass(frozen=True)
class IndexerDeps:
    """What the handlers need: the index, the folder the paths are relative to, the job
    documents (a file's owner is its job's), and the thumbnail maker (None: no ffmpeg)."""

    store: IndexStore
    root: Path
    jobs: JobReader
    thumbnails: Thumbnails | None = None


async def on_recording_finished(event: RecordingFinished, deps: IndexerDeps) -> None:
    """Index every file of a finished job, sized and dated from the disk when it is there,
    with its thumbnail (made now: the file is complete, and still on disk)."""
    paths = _accepted([f.path for f in event.files], event)
    if not paths:
        return
    on_disk = await asyncio.to_thread(_stat_all, deps.root, list(paths.values()))
    user = event.unique_id.removeprefix("@") if event.unique_id else _user_of(event.url)
    owner = await owner_of(deps.jobs, event.job_id)
    rows = []
    for f in event.files:
        path = paths.get(f.path)
        if path is None or path not in on_disk:
            continue
        found = on_disk[path]
        size, mtime = found if found else (f.size, None)
        thumbnail = found is not None and await _thumbnail(deps, path, f.duration_s)
        row = IndexedFile(
            name=PurePosixPath(path).name,
            path=path,
            size=size,
            mtime=from_us(mtime) if mtime is not None else event.ended_at,
            duration_s=f.duration_s,
            room_id=event.room_id,
            user=user,
            url=event.url,
            title=event.title,
            job_id=event.job_id,
            watcher_key=event.watcher_key,
            started_at=event.started_at,
            upload_wanted=event.upload_s3,
            owner=owner,
            thumbnail=thumbnail,
        )
        rows.append((row, found is not None))
    await deps.store.upsert_finished(rows)
    log.info("indexer.indexed", job_id=event.job_id, files=len(rows))


async def on_upload_done(event: UploadDone, deps: IndexerDeps) -> None:
    """Note the S3 copy of each file (and that the local one is gone, if the uploader says)."""
    paths = _accepted([f.path for f in event.files], event)
    if not paths:
        return
    on_disk = await asyncio.to_thread(_stat_all, deps.root, list(paths.values()))
    owner = await owner_of(deps.jobs, event.job_id)
    rows = []
    for f in event.files:
        path = paths.get(f.path)
        if path is None or path not in on_disk:
            continue
        found = None if f.local_deleted else on_disk[path]
        # Only inserted when recording.finished has not been indexed yet; it fills the rest.
        row = IndexedFile(
            name=PurePosixPath(path).name,
            path=path,
            size=found[0] if found else f.size,
            mtime=from_us(found[1]) if found else event.occurred_at,
            job_id=event.job_id,
            upload_wanted=True,
            s3=S3Location(bucket=f.bucket, key=f.key, etag=f.etag),
            local=found is not None,
            owner=owner,
        )
        rows.append((row, f.local_deleted))
    await deps.store.set_uploaded(rows)
    log.info("indexer.uploaded", job_id=event.job_id, files=len(rows))


async def on_file_deleted(event: FileDeleted, deps: IndexerDeps) -> None:
    """A local file is gone: keep its row (local=False) if S3 has a copy, else drop it."""
    path = normalize(event.path)
    if path is None:
        log.warning("indexer.path_refused", path=event.path)
        return
    # The uploader deletes only what it has confirmed in S3, maybe before upload.done is seen.
    await deps.store.forget_local([path], in_s3=event.reason == DeleteReason.UPLOADED)


async def _thumbnail(deps: IndexerDeps, path: str, duration_s: float | None) -> bool:
    """Whether the file has its thumbnail now; one that cannot be made is logged, not retried:
    the file is indexed all the same."""
    if deps.thumbnails is None:
        return False
    made = await deps.thumbnails.make(path, duration_s) is not None
    if not made:
        log.warning("indexer.thumbnail_failed", path=path)
    return made


def _accepted(paths: list[str], event: Event) -> dict[str, str]:
    """{path as sent: path as indexed} for the paths that stay inside RECORDINGS_DIR."""
    accepted = {}
    for path in paths:
        norm = normalize(path)
        if norm is None:
            log.warning("indexer.path_refused", path=path, event_type=event.type_name())
            continue
        accepted[path] = norm
    return accepted


def _stat_all(root: Path, paths: list[str]) -> dict[str, tuple[int, int] | None]:
    """{path: (size, mtime µs) if a regular file is there, else None} for the paths whose
    folder resolves inside ``root`` (a symlinked folder leading out is refused)."""
    found: dict[str, tuple[int, int] | None] = {}
    for path in paths:
        full = inside(root, path)
        if full is None:
            log.warning("indexer.path_refused", path=path)
            continue
        found[path] = regular_file(full)
    return found


def _user_of(url: str | None) -> str | None:
    """The host's unique id when ``url`` names a user (@name, profile or live URL)."""
    if not url:
        return None
    try:
        target = parse_target(url)
    except ValueError:
        return None
    return target.value if target.kind == "user" else None

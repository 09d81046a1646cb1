"""A file's thumbnail beside it in the bucket (``<key>.jpg``), once the file is confirmed there."""

from __future__ import annotations

import asyncio

from services.uploader.files import S3_FAILURES, Objects, Stored, describe, size_of
from shared.logging import get_logger
from shared.thumbnails import Thumbnails, thumbnail_key

log = get_logger(__name__)


async def upload_thumbnail(store: Objects, thumbnails: Thumbnails, stored: Stored) -> bool:
    """Put the thumbnail of ``stored`` beside it (made first if the indexer has not yet).

    Best effort: the job's deliverable is the recording, so a thumbnail that cannot be made
    or uploaded is logged and the job goes on (the index still lists the local one).
    """
    if not stored.on_disk:
        return False  # removed by an earlier delivery: nothing to make it from
    planned = stored.planned
    path = await thumbnails.make(planned.relative, planned.recorded.duration_s)
    if path is None:
        log.warning("uploader.thumbnail_failed", path=planned.relative)
        return False
    key = thumbnail_key(planned.key)
    try:
        size = await asyncio.to_thread(size_of, path)
        if size is None:
            return False
        remote = await store.head(key)
        if remote is None or remote.size != size:
            await store.upload(path, key, size, _no_progress)
    except S3_FAILURES as exc:
        log.warning("uploader.thumbnail_not_uploaded", key=key, error=describe(exc))
        return False
    log.info("uploader.thumbnail_uploaded", key=key)
    return True


async def _no_progress(_n: int) -> None:
    """A thumbnail's bytes are not the job's: they do not move its progress."""

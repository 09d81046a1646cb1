"""Rebuild the index from RECORDINGS_DIR: add files it misses, refresh changed ones, drop gone ones.

Finished recordings are ``.mp4``, ``.mkv`` or ``.ts`` files (options.format), or ``.flv`` (the
flv format, or a remux that failed). A recording in progress writes a raw ``.flv`` (every
second) and a temp file while remuxing, so a ``.flv`` counts only without a remuxed sibling and
once untouched for :data:`FLV_SETTLED` seconds.
Metadata that an event gave (job, user, title, upload) is never overwritten by a scan.
"""

from __future__ import annotations

import asyncio
import os
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from services.indexer.jobs import JobGuard
from services.indexer.schema import from_us
from services.indexer.store import IndexStore
from shared.files import IndexedFile, RebuildReply, S3Location
from shared.logging import get_logger
from shared.paths import inside

log = get_logger(__name__)

FLV_SETTLED = 300.0  # seconds without a write before a lone .flv counts as finished
# The containers a raw segment is remuxed into (the recorder's options.format).
REMUXED = (".mp4", ".mkv", ".ts")
_BATCH = 500


@dataclass
class Found:
    """What a walk of the tree saw: indexable files, and every regular file (paths)."""

    files: dict[str, tuple[int, int]] = field(default_factory=dict)  # path: (size, mtime µs)
    present: set[str] = field(default_factory=set)


def walk(root: Path, now: float) -> Found:
    """Walk ``root`` (blocking): hidden entries skipped, symlinks not followed."""
    found = Found()
    if not root.is_dir():
        return found
    stack = [(root, "")]
    while stack:
        folder, prefix = stack.pop()
        try:
            with os.scandir(folder) as it:
                entries = [e for e in it if not e.name.startswith(".")]
        except OSError as exc:
            log.warning("indexer.scan_unreadable", folder=str(folder), error=str(exc))
            continue
        names = {e.name for e in entries}
        for entry in entries:
            rel = f"{prefix}{entry.name}"
            try:
                st = entry.stat(follow_symlinks=False)
                rel.encode()  # a name that is not UTF-8 cannot be indexed (nor served)
            except (OSError, UnicodeEncodeError):
                continue
            if stat.S_ISDIR(st.st_mode):
                stack.append((Path(entry.path), f"{rel}/"))
                continue
            if not stat.S_ISREG(st.st_mode):
                continue
            found.present.add(rel)
            stem = entry.name.removesuffix(".flv")
            if entry.name.endswith(REMUXED) or (
                entry.name.endswith(".flv")
                and not any(stem + suffix in names for suffix in REMUXED)
                and now - st.st_mtime >= FLV_SETTLED
            ):
                found.files[rel] = (st.st_size, st.st_mtime_ns // 1000)
    return found


def room_of(path: str) -> str | None:
    """The room id of the default template ``{room_id}/...``: an all-digit first folder."""
    parts = PurePosixPath(path).parts
    first = parts[0] if len(parts) > 1 else ""
    return first if first.isascii() and first.isdigit() else None


async def rebuild(store: IndexStore, root: Path, guard: JobGuard | None = None) -> RebuildReply:
    """Reconcile the index with the disk under ``root``; ``guard`` names the jobs of files
    found without one, so retention keeps those a job still records or must upload."""
    started = time.monotonic()
    found = await asyncio.to_thread(walk, root, time.time())
    added = updated = removed = 0
    paths = sorted(found.files)
    for start in range(0, len(paths), _BATCH):
        batch = paths[start : start + _BATCH]
        known = await store.known(batch)
        new, changed = [], []
        for path in batch:
            size, mtime = found.files[path]
            row = known.get(path)
            if row is None:
                new.append(_scanned(path, size, mtime))
            elif row != (size, mtime, True):
                changed.append((path, size, mtime))
        added += await store.bulk_insert(new)
        updated += await store.refresh(changed)
    after = 0
    while rows := await store.local_after(after, _BATCH):
        after = rows[-1][0]
        missing = [path for _, path in rows if path not in found.present]
        if missing:
            # Check again: a recording may have finished (and been indexed) since the walk.
            gone = await asyncio.to_thread(_gone, root, missing)
            removed += await store.forget_local(gone) if gone else 0
    if guard is not None:
        try:
            await _attach(store, guard, paths)
        except Exception as exc:
            # The job documents are unreachable: retention asks them again before deleting.
            log.warning("indexer.rebuild_jobs_unknown", error=repr(exc))
    reply = RebuildReply(scanned=len(paths), added=added, updated=updated, removed=removed)
    log.info(
        "indexer.rebuilt",
        scanned=reply.scanned,
        added=added,
        updated=updated,
        removed=removed,
        seconds=round(time.monotonic() - started, 3),
    )
    return reply


async def _attach(store: IndexStore, guard: JobGuard, paths: list[str]) -> None:
    """Give the files found without a job the job that recorded them, its owner, its upload
    wish and, when its upload part lists them, their S3 copy (whose upload.done was seen by a
    lost index, or has yet to come)."""
    for start in range(0, len(paths), _BATCH):
        owners = await guard.owners(await store.unowned(paths[start : start + _BATCH]))
        rows = []
        for path, job_id in owners.items():
            view = await guard.view(job_id)
            up = view.uploaded.get(path)
            s3 = S3Location(bucket=up.bucket, key=up.key, etag=up.etag) if up else None
            rows.append((path, job_id, view.wants_upload, s3, view.owner))
        await store.attach(rows)


def _scanned(path: str, size: int, mtime: int) -> IndexedFile:
    return IndexedFile(
        name=PurePosixPath(path).name,
        path=path,
        size=size,
        mtime=from_us(mtime),
        room_id=room_of(path),
    )


def _gone(root: Path, paths: list[str]) -> list[str]:
    gone = []
    for path in paths:
        full = inside(root, path)
        if full is None or not os.path.lexists(full):
            gone.append(path)
    return gone

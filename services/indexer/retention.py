"""Retention: delete local recordings by age, per-room quota and disk floor; publish file.deleted.

Each pass, in order: files older than RETENTION_DAYS; then, per room over QUOTA_BYTES_PER_ROOM,
its oldest files until it fits; then, while the disk has less than DISK_FREE_MIN_BYTES free,
the oldest files anywhere. With RETENTION_UPLOADED_FIRST, files safe in S3 go before the others.

Only indexed files are candidates, so a recording in progress (not indexed until it finishes)
is never one; a file written in the last :data:`RECENT_GUARD` seconds is skipped anyway, and a
file whose job asked for an upload stays until its S3 copy exists. The index may not know a
file's job or its wish (a rebuild found it): before deleting a file not in S3, the job
documents are asked whether its job is still running or still owes the upload (jobs.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import shutil
import stat
import time
from collections import Counter
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from services.indexer import metrics
from services.indexer.jobs import JobGuard, JobReader
from services.indexer.schema import to_us
from services.indexer.settings import IndexerSettings
from services.indexer.store import Candidate, IndexStore
from shared.events import Event, FileDeleted
from shared.logging import get_logger
from shared.paths import inside

log = get_logger(__name__)

RECENT_GUARD = 60.0  # seconds: a file written this recently is never deleted
CATCH_UP_RETRY = 5.0  # seconds between checks while the index is behind its events
# ... for at most this long: a message that keeps failing must not stop retention for good.
CATCH_UP_MAX = 600.0
_BATCH = 100
_US_PER_DAY = 86_400_000_000

Reason = Literal["retention", "quota", "disk_floor"]
Outcome = Literal["deleted", "missing", "recent", "refused", "held"]


def free_bytes(root: Path) -> int:
    return shutil.disk_usage(root).free


async def _always() -> bool:
    return True


@dataclass(frozen=True)
class RetentionDeps:
    store: IndexStore
    root: Path
    settings: IndexerSettings
    publish: Callable[[Event], Awaitable[Any]]
    # True when the index has consumed every event published so far: a pass on an index that
    # lags (say, rebuilt from disk before the recording.finished saying "upload") could
    # delete a file that is waiting for its upload.
    caught_up: Callable[[], Awaitable[bool]] = _always
    jobs: JobReader | None = None  # the job documents; None: the index's flags alone decide
    free_bytes: Callable[[Path], int] = free_bytes
    clock: Callable[[], float] = time.time


class Retention:
    """Runs passes every RETENTION_INTERVAL (one at once); remembers what the last one did."""

    def __init__(self, deps: RetentionDeps) -> None:
        self.deps = deps
        self.passes = 0
        self.last_deleted: dict[str, int] = {}
        self.waiting_for_events = False  # a pass is held back until the index catches up
        self._lock = asyncio.Lock()
        self._guard: JobGuard | None = None

    async def run(self, stop: asyncio.Event) -> None:
        """Pass at once, then every interval, until ``stop``; a failed pass is logged."""
        loop = asyncio.get_running_loop()
        behind_since: float | None = None
        while not stop.is_set():
            wait = self.deps.settings.retention_interval
            try:
                if await self.deps.caught_up():
                    behind_since = None
                    self.waiting_for_events = False
                    await self.run_pass()
                elif behind_since is not None and loop.time() - behind_since > CATCH_UP_MAX:
                    log.warning("indexer.retention_behind", seconds=CATCH_UP_MAX)
                    behind_since = None
                    self.waiting_for_events = False
                    await self.run_pass()
                else:
                    if behind_since is None:
                        behind_since = loop.time()
                        log.info("indexer.retention_deferred", reason="index behind its events")
                    self.waiting_for_events = True
                    await self._measure()  # the disk gauges stay fresh while waiting
                    wait = min(wait, CATCH_UP_RETRY)
            except Exception:
                log.exception("indexer.retention_failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), wait)

    async def run_pass(self) -> dict[str, int]:
        """One pass of the three rules; files deleted, by reason."""
        async with self._lock:
            # Job documents read afresh each pass, each job once.
            self._guard = JobGuard(self.deps.jobs) if self.deps.jobs is not None else None
            s = self.deps.settings
            deleted: Counter[str] = Counter()
            if s.retention_days > 0:
                cutoff = to_us(self._now()) - int(s.retention_days * _US_PER_DAY)
                async with contextlib.aclosing(self._candidates(before_us=cutoff)) as found:
                    async for c in found:
                        deleted["retention"] += await self._delete(c, "retention") == "deleted"
            if s.quota_bytes_per_room > 0:
                await self._quota(s.quota_bytes_per_room, deleted)
            free = await self._measure()
            if s.disk_free_min_bytes > 0 and free is not None and free < s.disk_free_min_bytes:
                await self._floor(s.disk_free_min_bytes, deleted)
                free = await self._measure()
            if free is not None and free < s.disk_free_warn_bytes:
                log.warning("indexer.disk_low", free_bytes=free, warn_bytes=s.disk_free_warn_bytes)
            metrics.FILES.set(await self.deps.store.count())
            metrics.RETENTION_PASSES.inc()
            self.passes += 1
            self.last_deleted = dict(+deleted)  # + drops the reasons that deleted nothing
            if self.last_deleted:
                log.info("indexer.retention_pass", **self.last_deleted)
            return self.last_deleted

    async def _quota(self, quota: int, deleted: Counter[str]) -> None:
        for room, used in await self.deps.store.room_usage(over=quota):
            async with contextlib.aclosing(self._candidates(room_id=room)) as found:
                async for c in found:
                    if used <= quota:
                        break
                    outcome = await self._delete(c, "quota")
                    deleted["quota"] += outcome == "deleted"
                    if outcome in ("deleted", "missing"):
                        used -= c.size
            if used > quota:
                log.warning("indexer.quota_unreachable", room_id=room, used=used, quota=quota)

    async def _floor(self, floor: int, deleted: Counter[str]) -> None:
        free: int | None = 0
        async with contextlib.aclosing(self._candidates()) as found:
            async for c in found:
                outcome = await self._delete(c, "disk_floor")
                deleted["disk_floor"] += outcome == "deleted"
                if outcome == "deleted":
                    free = await self._measure()
                    if free is None or free >= floor:
                        return
        log.warning("indexer.disk_floor_unreachable", free_bytes=free, floor_bytes=floor)

    async def _candidates(
        self, *, room_id: str | None = None, before_us: int | None = None
    ) -> AsyncGenerator[Candidate, None]:
        """Deletable files, uploaded ones first if so configured, then oldest first."""
        tiers = (True, False) if self.deps.settings.retention_uploaded_first else (None,)
        for uploaded in tiers:
            after = None
            while True:
                batch = await self.deps.store.candidates(
                    uploaded=uploaded,
                    room_id=room_id,
                    before_us=before_us,
                    after=after,
                    limit=_BATCH,
                )
                for candidate in batch:
                    yield candidate
                if len(batch) < _BATCH:
                    break
                after = (batch[-1].mtime, batch[-1].id)

    async def _delete(self, c: Candidate, reason: Reason) -> Outcome:
        """Unlink one file, update the index, announce it."""
        if not c.uploaded and (why := await self._held(c)):
            log.info("indexer.file_held", path=c.path, job_id=c.job_id, why=why)
            return "held"
        outcome = await asyncio.to_thread(_unlink, self.deps.root, c.path, self._now_s())
        if outcome in ("recent", "refused"):
            return outcome
        await self.deps.store.forget_local([c.path])
        if outcome == "missing":
            log.info("indexer.file_vanished", path=c.path)
            return outcome
        metrics.DELETIONS.labels(reason).inc()
        metrics.DELETED_BYTES.labels(reason).inc(c.size)
        log.info("indexer.file_deleted", path=c.path, reason=reason, size=c.size)
        event = FileDeleted(
            # The same file deleted again (a retried pass) is the same event to JetStream.
            event_id="file-deleted-"
            + hashlib.sha256(f"{c.path}\n{c.mtime}".encode()).hexdigest()[:32],
            path=c.path,
            reason=reason,
            job_id=c.job_id,
            room_id=c.room_id,
            size=c.size,
        )
        try:
            await self.deps.publish(event)
        except Exception as exc:
            # The file is gone and the index says so; only the announcement is lost.
            log.warning("indexer.publish_failed", path=c.path, error=repr(exc))
        return outcome

    async def _held(self, c: Candidate) -> str | None:
        """Why the job documents say ``c`` must stay (running, upload owed), or None."""
        guard = self._guard
        if guard is None:
            return None
        try:
            job_id = c.job_id
            if job_id is None and c.room_id is not None:
                job_id = (await guard.owners([(c.path, c.room_id)])).get(c.path)
            return None if job_id is None else (await guard.view(job_id)).holds(c.path)
        except Exception as exc:
            # Unknown is not "free to delete": a file deleted before its upload is lost.
            log.warning("indexer.jobs_unreadable", path=c.path, error=repr(exc))
            return "job documents unreadable"

    async def _measure(self) -> int | None:
        """Free bytes on the recordings' file system, into the gauges."""
        try:
            free = await asyncio.to_thread(self.deps.free_bytes, self.deps.root)
        except OSError as exc:
            log.warning("indexer.disk_unreadable", error=str(exc))
            return None
        metrics.DISK_FREE.set(free)
        metrics.DISK_LOW.set(int(free < self.deps.settings.disk_free_warn_bytes))
        return free

    def _now_s(self) -> float:
        return self.deps.clock()

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._now_s(), UTC)


def _unlink(root: Path, rel: str, now: float) -> Outcome:
    """Remove a regular file inside ``root`` unless written in the last RECENT_GUARD s."""
    full = inside(root, rel)
    if full is None:
        log.warning("indexer.path_refused", path=rel)
        return "refused"
    try:
        st = full.lstat()
        if not stat.S_ISREG(st.st_mode):
            return "refused"
        if st.st_mtime > now - RECENT_GUARD:
            return "recent"
        full.unlink()
    except FileNotFoundError:
        return "missing"
    except OSError as exc:
        log.warning("indexer.delete_failed", path=rel, error=str(exc))
        return "refused"
    return "deleted"

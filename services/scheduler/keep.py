"""Watch jobs live as long as their watchers: their documents are written again now and then."""

from __future__ import annotations

from collections.abc import Iterable

from shared.bus import TRANSIENT
from shared.job_store import JobStore
from shared.logging import get_logger
from shared.watchers import Watcher

log = get_logger(__name__)

# KV ``jobs`` keeps a document 30 days after its last write: once a day is plenty.
KEEP_EVERY = 24 * 3600.0
# At most this many per pass, so a restart (nothing kept yet) spreads its writes.
KEEP_PER_PASS = 50


async def keep_watch_jobs(
    jobs: JobStore, kept: dict[str, float], watchers: Iterable[Watcher], now: float
) -> int:
    """Write again the watch job of each watcher not kept for KEEP_EVERY; how many were."""
    done = 0
    for w in watchers:
        if done >= KEEP_PER_PASS:
            break
        if now - kept.get(w.task_id, float("-inf")) < KEEP_EVERY:
            continue
        try:
            if await jobs.keep(w.task_id):
                done += 1
        except TRANSIENT:
            raise  # NATS away: the rest next pass
        except Exception as exc:  # e.g. a task id that cannot be a key: nothing to keep
            log.warning("scheduler.watch_job_not_kept", task_id=w.task_id, error=repr(exc))
        kept[w.task_id] = now
    if done:
        log.debug("scheduler.watch_jobs_kept", count=done)
    return done

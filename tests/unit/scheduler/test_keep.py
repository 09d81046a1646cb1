"""A watch job's document is written again once a day while its watcher runs, a few per pass."""

from __future__ import annotations

from services.scheduler.keep import KEEP_EVERY, KEEP_PER_PASS, keep_watch_jobs
from shared.events import utc_now
from shared.job_store import JobStore
from shared.jobs import JobRequest
from shared.watchers import Watcher
from tests.fakes.documents import MemoryDocuments


async def test_watch_jobs_are_kept_once_a_day_a_few_per_pass() -> None:
    docs = MemoryDocuments()
    jobs = JobStore(docs)
    watchers = [
        Watcher(key=f"@u{n}", task_id=f"t{n}", created_at=utc_now())
        for n in range(KEEP_PER_PASS + 5)
    ]
    for w in watchers:
        await jobs.submit(JobRequest(job_id=w.task_id, kind="watch", watcher_key=w.key))
    kept: dict[str, float] = {}
    revisions = {w.task_id: docs.data[f"job.{w.task_id}"][1] for w in watchers}

    assert await keep_watch_jobs(jobs, kept, watchers, now=0.0) == KEEP_PER_PASS
    assert await keep_watch_jobs(jobs, kept, watchers, now=1.0) == 5  # the rest, next pass
    assert await keep_watch_jobs(jobs, kept, watchers, now=2.0) == 0  # all kept today
    moved = [t for t, rev in revisions.items() if docs.data[f"job.{t}"][1] > rev]
    assert sorted(moved) == sorted(revisions)
    assert await keep_watch_jobs(jobs, kept, watchers, now=KEEP_EVERY + 1) == KEEP_PER_PASS

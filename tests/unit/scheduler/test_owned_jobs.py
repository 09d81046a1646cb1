"""The jobs the poller starts for a watcher are stored as its owner's, and only its own."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from services.scheduler.lives import job_id_for
from services.scheduler.owned_jobs import WatcherJobs
from services.scheduler.store import WatcherStore
from shared.jobs import JobRequest
from shared.watchers import Watcher
from tests.fakes.documents import MemoryDocuments

ROOM = "7503448765740976902"


def _watcher(task_id: str, owner: str | None) -> Watcher:
    return Watcher(key=ROOM, task_id=task_id, created_at=datetime.now(UTC), owner=owner)


def _live_job(w: Watcher, attempt: int = 0) -> JobRequest:
    """The job the poller builds for a live of ``w`` (it sets no owner)."""
    return JobRequest(job_id=job_id_for(w, ROOM, attempt), room_id=ROOM, watcher_key=w.key)


async def test_a_live_job_is_its_watchers_owners(tmp_path: Path) -> None:
    async with WatcherStore(tmp_path / "w.sqlite3") as watchers:
        w = _watcher("task-1", "alice")
        await watchers.put(w, next_check=0)
        jobs = WatcherJobs(MemoryDocuments(), watchers)
        for attempt in (0, 3):  # the live's first job, and a restart of it
            job = _live_job(w, attempt)
            await jobs.submit(job)
            stored = await jobs.request(job.job_id)
            assert stored is not None
            assert stored.owner == "alice"
            assert job.owner is None  # the poller's object is left as it was


async def test_a_watcher_made_again_by_another_key_does_not_pass_its_owner_on(
    tmp_path: Path,
) -> None:
    async with WatcherStore(tmp_path / "w.sqlite3") as watchers:
        checked = _watcher("task-1", "alice")  # what a poll pass read
        await watchers.put(_watcher("task-2", "bob"), next_check=0)  # deleted, made again
        jobs = WatcherJobs(MemoryDocuments(), watchers)
        job = _live_job(checked)
        await jobs.submit(job)
        stored = await jobs.request(job.job_id)
        assert stored is not None
        assert stored.owner is None  # an admin's only, never bob's
        await jobs.submit(JobRequest(job_id="on-demand", room_id=ROOM, owner="carol"))
        on_demand = await jobs.request("on-demand")
        assert on_demand is not None
        assert on_demand.owner == "carol"  # one with an owner keeps it

"""watch.updated in the scheduler: a watcher changes from its next check on, its live goes on."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from services.scheduler.handlers import on_watch_resumed, on_watch_updated
from services.scheduler.store import WatcherStore
from shared.events import RecordingOptions, WatchResumed, WatchUpdated
from shared.watchers import Watcher

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _recording(key: str = "@amy") -> Watcher:
    """A watcher whose live is being recorded, checked a moment ago, next check in 60 s."""
    now = datetime.now(UTC)
    return Watcher(
        key=key,
        task_id="t-amy",
        created_at=T0,
        poll_interval=60,
        options=RecordingOptions(quality="hd", upload_s3=True),
        live_state="live",
        current_job_id="job-1",
        last_run_at=now,
        next_check_at=now + timedelta(seconds=60),
    )


async def _due_keys(store: WatcherStore, at: float) -> list[str]:
    return [w.key for w, _ in await store.due(at, 10)]


async def test_a_shorter_interval_counts_from_the_last_check_and_the_live_goes_on(
    tmp_path: Path,
) -> None:
    async with WatcherStore(tmp_path / "w.sqlite3") as store:
        before = _recording()
        await store.put(before, next_check=before.next_check_at.timestamp())  # type: ignore[union-attr]
        options = RecordingOptions(quality="sd", output_template="{user}/{timestamp}.mp4")
        await on_watch_updated(
            WatchUpdated(key="@amy", task_id="t-amy", poll_interval=10, options=options), store
        )
        after = await store.get("@amy")
        assert after is not None
        assert after.poll_interval == 10
        assert after.options == options
        # The recording in progress is untouched: same job, same live, same generation.
        assert after.current_job_id == "job-1"
        assert after.live_state == "live"
        assert after.generation == before.generation
        assert after.status == "active"
        last = before.last_run_at.timestamp()  # type: ignore[union-attr]
        assert await _due_keys(store, last + 11) == ["@amy"]  # was due only at +60
        assert await _due_keys(store, last + 9) == []


async def test_a_longer_interval_keeps_the_check_already_planned(tmp_path: Path) -> None:
    async with WatcherStore(tmp_path / "w.sqlite3") as store:
        w = _recording()
        w.poll_interval, w.next_check_at = 10, w.last_run_at + timedelta(seconds=10)  # type: ignore[operator]
        await store.put(w, next_check=w.next_check_at.timestamp())
        await on_watch_updated(WatchUpdated(key="@amy", task_id="t-amy", poll_interval=600), store)
        after = await store.get("@amy")
        assert after is not None
        assert after.poll_interval == 600
        assert await _due_keys(store, w.next_check_at.timestamp() + 0.1) == ["@amy"]


async def test_paused_is_not_checked_and_its_live_is_kept_through_a_resume(
    tmp_path: Path,
) -> None:
    async with WatcherStore(tmp_path / "w.sqlite3") as store:
        await store.put(_recording(), next_check=0)
        await on_watch_updated(WatchUpdated(key="@amy", task_id="t-amy", paused=True), store)
        paused = await store.get("@amy")
        assert paused is not None
        assert paused.status == "paused"
        assert paused.current_job_id == "job-1"  # not cancelled: the recording goes on
        assert await _due_keys(store, time.time() + 3600) == []

        await on_watch_updated(WatchUpdated(key="@amy", task_id="t-amy", paused=False), store)
        resumed = await store.get("@amy")
        assert resumed is not None
        assert resumed.status == "active"
        # Same generation: the job of the live in progress is still this watcher's, so the
        # next check sees it recording instead of starting a second job for the same live.
        assert resumed.generation == paused.generation
        assert await _due_keys(store, time.time() + 1) == ["@amy"]  # checked again at once


async def test_resume_after_a_cancelling_pause_starts_a_new_generation(tmp_path: Path) -> None:
    async with WatcherStore(tmp_path / "w.sqlite3") as store:
        w = _recording()
        w.status, w.current_job_id = "paused", None  # POST .../pause cancelled its job
        await store.put(w, next_check=0)
        await on_watch_resumed(WatchResumed(key="@amy"), store)
        after = await store.get("@amy")
        assert after is not None
        assert after.generation == w.generation + 1


async def test_stale_or_foreign_updates_change_nothing(tmp_path: Path) -> None:
    async with WatcherStore(tmp_path / "w.sqlite3") as store:
        await store.put(_recording(), next_check=0)
        later = WatchUpdated(key="@amy", task_id="t-amy", poll_interval=30)
        earlier = WatchUpdated(
            key="@amy",
            task_id="t-amy",
            poll_interval=90,
            occurred_at=later.occurred_at - timedelta(seconds=1),
        )
        await on_watch_updated(later, store)
        await on_watch_updated(earlier, store)  # redelivered after the later one
        # A watcher deleted and made again under the same key is another watcher.
        await on_watch_updated(WatchUpdated(key="@amy", task_id="t-old", poll_interval=50), store)
        await on_watch_updated(WatchUpdated(key="@nobody", task_id="t", poll_interval=50), store)
        after = await store.get("@amy")
        assert after is not None
        assert after.poll_interval == 30
        assert await store.get("@nobody") is None

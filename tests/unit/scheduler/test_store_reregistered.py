"""A watcher deleted and registered again while a poll pass checks it keeps the new
registration: the pass's write-back of the old one is refused (CI saw the old task id win)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from services.scheduler.store import WatcherStore
from shared.watchers import Watcher


def _watcher(key: str, task_id: str) -> Watcher:
    return Watcher(key=key, task_id=task_id, created_at=datetime.now(UTC))


async def test_a_pass_never_writes_back_over_a_watcher_deleted_and_registered_again(
    tmp_path: Path,
) -> None:
    async with WatcherStore(tmp_path / "w.sqlite3") as store:
        await store.put(_watcher("71", "task-71"), next_check=0)
        ((seen, version),) = await store.due(1.0, 10)  # a pass reads it...
        await store.delete("71")  # ...meanwhile: deleted, and registered again
        await store.put(_watcher("71", "again-71"), next_check=0)
        seen.last_outcome = "offline"
        assert await store.save_checked([(seen, 100.0, version)]) == 0
        now = await store.get("71")
        assert now is not None
        assert now.task_id == "again-71"
        assert now.last_outcome is None

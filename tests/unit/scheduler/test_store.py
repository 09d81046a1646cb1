"""The watcher store: a poll pass writes back only rows no command changed; old files upgrade."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

from services.scheduler.store import WatcherStore
from shared.watchers import Watcher


def _watcher(key: str) -> Watcher:
    return Watcher(key=key, task_id=f"task-{key}", created_at=datetime.now(UTC))


async def test_a_pass_writes_only_rows_unchanged_since_it_read_them(tmp_path: Path) -> None:
    async with WatcherStore(tmp_path / "w.sqlite3") as store:
        for key in ("@a", "@b", "@c", "@d"):
            await store.put(_watcher(key), next_check=0)
        read = {w.key: (w, version) for w, version in await store.due(1.0, 10)}
        await store.delete("@a")
        paused = _watcher("@b")
        paused.status = "paused"
        await store.put(paused, next_check=0)
        await store.put(_watcher("@c"), next_check=0)  # re-registered: same status, newer
        rows = []
        for w, version in read.values():
            w.last_outcome = "offline"
            rows.append((w, 100.0, version))
        assert await store.save_checked(rows) == 1
        assert await store.get("@a") is None
        b = await store.get("@b")
        assert b is not None
        assert b.status == "paused"
        c = await store.get("@c")
        assert c is not None
        assert c.last_outcome is None
        d = await store.get("@d")
        assert d is not None
        assert d.last_outcome == "offline"


async def test_a_file_from_before_versions_gets_the_column(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    with sqlite3.connect(path) as db:
        db.execute(
            "CREATE TABLE watchers (key TEXT PRIMARY KEY, status TEXT NOT NULL, "
            "next_check REAL NOT NULL, created REAL NOT NULL, doc TEXT NOT NULL)"
        )
        db.execute(
            "INSERT INTO watchers VALUES (?, 'active', 0, 0, ?)",
            ("@old", '{"key":"@old","task_id":"t","created_at":"2026-01-01T00:00:00Z"}'),
        )
    async with WatcherStore(path) as store:
        [(found, version)] = await store.due(1.0, 10)
        assert (found.key, version) == ("@old", 0)
        assert await store.save_checked([(found, 50.0, version)]) == 1
    async with WatcherStore(path) as store:  # opened again: nothing to add
        assert await store.due(1.0, 10) == []


async def test_concurrent_command_writes_share_one_commit_and_all_land(tmp_path: Path) -> None:
    async with WatcherStore(tmp_path / "w.sqlite3") as store:
        await asyncio.gather(*(store.put(_watcher(f"@{n}"), next_check=0) for n in range(64)))
        assert store.generation == 1  # one flush, one transaction for the 64 commands
        assert await store.count_active() == 64
        await store.put(_watcher("@0"), next_check=5)  # a later write alone: its own commit
        assert store.generation == 2
        rows = {w.key: version for w, version in await store.due(10.0, 100)}
        assert rows["@0"] == rows["@1"] + 1  # made in the same flush, then written once more


async def test_a_page_of_one_owner_counts_only_its_watchers(tmp_path: Path) -> None:
    async with WatcherStore(tmp_path / "w.sqlite3") as store:
        for key, owner in (("@a", "alice"), ("@b", "bob"), ("@c", "alice"), ("@d", None)):
            w = _watcher(key)
            w.owner = owner
            await store.put(w, next_check=0)
        items, total = await store.page(1, 1, owner="alice")
        assert ([w.key for w in items], total) == (["@a"], 2)
        items, total = await store.page(2, 1, owner="alice")
        assert ([w.key for w in items], total) == (["@c"], 2)
        assert await store.page(1, 10, owner="carol") == ([], 0)
        items, total = await store.page(1, 10)  # no owner given: everyone's, and the ownerless
        assert ({w.key for w in items}, total) == ({"@a", "@b", "@c", "@d"}, 4)


async def test_a_file_from_before_owners_gets_the_column_its_rows_no_owner(
    tmp_path: Path,
) -> None:
    path = tmp_path / "old.sqlite3"
    with sqlite3.connect(path) as db:
        db.execute(
            "CREATE TABLE watchers (key TEXT PRIMARY KEY, status TEXT NOT NULL, "
            "next_check REAL NOT NULL, created REAL NOT NULL, doc TEXT NOT NULL, "
            "version INTEGER NOT NULL DEFAULT 0)"
        )
        db.execute(
            "INSERT INTO watchers VALUES (?, 'active', 0, 0, ?, 3)",
            ("@old", '{"key":"@old","task_id":"t","created_at":"2026-01-01T00:00:00Z"}'),
        )
    async with WatcherStore(path) as store:
        old = await store.get("@old")
        assert old is not None
        assert old.owner is None  # from before ownership: an admin's only
        assert await store.page(1, 10, owner="alice") == ([], 0)
        assert (await store.page(1, 10))[1] == 1
        new = _watcher("@new")
        new.owner = "alice"
        await store.put(new, next_check=0)
        assert [w.key for w in (await store.page(1, 10, owner="alice"))[0]] == ["@new"]
    with sqlite3.connect(path) as db:
        indexes = {r[1] for r in db.execute("PRAGMA index_list(watchers)")}
    assert "watchers_owner" in indexes


async def test_egresses_saving_their_checks_at_once_all_land(tmp_path: Path) -> None:
    # Each egress saves its own checks (services/scheduler/poll_loop.py): many at once.
    async with WatcherStore(tmp_path / "w.sqlite3") as store:
        keys = [f"@e{e}u{n}" for e in range(20) for n in range(50)]
        await store.put_many([(_watcher(key), 0.0) for key in keys])
        read = await store.due(1.0, len(keys))
        assert len(read) == len(keys)
        for w, _ in read:
            w.last_outcome = "offline"
        egresses = [read[i : i + 50] for i in range(0, len(read), 50)]
        written = await asyncio.gather(
            *(store.save_checked([(w, 100.0, v) for w, v in rows]) for rows in egresses)
        )
        assert written == [50] * 20
        assert await store.due(99.0, len(keys)) == []

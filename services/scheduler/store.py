"""The scheduler's SQLite store of watchers (aiosqlite); the scheduler is its only writer.

Each row keeps the whole :class:`~shared.watchers.Watcher` as JSON, plus the columns the
polling query needs (status, next check time) so "which watchers are due" is one index scan,
a ``version`` that every write bumps: a poll pass writes a row back only if no command
changed it meanwhile (a watcher deleted or paused during a pass stays so), and its ``owner``,
so one API key's page of watchers is an index scan too. A file from before a column gets it
when opened (:meth:`WatcherStore._add_columns`).
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path
from types import TracebackType
from typing import Self

import aiosqlite
import msgspec

from shared.sqlite import connect_wal
from shared.watchers import Watcher

_SCHEMA = """
CREATE TABLE IF NOT EXISTS watchers (
    key TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    next_check REAL NOT NULL,
    created REAL NOT NULL,
    doc TEXT NOT NULL,
    version INTEGER NOT NULL DEFAULT 0,
    owner TEXT
);
CREATE INDEX IF NOT EXISTS watchers_due ON watchers (status, next_check);
CREATE INDEX IF NOT EXISTS watchers_created ON watchers (created, key);
"""
# Columns added since the first release: (name, definition). Rows from before get the default
# (an owner of NULL: only admins see those watchers).
_ADDED_COLUMNS = (("version", "INTEGER NOT NULL DEFAULT 0"), ("owner", "TEXT"))
# Needs the owner column, so it is made after the columns are added.
_OWNER_INDEX = "CREATE INDEX IF NOT EXISTS watchers_owner ON watchers (owner, created, key)"

_decoder = msgspec.json.Decoder(Watcher)
# Left out of the JSON when it has its default (omit_defaults): the need query falls back to it.
DEFAULT_POLL = next(f.default for f in msgspec.structs.fields(Watcher) if f.name == "poll_interval")


class WatcherStore:
    """Async access to the watchers table."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db: aiosqlite.Connection | None = None
        # Bumped by every command's write (put, delete): what the watchers need changes only
        # then (a poll pass rewrites rows, never their status, options, user or interval).
        self.generation = 0
        self._queued: list[tuple[list[tuple[Watcher, float]], asyncio.Future[None]]] = []
        self._flusher: asyncio.Task[None] | None = None
        # One poll write at a time: each egress saves its own checks, and sqlite3 refuses
        # (InterfaceError, "API misuse") an executemany interleaved with another's on the
        # connection.
        self._checked = asyncio.Lock()

    async def __aenter__(self) -> Self:
        # Two instances may open the file at once: wait for the other's lock, don't fail.
        # WAL: a standby scheduler can read (status endpoints) while the leader writes.
        self._db = await connect_wal(self.path, schema=_SCHEMA)
        await self._db.execute("PRAGMA synchronous=NORMAL")
        await self._add_columns()
        await self.db.execute(_OWNER_INDEX)
        await self.db.commit()
        return self

    async def _add_columns(self) -> None:
        """A file from before a column of :data:`_ADDED_COLUMNS`: add it (existing rows get
        its default)."""
        async with self.db.execute("PRAGMA table_info(watchers)") as cur:
            columns = {row[1] for row in await cur.fetchall()}
        for name, definition in _ADDED_COLUMNS:
            if name in columns:
                continue
            try:
                await self.db.execute(f"ALTER TABLE watchers ADD COLUMN {name} {definition}")
                await self.db.commit()
            except sqlite3.OperationalError as exc:
                if "duplicate column" not in str(exc):  # another instance added it first
                    raise

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._db is not None:
            await self._db.close()

    @property
    def db(self) -> aiosqlite.Connection:
        assert self._db is not None, "store not opened"
        return self._db

    async def get(self, key: str) -> Watcher | None:
        async with self.db.execute("SELECT doc FROM watchers WHERE key = ?", (key,)) as cur:
            row = await cur.fetchone()
        return _decoder.decode(row[0]) if row else None

    async def put(self, watcher: Watcher, next_check: float) -> None:
        await self.put_many([(watcher, next_check)])

    async def put_many(self, rows: list[tuple[Watcher, float]]) -> None:
        """Insert or replace watchers (a command's write: it always wins).

        Writes from concurrent callers share one transaction: each caller's rows are queued,
        and one flush at a time writes everything queued so far and commits, so 64 commands
        handled at once cost one commit, not 64. Returns once the caller's rows are committed.
        """
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queued.append((rows, done))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        await asyncio.shield(done)  # a cancelled caller does not cancel the others' write

    async def _flush(self) -> None:
        while self._queued:
            queued, self._queued = self._queued, []
            try:
                await self._write([row for rows, _ in queued for row in rows])
            except Exception as exc:  # every caller of this flush gets the error
                for _, done in queued:
                    if not done.done():
                        done.set_exception(exc)
                continue
            except BaseException:  # cancelled (the store is closing): so are its callers
                for _, done in [*queued, *self._queued]:
                    done.cancel()
                self._queued = []
                raise
            for _, done in queued:
                if not done.done():
                    done.set_result(None)

    async def _write(self, rows: list[tuple[Watcher, float]]) -> None:
        # A new row starts at a version no earlier row of its key can have had (the clock in
        # ns), not at 0: a watcher deleted and registered again during a pass would otherwise
        # be back at the version the pass read, and the pass would write the old one back.
        first = time.time_ns()
        await self.db.executemany(
            "INSERT INTO watchers (key, status, next_check, created, doc, owner, version) "
            "VALUES (?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (key) DO UPDATE SET status = excluded.status, "
            "next_check = excluded.next_check, created = excluded.created, "
            "doc = excluded.doc, version = watchers.version + 1, owner = excluded.owner",
            [
                (
                    w.key,
                    w.status,
                    nxt,
                    w.created_at.timestamp(),
                    msgspec.json.encode(w).decode(),
                    w.owner,
                    first,
                )
                for w, nxt in rows
            ],
        )
        await self.db.commit()
        self.generation += 1

    async def save_checked(self, rows: list[tuple[Watcher, float, int]]) -> int:
        """Write what a poll pass learned: ``(watcher, next_check, version read)``.

        A row is written only if it is still active at the version the pass read: a watcher
        deleted, paused, resumed or re-registered during the pass keeps what the command made
        of it (the pass's news about it is stale). Returns how many rows were written.
        """
        async with self._checked:
            cur = await self.db.executemany(
                "UPDATE watchers SET next_check = ?, doc = ?, version = version + 1 "
                "WHERE key = ? AND version = ? AND status = 'active'",
                [(nxt, msgspec.json.encode(w).decode(), w.key, ver) for w, nxt, ver in rows],
            )
            written = max(0, cur.rowcount)
            await cur.close()
            await self.db.commit()
        return written

    async def delete(self, key: str) -> bool:
        cur = await self.db.execute("DELETE FROM watchers WHERE key = ?", (key,))
        await self.db.commit()
        self.generation += 1
        return cur.rowcount > 0

    async def due(self, now: float, limit: int) -> list[tuple[Watcher, int]]:
        """Active watchers whose next check is due, most overdue first, with their version."""
        async with self.db.execute(
            "SELECT doc, version FROM watchers WHERE status = 'active' AND next_check <= ? "
            "ORDER BY next_check LIMIT ?",
            (now, limit),
        ) as cur:
            rows = await cur.fetchall()
        return [(_decoder.decode(r[0]), int(r[1])) for r in rows]

    async def need(self, batch_size: int) -> list[tuple[str, float]]:
        """Requests per second the active watchers need, by distinct options: ``(the key of one
        watcher with those options, rate)``. A check costs a ``batch_size``-th of a check_alive,
        plus a resolve for a user. One aggregate query in SQLite: pacing decodes no watcher.
        """
        async with self.db.execute(
            "SELECT MIN(key), SUM((? + (COALESCE(json_extract(doc, '$.unique_id'), '') != '')) "
            "/ MAX(1, COALESCE(json_extract(doc, '$.poll_interval'), ?))) "
            "FROM watchers WHERE status = 'active' GROUP BY json_extract(doc, '$.options')",
            (1.0 / batch_size, DEFAULT_POLL),
        ) as cur:
            rows = await cur.fetchall()
        return [(str(r[0]), float(r[1])) for r in rows]

    async def page(
        self, page: int, page_size: int, owner: str | None = None
    ) -> tuple[list[Watcher], int]:
        """One page of watchers, oldest first, and how many there are: of ``owner`` only, or
        everyone's when None."""
        where, args = ("WHERE owner = ? ", (owner,)) if owner is not None else ("", ())
        async with self.db.execute(f"SELECT COUNT(*) FROM watchers {where}", args) as cur:
            row = await cur.fetchone()
        total = int(row[0]) if row else 0
        async with self.db.execute(
            f"SELECT doc FROM watchers {where}ORDER BY created, key LIMIT ? OFFSET ?",
            (*args, page_size, (page - 1) * page_size),
        ) as cur:
            rows = await cur.fetchall()
        return [_decoder.decode(r[0]) for r in rows], total

    async def count_active(self) -> int:
        async with self.db.execute("SELECT COUNT(*) FROM watchers WHERE status = 'active'") as cur:
            row = await cur.fetchone()
        return int(row[0]) if row else 0

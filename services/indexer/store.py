"""The file index: one SQLite row per recorded file (aiosqlite, WAL), paged fast at 1M rows.

Times are integers (µs since the epoch, UTC) so ranges compare as integers. Every filter has
a composite index ending in ``mtime`` (SQLite appends the rowid ``id``), so "newest first" is
``ORDER BY mtime DESC, id DESC``: a total order that pages without duplicates or gaps, read
straight off the index. A page is found in three steps: the total (cached per filter until the
index changes, by this process or another sharing the file), the page's ids from the covering
index (from the far end, ascending, when the offset is past half the total), then those rows
by id. Queries run on their own connection, which WAL lets read while the other one writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import aiosqlite

from services.indexer.schema import (
    ADDED_COLUMNS,
    ATTACH,
    COLUMNS,
    DELETABLE,
    INDEXES,
    INSERT,
    TABLE,
    UPSERT_FINISHED,
    UPSERT_UPLOADED,
    Filter,
    from_row,
    to_row,
)
from shared.files import FilePage, FileQuery, IndexedFile, S3Location
from shared.sqlite import connect_wal

_TOTALS_CACHED = 4096  # filter tuples whose total is remembered (LRU)
_IN_BATCH = 500  # paths per "WHERE path IN (...)" lookup
_DEFER_FROM = 1000  # rows in a first bulk insert from which index building is deferred


@dataclass(frozen=True, slots=True)
class Candidate:
    """A local file retention may delete, with what its file.deleted event needs."""

    id: int
    path: str
    size: int
    mtime: int  # µs
    job_id: str | None
    room_id: str | None
    uploaded: bool


class IndexStore:
    """Async access to the index. One process writes it (the indexer); see the service."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._w: aiosqlite.Connection | None = None
        self._r: aiosqlite.Connection | None = None
        self._lock = asyncio.Lock()
        # True while an empty index is being bulk-loaded without its secondary indexes.
        self._deferred = False
        self._totals: OrderedDict[tuple[Any, ...], tuple[int, int]] = OrderedDict()

    async def __aenter__(self) -> Self:
        # isolation_level=None: transactions are ours (BEGIN IMMEDIATE ... COMMIT), so a
        # bulk load or an upsert lands for readers at once or not at all.
        self._w = await connect_wal(self.path, isolation_level=None)
        try:
            for pragma in ("synchronous=NORMAL", "cache_size=-65536"):
                await self._w.execute(f"PRAGMA {pragma}")
            await self._w.execute(TABLE)
            await self._add_columns(self._w)
            # Creates the indexes, also those a bulk load stopped halfway left out.
            await self._build_indexes(self._w)
            self._r = await aiosqlite.connect(self.path, timeout=30, isolation_level=None)
            for pragma in ("query_only=ON", "cache_size=-65536"):
                await self._r.execute(f"PRAGMA {pragma}")
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._w is not None and self._deferred:
            async with self._lock:
                await self._build_indexes(self._w)
        for db in (self._r, self._w):
            if db is not None:
                await db.close()
        self._r = self._w = None

    @property
    def closed(self) -> bool:
        return self._r is None

    def _conn(self, write: bool) -> aiosqlite.Connection:
        db = self._w if write else self._r
        if db is None:
            msg = "index store is not open"
            raise RuntimeError(msg)
        return db

    @contextlib.asynccontextmanager
    async def _writing(self, *, bulk: bool = False) -> AsyncIterator[aiosqlite.Connection]:
        db = self._conn(write=True)
        async with self._lock:
            if self._deferred and not bulk:
                await self._build_indexes(db)
            await db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                await db.rollback()
                raise
            else:
                await db.commit()

    async def _fetch(self, sql: str, args: Sequence[Any] = (), *, write: bool = False) -> list[Any]:
        if self._deferred:
            async with self._lock:
                if self._deferred:
                    await self._build_indexes(self._conn(write=True))
        async with self._conn(write).execute(sql, args) as cur:
            return list(await cur.fetchall())

    @staticmethod
    async def _add_columns(db: aiosqlite.Connection) -> None:
        """Give an index file from before a column of ADDED_COLUMNS that column."""
        async with db.execute("PRAGMA table_info(files)") as cur:
            columns = {row[1] for row in await cur.fetchall()}
        for name, definition in ADDED_COLUMNS:
            if name in columns:
                continue
            try:
                await db.execute(f"ALTER TABLE files ADD COLUMN {name} {definition}")
            except sqlite3.OperationalError as exc:
                if "duplicate column" not in str(exc):  # another instance added it first
                    raise

    async def _build_indexes(self, db: aiosqlite.Connection) -> None:
        """Create the indexes a bulk load deferred (the caller holds the lock)."""
        await db.execute("BEGIN IMMEDIATE")
        try:
            try:
                await db.execute(INDEXES["files_path"])
            except sqlite3.IntegrityError:
                # The load repeated a path: its first row wins, as ON CONFLICT DO NOTHING.
                await db.execute(
                    "DELETE FROM files WHERE id NOT IN (SELECT MIN(id) FROM files GROUP BY path)"
                )
                await db.execute(INDEXES["files_path"])
            for ddl in INDEXES.values():
                await db.execute(ddl)
        except BaseException:
            await db.rollback()
            raise
        await db.commit()
        self._deferred = False

    # --- queries ---------------------------------------------------------------------------

    async def query(self, q: FileQuery) -> FilePage:
        """One page of ``q``, newest first, and the number of matches (``q`` is validated)."""
        f = Filter.of(q)
        total = await self._total(f)
        offset = (q.page - 1) * q.page_size
        if offset >= total:
            return FilePage(items=[], total=total, page=q.page, page_size=q.page_size)
        limit = min(q.page_size, total - offset)
        if offset <= total // 2:
            # Down from ``until``: with ``total`` known, the page ends before ``since``, so
            # that bound needs no check on each of the entries skipped (3x faster deep down).
            scan, order, skip = replace(f, since=None), "DESC", offset
        else:
            # Past the middle, the far end is nearer: up from ``since``, fewer entries skipped.
            scan, order, skip = replace(f, until=None), "ASC", total - offset - limit
        sql = (
            f"SELECT id, mtime FROM files INDEXED BY {f.index}{scan.where()} "
            f"ORDER BY mtime {order}, id {order} LIMIT ? OFFSET ?"
        )
        rows = await self._fetch(sql, (*scan.args(), limit, skip))
        if order == "ASC":
            rows.reverse()
        # A write between the count and this read may have moved the window's edge.
        ids = [i for i, mtime in rows if f.covers(mtime)]
        items = await self._rows_by_id(ids)
        return FilePage(items=items, total=total, page=q.page, page_size=q.page_size)

    async def count(self) -> int:
        """Rows in the index (cached until the index changes, by any process)."""
        return await self._total(Filter.of(FileQuery()))

    async def get(self, path: str) -> IndexedFile | None:
        rows = await self._fetch(f"SELECT {COLUMNS} FROM files WHERE path = ?", (path,))
        return from_row(rows[0]) if rows else None

    async def by_id(self, file_id: int) -> IndexedFile | None:
        rows = await self._fetch(f"SELECT {COLUMNS} FROM files WHERE id = ?", (file_id,))
        return from_row(rows[0], file_id) if rows else None

    async def _total(self, f: Filter) -> int:
        # SQLite's data_version changes with every commit by another connection: our writer's
        # and any other process's (a standby and the leader share INDEX_DB). Read first: a
        # write during the count invalidates what it counted.
        generation = await self._data_version()
        cached = self._totals.get(f.key)
        if cached is not None and cached[0] == generation:
            self._totals.move_to_end(f.key)
            return cached[1]
        total = await self._count(f)
        self._totals[f.key] = (generation, total)
        self._totals.move_to_end(f.key)
        while len(self._totals) > _TOTALS_CACHED:
            self._totals.popitem(last=False)
        return total

    async def _data_version(self) -> int:
        rows = await self._fetch("PRAGMA data_version")
        return int(rows[0][0])

    async def _count(self, f: Filter) -> int:
        """COUNT(*) steps through every matching index entry; for a time window wider than
        half the data it is cheaper to count what lies outside it and subtract."""
        if f.since is None and f.until is None:
            return await self._count_where(f)
        # One aggregate per SELECT: SQLite answers a lone MIN or MAX with one index seek.
        scan = f"FROM files INDEXED BY {f.index}{f.where(False)}"
        sql = f"SELECT (SELECT MIN(mtime) {scan}), (SELECT MAX(mtime) {scan})"
        lo, hi = (await self._fetch(sql, f.args(False) * 2))[0]
        if lo is None:
            return 0
        since = lo if f.since is None else max(lo, f.since)
        until = hi if f.until is None else min(hi, f.until)
        if 2 * (until - since) <= hi - lo:
            return await self._count_where(f)
        whole = await self._total(replace(f, since=None, until=None))
        before = after = 0
        if f.since is not None:
            before = await self._count_where(replace(f, since=None, until=f.since - 1))
        if f.until is not None:
            after = await self._count_where(replace(f, since=f.until + 1, until=None))
        return whole - before - after

    async def _count_where(self, f: Filter) -> int:
        sql = f"SELECT COUNT(*) FROM files INDEXED BY {f.index}{f.where()}"
        return int((await self._fetch(sql, f.args()))[0][0])

    async def _rows_by_id(self, ids: list[int]) -> list[IndexedFile]:
        if not ids:
            return []
        marks = ",".join("?" * len(ids))
        rows = await self._fetch(f"SELECT id, {COLUMNS} FROM files WHERE id IN ({marks})", ids)
        by_id = {r[0]: from_row(r[1:], r[0]) for r in rows}
        # A row deleted between the two reads is simply left out of this page.
        return [by_id[i] for i in ids if i in by_id]

    # --- writes from events ----------------------------------------------------------------

    async def upsert_finished(self, files: Sequence[tuple[IndexedFile, bool]]) -> None:
        """Insert or update files of a finished recording; ``True`` = the file is on disk.

        A file not on disk keeps the local flag it had (an uploader may have removed it).
        """
        rows = [(*to_row(f), present) for f, present in files]
        if not rows:
            return
        async with self._writing() as db:
            await db.executemany(UPSERT_FINISHED, rows)

    async def set_uploaded(self, files: Sequence[tuple[IndexedFile, bool]]) -> None:
        """Record S3 copies; ``True`` = the local copy was removed. Each ``IndexedFile`` is
        also the row to insert should upload.done arrive before recording.finished."""
        rows = [(*to_row(f), local_deleted) for f, local_deleted in files]
        if not rows:
            return
        async with self._writing() as db:
            await db.executemany(UPSERT_UPLOADED, rows)

    async def forget_local(self, paths: Sequence[str], *, in_s3: bool = False) -> int:
        """The local copies are gone: keep rows with an S3 copy (local=0), delete the rest.

        ``in_s3``: the files are known to be in S3 even if upload.done is not indexed yet
        (the uploader removes a file, and says so, before it announces the upload).
        """
        if not paths:
            return 0
        kept = "" if in_s3 else " AND s3_key IS NOT NULL"
        async with self._writing() as db:
            args = [(p,) for p in paths]
            cur = await db.executemany(
                f"UPDATE files SET local = 0 WHERE path = ? AND local = 1{kept}", args
            )
            changed = max(0, cur.rowcount)
            if not in_s3:
                cur = await db.executemany(
                    "DELETE FROM files WHERE path = ? AND s3_key IS NULL", args
                )
                changed += max(0, cur.rowcount)
            return changed

    # --- bulk loads and the rebuild --------------------------------------------------------

    async def bulk_insert(self, files: Iterable[IndexedFile]) -> int:
        """Insert files in one transaction; paths already indexed are left as they are.

        Loading an empty index, the indexes are dropped and built once, when the index is
        next used or closed: one sort is several times faster than a million random index
        updates (a path repeated within such a load keeps its first row, and is counted as
        added). Returns how many rows were added.
        """
        rows = [to_row(f) for f in files]
        if not rows:
            return 0
        dropped = False
        try:
            async with self._writing(bulk=True) as db:
                if not self._deferred:
                    async with db.execute("SELECT 1 FROM files LIMIT 1") as cur:
                        empty = await cur.fetchone() is None
                    if empty and len(rows) >= _DEFER_FROM:
                        for name in INDEXES:
                            await db.execute(f"DROP INDEX IF EXISTS {name}")
                        dropped = self._deferred = True
                # Without the path index there is no conflict to detect (see above).
                sql = INSERT if self._deferred else f"{INSERT} ON CONFLICT (path) DO NOTHING"
                cur = await db.executemany(sql, rows)
                return max(0, cur.rowcount)
        except BaseException:
            if dropped:
                self._deferred = False  # rolled back with the rest: the indexes are there
            raise

    async def known(self, paths: Sequence[str]) -> dict[str, tuple[int, int, bool]]:
        """(size, mtime µs, local) of those of ``paths`` that are indexed."""
        found: dict[str, tuple[int, int, bool]] = {}
        for start in range(0, len(paths), _IN_BATCH):
            batch = paths[start : start + _IN_BATCH]
            marks = ",".join("?" * len(batch))
            sql = f"SELECT path, size, mtime, local FROM files WHERE path IN ({marks})"
            for path, size, mtime, local in await self._fetch(sql, batch):
                found[path] = (size, mtime, bool(local))
        return found

    async def refresh(self, changes: Sequence[tuple[str, int, int]]) -> int:
        """Set (path, size, mtime µs) of files found on disk; they are local again."""
        if not changes:
            return 0
        async with self._writing() as db:
            cur = await db.executemany(
                "UPDATE files SET size = ?, mtime = ?, local = 1 WHERE path = ?",
                [(size, mtime, path) for path, size, mtime in changes],
            )
            return max(0, cur.rowcount)

    async def unowned(self, paths: Sequence[str]) -> list[tuple[str, str]]:
        """(path, room id) of those of ``paths`` indexed with a room but no job nor S3 copy."""
        found: list[tuple[str, str]] = []
        for start in range(0, len(paths), _IN_BATCH):
            batch = paths[start : start + _IN_BATCH]
            sql = (
                f"SELECT path, room_id FROM files WHERE path IN ({','.join('?' * len(batch))}) "
                "AND job_id IS NULL AND s3_key IS NULL AND room_id IS NOT NULL"
            )
            found += [(r[0], r[1]) for r in await self._fetch(sql, batch)]
        return found

    async def attach(
        self, rows: Sequence[tuple[str, str, bool, S3Location | None, str | None]]
    ) -> None:
        """Give (path, job id, upload wanted, S3 copy, owner) to rows that have no job yet."""
        if not rows:
            return
        args = [
            (
                job,
                int(wanted),
                *((s3.bucket, s3.key, s3.etag) if s3 else (None,) * 3),
                owner,
                path,
            )
            for path, job, wanted, s3, owner in rows
        ]
        async with self._writing() as db:
            await db.executemany(ATTACH, args)

    async def local_after(self, after_id: int, limit: int) -> list[tuple[int, str]]:
        """(id, path) of rows said to be on disk, by id, after ``after_id``."""
        sql = "SELECT id, path FROM files WHERE local = 1 AND id > ? ORDER BY id LIMIT ?"
        return [(r[0], r[1]) for r in await self._fetch(sql, (after_id, limit))]

    # --- retention -------------------------------------------------------------------------

    async def candidates(
        self,
        *,
        uploaded: bool | None = None,
        room_id: str | None = None,
        before_us: int | None = None,
        after: tuple[int, int] | None = None,
        limit: int = 100,
    ) -> list[Candidate]:
        """Deletable local files, oldest first (mtime, id), after the ``after`` key.

        ``uploaded`` True/False keeps only files with/without an S3 copy.
        """
        conds: list[str] = [DELETABLE]
        args: list[Any] = []
        if uploaded is not None:
            conds.append("s3_key IS NOT NULL" if uploaded else "s3_key IS NULL")
        if room_id is not None:
            conds.append("room_id = ?")
            args.append(room_id)
        if before_us is not None:
            conds.append("mtime < ?")
            args.append(before_us)
        if after is not None:
            conds.append("(mtime, id) > (?, ?)")
            args += after
        index = "files_room" if room_id is not None else "files_mtime"
        sql = (
            "SELECT id, path, size, mtime, job_id, room_id, s3_key IS NOT NULL "
            f"FROM files INDEXED BY {index} WHERE {' AND '.join(conds)} "
            "ORDER BY mtime, id LIMIT ?"
        )
        rows = await self._fetch(sql, (*args, limit), write=True)
        return [Candidate(r[0], r[1], r[2], r[3], r[4], r[5], bool(r[6])) for r in rows]

    async def room_usage(self, over: int = 0) -> list[tuple[str, int]]:
        """(room_id, local bytes) of rooms using more than ``over`` bytes."""
        sql = (
            "SELECT room_id, SUM(size) FROM files NOT INDEXED "
            "WHERE local = 1 AND room_id IS NOT NULL GROUP BY room_id HAVING SUM(size) > ?"
        )
        # One pass over the table and a sort beat a row lookup per entry of the room index
        # (3x at 1M rows). On the writer's connection: this scan must not hold up queries.
        return [(r[0], int(r[1])) for r in await self._fetch(sql, (over,), write=True)]

"""The job index: one SQLite row per job, merged from its request and recording documents.

It lives in INDEX_DB beside the file index (its own tables, its own connections) and is
written only by the leader's feed (``jobs_feed``), which applies the bucket's changes in
stream order and stores the stream position it reached in the same transaction: a restart
goes on from there, nothing is applied twice and nothing skipped. Each document's row part
keeps the stream sequence it came from and is only replaced by a later one, so a change seen
again (a former leader finishing its batch) never undoes a newer one.

Status, room and user are derived in SQL (generated columns) the way ``GET /jobs/{id}``
assembles them from the documents: the recording's state, else CANCELLED when cancel was
asked, else PENDING; a watch job is STARTED until cancelled (its watcher is the scheduler's).
"""

from __future__ import annotations

import asyncio
import heapq
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiosqlite

from shared.job_list import JobPage, JobQuery, JobSummary, Position, from_micros, to_micros
from shared.sqlite import connect_wal

SCHEMA = """
CREATE TABLE IF NOT EXISTS job_index (
    job_id TEXT PRIMARY KEY,
    kind TEXT,              -- NULL until the request document was seen
    owner TEXT,
    url TEXT,
    req_room TEXT,
    req_user TEXT,
    created_us INTEGER,
    desired TEXT,
    req_seq INTEGER NOT NULL DEFAULT 0,
    req_us INTEGER,         -- when the request was last written (the bucket's TTL runs from it)
    gone INTEGER NOT NULL DEFAULT 0,
    rec_state TEXT,
    rec_room TEXT,
    rec_user TEXT,
    title TEXT,
    rec_error TEXT,
    updated_us INTEGER,
    rec_seq INTEGER NOT NULL DEFAULT 0,
    rec_us INTEGER,
    status TEXT GENERATED ALWAYS AS (
        CASE
            WHEN kind = 'watch' THEN
                CASE WHEN desired = 'cancel' THEN 'CANCELLED' ELSE 'STARTED' END
            WHEN rec_state IS NOT NULL THEN rec_state
            WHEN desired = 'cancel' THEN 'CANCELLED'
            ELSE 'PENDING'
        END) VIRTUAL,
    room_id TEXT GENERATED ALWAYS AS (COALESCE(rec_room, req_room)) VIRTUAL,
    user TEXT GENERATED ALWAYS AS (COALESCE(rec_user, req_user)) VIRTUAL
);
CREATE INDEX IF NOT EXISTS job_index_new ON job_index (created_us, job_id);
CREATE INDEX IF NOT EXISTS job_index_owner ON job_index (owner, created_us, job_id);
CREATE INDEX IF NOT EXISTS job_index_room ON job_index (room_id, created_us, job_id);
CREATE INDEX IF NOT EXISTS job_index_user ON job_index (user, created_us, job_id);
CREATE INDEX IF NOT EXISTS job_index_status ON job_index (status, created_us, job_id);
CREATE INDEX IF NOT EXISTS job_index_kind ON job_index (kind, created_us, job_id);
-- An ordinary key's listing always filters on its owner: a status or a kind that few of its
-- jobs have is found without stepping through all of them.
CREATE INDEX IF NOT EXISTS job_index_owner_status ON job_index (owner, status, created_us, job_id);
CREATE INDEX IF NOT EXISTS job_index_owner_kind ON job_index (owner, kind, created_us, job_id);
CREATE TABLE IF NOT EXISTS job_index_position (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    seq INTEGER NOT NULL,   -- the last stream sequence of KV_jobs applied
    pending INTEGER NOT NULL DEFAULT 0
);
"""

_SEEN_REQUEST = """
INSERT INTO job_index
    (job_id, kind, owner, url, req_room, req_user, created_us, desired, req_seq, req_us, gone)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0)
ON CONFLICT (job_id) DO UPDATE SET
    kind = excluded.kind, owner = excluded.owner, url = excluded.url,
    req_room = excluded.req_room, req_user = excluded.req_user,
    created_us = excluded.created_us, desired = excluded.desired,
    req_seq = excluded.req_seq, req_us = excluded.req_us, gone = 0
WHERE excluded.req_seq > job_index.req_seq
"""
_GONE_REQUEST = """
INSERT INTO job_index (job_id, req_seq, req_us, gone) VALUES (?, ?, ?, 1)
ON CONFLICT (job_id) DO UPDATE SET gone = 1, req_seq = excluded.req_seq, req_us = excluded.req_us
WHERE excluded.req_seq > job_index.req_seq
"""
_SEEN_RECORDING = """
INSERT INTO job_index
    (job_id, rec_state, rec_room, rec_user, title, rec_error, updated_us, rec_seq, rec_us)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (job_id) DO UPDATE SET
    rec_state = excluded.rec_state, rec_room = excluded.rec_room, rec_user = excluded.rec_user,
    title = excluded.title, rec_error = excluded.rec_error, updated_us = excluded.updated_us,
    rec_seq = excluded.rec_seq, rec_us = excluded.rec_us
WHERE excluded.rec_seq > job_index.rec_seq
"""
_GONE_RECORDING = """
INSERT INTO job_index (job_id, rec_seq, rec_us) VALUES (?, ?, ?)
ON CONFLICT (job_id) DO UPDATE SET
    rec_state = NULL, rec_room = NULL, rec_user = NULL, title = NULL, rec_error = NULL,
    rec_seq = excluded.rec_seq, rec_us = excluded.rec_us
WHERE excluded.rec_seq > job_index.rec_seq
"""
_POSITION = """
INSERT INTO job_index_position (id, seq, pending) VALUES (1, ?, ?)
ON CONFLICT (id) DO UPDATE SET seq = max(seq, excluded.seq), pending = excluded.pending
"""
_COLUMNS = (
    "job_id, kind, status, created_us, updated_us, room_id, user, url, title, rec_error, "
    "owner, rec_state"
)


@dataclass(frozen=True, slots=True)
class RequestSeen:
    """``job.<id>`` written: what a listing shows and filters of the request."""

    job_id: str
    seq: int
    written_us: int
    kind: str
    created_us: int
    desired: str
    owner: str | None = None
    url: str | None = None
    room_id: str | None = None
    user: str | None = None


@dataclass(frozen=True, slots=True)
class RecordingSeen:
    """``job.<id>.rec`` written: the recording's state and what it learnt of the room."""

    job_id: str
    seq: int
    written_us: int
    state: str
    updated_us: int
    room_id: str | None = None
    user: str | None = None
    title: str | None = None
    error_code: str | None = None


@dataclass(frozen=True, slots=True)
class Gone:
    """A document deleted or purged (``recording``: ``job.<id>.rec``, else ``job.<id>``)."""

    job_id: str
    seq: int
    written_us: int
    recording: bool = False


Change = RequestSeen | RecordingSeen | Gone


class JobIndex:
    """Async access to the job index; one writer (the leader's feed), any number of readers."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._w: aiosqlite.Connection | None = None
        self._r: aiosqlite.Connection | None = None
        self._lock = asyncio.Lock()

    async def open(self) -> JobIndex:
        # isolation_level=None: BEGIN IMMEDIATE ... COMMIT are ours, so a batch of changes and
        # the position it reached land together or not at all.
        self._w = await connect_wal(self.path, schema=SCHEMA, isolation_level=None)
        try:
            await self._w.execute("PRAGMA synchronous=NORMAL")
            self._r = await aiosqlite.connect(self.path, timeout=30, isolation_level=None)
            await self._r.execute("PRAGMA query_only=ON")
        except BaseException:
            await self.close()
            raise
        return self

    async def close(self) -> None:
        for db in (self._r, self._w):
            if db is not None:
                await db.close()
        self._r = self._w = None

    @property
    def closed(self) -> bool:
        return self._r is None

    def _conn(self, *, write: bool) -> aiosqlite.Connection:
        db = self._w if write else self._r
        if db is None:
            msg = "job index is not open"
            raise RuntimeError(msg)
        return db

    async def _fetch(self, sql: str, args: Sequence[Any] = (), *, write: bool = False) -> list[Any]:
        async with self._conn(write=write).execute(sql, args) as cur:
            return list(await cur.fetchall())

    # --- the feed's writes ----------------------------------------------------------------------

    async def position(self) -> int:
        """The last stream sequence applied (0: nothing yet, a new or lost index)."""
        rows = await self._fetch("SELECT seq FROM job_index_position WHERE id = 1", write=True)
        return int(rows[0][0]) if rows else 0

    async def apply(self, changes: Iterable[Change], seq: int, pending: int) -> None:
        """Apply ``changes`` and record ``seq`` as reached, in one commit.

        Every statement keeps a document's newest stream sequence only, so their order does
        not matter: they go grouped by statement, one ``executemany`` each.
        """
        grouped: dict[str, list[tuple[Any, ...]]] = {}
        for change in changes:
            sql, args = _statement(change)
            grouped.setdefault(sql, []).append(args)
        db = self._conn(write=True)
        async with self._lock:
            await db.execute("BEGIN IMMEDIATE")
            try:
                for sql, rows in grouped.items():
                    await db.executemany(sql, rows)
                await db.execute(_POSITION, (seq, pending))
            except BaseException:
                await db.rollback()
                raise
            await db.commit()

    async def prune(self, before_us: int) -> int:
        """Forget jobs whose documents the bucket's TTL removed: last written before
        ``before_us`` (KV drops an expired key without a trace a watcher could see)."""
        db = self._conn(write=True)
        async with self._lock:
            cur = await db.execute(
                "DELETE FROM job_index WHERE COALESCE(req_us, rec_us, 0) < ?", (before_us,)
            )
            await db.commit()
            return cur.rowcount

    async def reset(self) -> None:
        """Forget everything: the stream was recreated (a lost NATS store), so its sequences
        start over and the documents this index holds are gone with it."""
        db = self._conn(write=True)
        async with self._lock:
            await db.execute("BEGIN IMMEDIATE")
            await db.execute("DELETE FROM job_index")
            await db.execute("DELETE FROM job_index_position")
            await db.commit()

    # --- queries ------------------------------------------------------------------------------

    async def query(self, q: JobQuery) -> JobPage:
        """One page of ``q`` (validated by the caller), newest first.

        Several statuses are asked one by one and merged: each is then a range of an index
        in the page's order, where ``status IN (...)`` would step through all the owner's jobs
        (or sort every match) to find the newest.
        """
        limit = q.page_size + 1
        statuses: list[str | None] = list(dict.fromkeys(q.statuses)) or [None]
        found = [await self._fetch(*_select(q, status, limit)) for status in statuses]
        rows = list(heapq.merge(*found, key=lambda row: (row[3], row[0]), reverse=True))[:limit]
        items = [_summary(row) for row in rows[: q.page_size]]
        last = rows[q.page_size - 1] if len(rows) > q.page_size else None
        return JobPage(
            items=items,
            next=Position(created_us=last[3], job_id=last[0]) if last is not None else None,
        )

    async def lag(self) -> int:
        """Changes the feed had still to apply when it last wrote (any instance can read it)."""
        rows = await self._fetch("SELECT pending FROM job_index_position WHERE id = 1")
        return int(rows[0][0]) if rows else 0


def _select(q: JobQuery, status: str | None, limit: int) -> tuple[str, list[Any]]:
    """The newest ``limit`` rows of ``q`` in ``status`` (None: any), newest first."""
    where = ["kind IS NOT NULL", "gone = 0"]
    args: list[Any] = []
    for column, value in (
        ("owner", q.owner),
        ("status", status),
        ("kind", q.kind),
        ("room_id", q.room_id),
        ("user", q.user.lower() if q.user else None),
    ):
        if value is not None:
            where.append(f"{column} = ?")
            args.append(value)
    if q.since is not None:
        where.append("created_us >= ?")
        args.append(to_micros(q.since))
    if q.until is not None:
        where.append("created_us <= ?")
        args.append(to_micros(q.until))
    if q.after is not None:
        where.append("(created_us, job_id) < (?, ?)")
        args.extend((q.after.created_us, q.after.job_id))
    sql = (
        f"SELECT {_COLUMNS} FROM job_index WHERE {' AND '.join(where)} "
        "ORDER BY created_us DESC, job_id DESC LIMIT ?"
    )
    return sql, [*args, limit]


def _statement(change: Change) -> tuple[str, tuple[Any, ...]]:
    match change:
        case RequestSeen():
            return _SEEN_REQUEST, (
                change.job_id,
                change.kind,
                change.owner,
                change.url,
                change.room_id,
                change.user,
                change.created_us,
                change.desired,
                change.seq,
                change.written_us,
            )
        case RecordingSeen():
            return _SEEN_RECORDING, (
                change.job_id,
                change.state,
                change.room_id,
                change.user,
                change.title,
                change.error_code,
                change.updated_us,
                change.seq,
                change.written_us,
            )
        case Gone(recording=True):
            return _GONE_RECORDING, (change.job_id, change.seq, change.written_us)
        case Gone():
            return _GONE_REQUEST, (change.job_id, change.seq, change.written_us)


def _summary(row: Sequence[Any]) -> JobSummary:
    job_id, kind, status, created_us, updated_us, room_id, user, url, title, error, owner, rec = row
    failed = status in ("FAILURE", "CANCELLED")
    return JobSummary(
        job_id=job_id,
        kind=kind,
        status=status,
        created_at=from_micros(created_us),
        updated_at=from_micros(updated_us) if updated_us is not None else None,
        room_id=room_id,
        user=user,
        url=url,
        title=title,
        # As GET /jobs/{id}: a job cancelled before any recorder took it says CANCELLED.
        error_code=(error if rec is not None else "CANCELLED") if failed else None,
        owner=owner,
    )

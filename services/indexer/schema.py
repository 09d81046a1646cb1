"""The index's SQL: its table, indexes and statements, and how files and queries map to them.

A column added since the first release is in :data:`ADDED_COLUMNS`: an index file from before
gets it when opened (rows from before keep its default), and the indexes on it are made after.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from shared.files import FileQuery, IndexedFile, S3Location

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)

TABLE = """
CREATE TABLE IF NOT EXISTS files (
    id INTEGER PRIMARY KEY,
    path TEXT NOT NULL,
    name TEXT NOT NULL,
    size INTEGER NOT NULL,
    mtime INTEGER NOT NULL,
    duration_s REAL,
    room_id TEXT,
    user TEXT,
    url TEXT,
    title TEXT,
    job_id TEXT,
    watcher_key TEXT,
    started_at INTEGER,
    upload_wanted INTEGER NOT NULL DEFAULT 0,
    s3_bucket TEXT,
    s3_key TEXT,
    s3_etag TEXT,
    local INTEGER NOT NULL DEFAULT 1,
    owner TEXT,
    thumbnail INTEGER NOT NULL DEFAULT 0
)"""
# (name, definition) of the columns added to TABLE since the first release. A file's owner is
# its job's (an API key's name); NULL, as for every row from before: only admins see the file.
# thumbnail: 1 once its JPEG is made (shared.thumbnails); rows from before have none.
ADDED_COLUMNS = (("owner", "TEXT"), ("thumbnail", "INTEGER NOT NULL DEFAULT 0"))
# Separate from the table (not a column constraint) so a bulk load can build them last. SQLite
# appends the rowid (``id``) to every index entry: each orders by (..., mtime, id) and covers id.
INDEXES = {
    "files_path": "CREATE UNIQUE INDEX IF NOT EXISTS files_path ON files (path)",
    "files_mtime": "CREATE INDEX IF NOT EXISTS files_mtime ON files (mtime)",
    "files_room": "CREATE INDEX IF NOT EXISTS files_room ON files (room_id, mtime)",
    "files_user": "CREATE INDEX IF NOT EXISTS files_user ON files (user, mtime)",
    "files_url": "CREATE INDEX IF NOT EXISTS files_url ON files (url, mtime)",
    "files_job": "CREATE INDEX IF NOT EXISTS files_job ON files (job_id, mtime)",
    "files_owner": "CREATE INDEX IF NOT EXISTS files_owner ON files (owner, mtime)",
}
# Equality filters, most selective first: the first one given picks the index to scan. The
# owner comes last: every query of a key but an admin's has one, and any other filter narrows
# more (the owner is then checked on the rows that index finds).
FILTER_INDEX = {
    "job_id": "files_job",
    "room_id": "files_room",
    "url": "files_url",
    "user": "files_user",
    "owner": "files_owner",
}
COLUMNS = (
    "path, name, size, mtime, duration_s, room_id, user, url, title, job_id, watcher_key, "
    "started_at, upload_wanted, s3_bucket, s3_key, s3_etag, local, owner, thumbnail"
)
_VALUES = ", ".join("?" * len(COLUMNS.split(",")))
_PRESENT = f"?{len(COLUMNS.split(',')) + 1}"  # the parameter after the row's values
INSERT = f"INSERT INTO files ({COLUMNS}) VALUES ({_VALUES})"
# recording.finished is the authority on a file's metadata, but a missing value never erases
# one known already, and an S3 copy recorded first (upload.done seen early) stays. _PRESENT
# is whether the file is on disk: if not (the uploader removed it), its size, mtime and local
# flag stay as indexed, so a redelivery changes nothing.
UPSERT_FINISHED = f"""{INSERT} ON CONFLICT (path) DO UPDATE SET
    name = excluded.name,
    size = CASE WHEN {_PRESENT} THEN excluded.size ELSE size END,
    mtime = CASE WHEN {_PRESENT} THEN excluded.mtime ELSE mtime END,
    duration_s = COALESCE(excluded.duration_s, duration_s),
    room_id = COALESCE(excluded.room_id, room_id),
    user = COALESCE(excluded.user, user),
    url = COALESCE(excluded.url, url),
    title = COALESCE(excluded.title, title),
    job_id = COALESCE(excluded.job_id, job_id),
    watcher_key = COALESCE(excluded.watcher_key, watcher_key),
    owner = COALESCE(excluded.owner, owner),
    started_at = COALESCE(excluded.started_at, started_at),
    upload_wanted = MAX(excluded.upload_wanted, upload_wanted),
    thumbnail = MAX(excluded.thumbnail, thumbnail),
    local = CASE WHEN {_PRESENT} THEN 1 ELSE local END"""
UPSERT_UPLOADED = f"""{INSERT} ON CONFLICT (path) DO UPDATE SET
    s3_bucket = excluded.s3_bucket, s3_key = excluded.s3_key, s3_etag = excluded.s3_etag,
    owner = COALESCE(owner, excluded.owner),
    local = CASE WHEN ? THEN 0 ELSE local END"""
# A rebuild found the file's job in the job documents (see jobs.py): events win over it.
ATTACH = """UPDATE files SET job_id = ?, upload_wanted = MAX(upload_wanted, ?),
    s3_bucket = COALESCE(s3_bucket, ?), s3_key = COALESCE(s3_key, ?),
    s3_etag = COALESCE(s3_etag, ?), owner = COALESCE(owner, ?)
    WHERE path = ? AND job_id IS NULL"""
# A file the job wanted uploaded is kept until its S3 copy exists.
DELETABLE = "local = 1 AND NOT (upload_wanted = 1 AND s3_key IS NULL)"


def to_us(when: datetime) -> int:
    """µs since the epoch; a naive datetime is UTC. Exact (no float rounding)."""
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return (when - _EPOCH) // _US


def from_us(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)


@dataclass(frozen=True, slots=True)
class Filter:
    """A query's filters: equality columns (the first picks the index) and an mtime range."""

    index: str
    eq: tuple[tuple[str, str], ...]  # (column, value)
    since: int | None  # µs, inclusive
    until: int | None

    @classmethod
    def of(cls, q: FileQuery) -> Filter:
        user = q.user.removeprefix("@") if q.user is not None else None
        given = [
            ("job_id", q.job_id),
            ("room_id", q.room_id),
            ("url", q.url),
            ("user", user),
            ("owner", q.owner),
        ]
        eq = tuple((col, v) for col, v in given if v is not None)
        return cls(
            index=FILTER_INDEX[eq[0][0]] if eq else "files_mtime",
            eq=eq,
            since=to_us(q.since) if q.since is not None else None,
            until=to_us(q.until) if q.until is not None else None,
        )

    @property
    def key(self) -> tuple[Any, ...]:
        return (self.eq, self.since, self.until)

    def where(self, times: bool = True) -> str:
        conds = [f"{col} = ?" for col, _ in self.eq]
        if times and self.since is not None:
            conds.append("mtime >= ?")
        if times and self.until is not None:
            conds.append("mtime <= ?")
        return f" WHERE {' AND '.join(conds)}" if conds else ""

    def covers(self, mtime: int) -> bool:
        return (self.since is None or mtime >= self.since) and (
            self.until is None or mtime <= self.until
        )

    def args(self, times: bool = True) -> list[Any]:
        args: list[Any] = [v for _, v in self.eq]
        if times:
            args += [t for t in (self.since, self.until) if t is not None]
        return args


def to_row(f: IndexedFile) -> tuple[Any, ...]:
    s3 = f.s3
    return (
        f.path,
        f.name,
        f.size,
        to_us(f.mtime),
        f.duration_s,
        f.room_id,
        f.user,
        f.url,
        f.title,
        f.job_id,
        f.watcher_key,
        to_us(f.started_at) if f.started_at is not None else None,
        int(f.upload_wanted),
        s3.bucket if s3 else None,
        s3.key if s3 else None,
        s3.etag if s3 else None,
        int(f.local),
        f.owner,
        int(f.thumbnail),
    )


def from_row(r: Sequence[Any], file_id: int | None = None) -> IndexedFile:
    return IndexedFile(
        id=file_id,
        path=r[0],
        name=r[1],
        size=r[2],
        mtime=from_us(r[3]),
        duration_s=r[4],
        room_id=r[5],
        user=r[6],
        url=r[7],
        title=r[8],
        job_id=r[9],
        watcher_key=r[10],
        started_at=from_us(r[11]) if r[11] is not None else None,
        upload_wanted=bool(r[12]),
        s3=S3Location(bucket=r[13], key=r[14], etag=r[15]) if r[14] is not None else None,
        local=bool(r[16]),
        owner=r[17],
        thumbnail=bool(r[18]),
    )

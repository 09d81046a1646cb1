"""Indexed files as the indexer shows them, and the request/reply contract to ask it.

The indexer owns the file index (SQLite). The gateway reads it through the indexer's
``nats.micro`` endpoints below; nobody else writes it: it follows ``recording.finished``,
``upload.done`` and ``file.deleted`` and can rebuild itself by scanning RECORDINGS_DIR.
"""

from __future__ import annotations

from datetime import datetime

import msgspec

from shared.micro import endpoint_subject

SERVICE = "indexer"
QUERY = endpoint_subject(SERVICE, "files.query")
GET = endpoint_subject(SERVICE, "files.get")
REBUILD = endpoint_subject(SERVICE, "files.rebuild")
MAX_PAGE_SIZE = 500


class S3Location(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """The object-storage copy of a file."""

    bucket: str
    key: str
    etag: str | None = None


class IndexedFile(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One recorded file. ``path`` is relative to RECORDINGS_DIR and unique; ``id`` is its
    row in the index (set in answers, stable while the index lives)."""

    name: str
    path: str
    size: int
    mtime: datetime  # UTC; the sort key (newest first) and what from/to filter on
    duration_s: float | None = None
    room_id: str | None = None
    user: str | None = None  # the host's unique id, without "@"
    url: str | None = None
    title: str | None = None
    job_id: str | None = None
    watcher_key: str | None = None
    started_at: datetime | None = None  # when the job's recording started
    upload_wanted: bool = False  # the job asked for upload_s3
    s3: S3Location | None = None
    local: bool = True  # False once the local copy is gone (the S3 copy remains)
    owner: str | None = None  # its job's owner (an API key's name); None: an admin's only
    thumbnail: bool = False  # its JPEG is made (shared.thumbnails says where it lives)
    id: int | None = None


class FileQuery(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Filters (all optional, combined with AND) and the page wanted.

    ``since`` <= mtime <= ``until``. ``user`` matches the host's unique id; ``url`` matches the
    URL a recording was asked with, exactly. ``owner`` (an API key's name) is set by the gateway
    for every key but an admin's: files without an owner then never match.
    """

    owner: str | None = None
    room_id: str | None = None
    user: str | None = None
    url: str | None = None
    job_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    page: int = 1
    page_size: int = 50


class FileGet(msgspec.Struct, frozen=True, kw_only=True):
    """One file by its ``id`` (the nats.micro error 404 when the index has none)."""

    id: int


class FilePage(msgspec.Struct, frozen=True, kw_only=True):
    """One page, newest first (ties broken by a stable id), and how many match in all."""

    items: list[IndexedFile]
    total: int
    page: int
    page_size: int


class RebuildReply(msgspec.Struct, frozen=True, kw_only=True):
    """What a scan of RECORDINGS_DIR changed in the index."""

    scanned: int
    added: int
    updated: int
    removed: int

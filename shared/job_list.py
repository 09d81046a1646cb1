"""Lists of jobs as the indexer's job index answers them, and the request/reply contract.

The job documents (KV ``jobs``, owned by ``shared.job_store``) have no secondary index: a
list would scan every key. The indexer keeps one in SQLite, following the bucket's stream,
and answers ``jobs.query`` on its ``nats.micro`` service. Pages are cut by a cursor, the
position (created_at, job id) of the last job shown: newest first, stable while jobs are
added, without the offset scan a page number needs.
"""

from __future__ import annotations

import base64
import binascii
import re
from datetime import UTC, datetime, timedelta
from typing import Literal

import msgspec

from shared.micro import endpoint_subject

SERVICE = "indexer"
QUERY = endpoint_subject(SERVICE, "jobs.query")
MAX_PAGE_SIZE = 200

JobStatusName = Literal["PENDING", "STARTED", "RETRY", "SUCCESS", "FAILURE", "CANCELLED"]
STATUSES: tuple[JobStatusName, ...] = (
    "PENDING",
    "STARTED",
    "RETRY",
    "SUCCESS",
    "FAILURE",
    "CANCELLED",
)
Kind = Literal["recording", "watch"]

_CURSOR_VERSION = "j1"
_CURSOR_TEXT = re.compile(r"j1:([0-9]{1,18}):([A-Za-z0-9-]{1,64})")
MAX_CURSOR = 120  # characters of an encoded cursor; anything longer is not one of ours


class Position(msgspec.Struct, frozen=True, kw_only=True):
    """Where a page ended: the last job's creation time (µs since the epoch) and id."""

    created_us: int
    job_id: str


class JobSummary(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One job as the index knows it (``GET /jobs/{id}`` reads the documents themselves)."""

    job_id: str
    kind: Kind
    status: JobStatusName
    created_at: datetime
    updated_at: datetime | None = None
    room_id: str | None = None
    user: str | None = None  # the host's unique id, lower case, without "@"
    url: str | None = None
    title: str | None = None
    error_code: str | None = None
    owner: str | None = None  # an API key's name; None: an admin's only


class JobQuery(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Filters (all optional, combined with AND; ``statuses`` any of) and the page wanted.

    ``since`` <= created_at <= ``until``. ``owner`` is set by the gateway for every key but an
    admin's: jobs without an owner then never match. ``after``: the page starts after it.
    """

    owner: str | None = None
    statuses: list[JobStatusName] = msgspec.field(default_factory=list)
    kind: Kind | None = None
    room_id: str | None = None
    user: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    after: Position | None = None
    page_size: int = 50


class JobPage(msgspec.Struct, frozen=True, kw_only=True):
    """One page, newest first; ``next`` is where the next page starts (None: this is the last)."""

    items: list[JobSummary]
    next: Position | None = None


def encode_cursor(position: Position) -> str:
    """The opaque text a client sends back to get the page after ``position``."""
    text = f"{_CURSOR_VERSION}:{position.created_us}:{position.job_id}"
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> Position:
    """The position ``cursor`` encodes; ValueError for text that is not a cursor of ours."""
    msg = "cursor is not one this API gave (use next_cursor of a previous page as it is)"
    if len(cursor) > MAX_CURSOR:
        raise ValueError(msg)
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise ValueError(msg) from None
    found = _CURSOR_TEXT.fullmatch(raw)
    if found is None:
        raise ValueError(msg)
    return Position(created_us=int(found[1]), job_id=found[2])


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def to_micros(value: datetime) -> int:
    """``value`` (aware) as integer µs since the epoch, exactly (no float on the way)."""
    return (value - _EPOCH) // _MICROSECOND


def from_micros(value: int) -> datetime:
    return _EPOCH + value * _MICROSECOND

"""The job documents in KV ``jobs`` and their keys; ``shared.job_store`` is their one owner.
Each service writes only its own key; the gateway assembles.

    job.<id>        the request, written by the gateway (``desired`` flips to "cancel")
    job.<id>.rec    the recording, written by whichever recorder holds the job
    job.<id>.up     the upload, written by the uploader
    room.<room_id>  the job that owns a room's recording, written by the recorder

Writes use compare-and-set on the key's revision, so two writers of one part never lose an
update, and carry a lease's fencing token; separate keys mean different services never
contend.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

import msgspec

from shared.events import RecordingOptions, UploadedFile, utc_now
from shared.tiktok.models import StreamSource

JobKind = Literal["recording", "watch"]
Desired = Literal["run", "cancel"]
RecState = Literal["STARTED", "RETRY", "SUCCESS", "FAILURE", "CANCELLED"]
UpState = Literal["STARTED", "RETRY", "SUCCESS", "FAILURE"]
TERMINAL: frozenset[str] = frozenset({"SUCCESS", "FAILURE", "CANCELLED"})


class JobRequest(msgspec.Struct, kw_only=True, omit_defaults=True):
    """``job.<id>``: what was asked. Secrets in ``options`` are sealed."""

    v: int = 1
    job_id: str
    kind: JobKind = "recording"
    room_id: str | None = None
    url: str | None = None
    duration: int | None = None
    options: RecordingOptions = msgspec.field(default_factory=RecordingOptions)
    watcher_key: str | None = None
    correlation_id: str = ""
    created_at: datetime = msgspec.field(default_factory=utc_now)
    desired: Desired = "run"
    # The name of the API key that asked (a watcher's job: its watcher's); only that key and
    # admins see the job. None: made before ownership was recorded, an admin's only.
    owner: str | None = None


class SegmentEntry(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One file of a job. ``state`` is "recording" while written, "final" once remuxed."""

    path: str
    part: int = 0
    size: int = 0
    duration_s: float | None = None
    state: Literal["recording", "final", "raw"] = "recording"
    # A file joined from segments (options.join): the parts it was made of, in order.
    joined_from: tuple[int, ...] = ()


class RecordingPart(msgspec.Struct, kw_only=True, omit_defaults=True):
    """``job.<id>.rec``: the recording's progress and outcome."""

    v: int = 1
    job_id: str
    state: RecState = "STARTED"
    recorder_id: str = ""
    fence: int = 0  # the token of the newest lease holder (see shared.job_store)
    room_id: str | None = None
    unique_id: str | None = None  # the host's @name, when TikTok gave it
    title: str | None = None
    attempt: int = 1
    started_at: datetime | None = None
    ended_at: datetime | None = None
    updated_at: datetime = msgspec.field(default_factory=utc_now)
    bytes: int = 0
    bitrate_kbps: float = 0.0
    # What is really recorded: a dead top rung steps down (or to a backup CDN).
    quality: str | None = None  # the sdk_key of the stream media flows from
    quality_wanted: str | None = None  # the first preference it was asked for
    stream_source: StreamSource | None = None  # main, backup (another CDN) or legacy
    engine: str | None = None  # the recording engine: native or tlr-cli
    engine_commit: str | None = None  # tlr-cli: the commit SHA of the upstream checkout
    egress: str | None = None  # the pool egress it goes through (its name, never its URL)
    reconnects: int = 0
    stalls: int = 0
    failures: int = 0  # failed tries since the job last recorded (the retry budget)
    segments: list[SegmentEntry] = msgspec.field(default_factory=list)
    returncode: int | None = None
    error_code: str | None = None
    error_message: str | None = None


class UploadPart(msgspec.Struct, kw_only=True, omit_defaults=True):
    """``job.<id>.up``: the upload of a job's files to object storage.

    RETRY while the object store is unreachable (the job stays queued in JetStream);
    FAILURE only when retrying cannot help (e.g. a local file is gone).
    """

    v: int = 1
    job_id: str
    state: UpState = "STARTED"
    uploader_id: str = ""
    fence: int = 0  # the token of the newest upload lease holder
    attempt: int = 1
    files: list[UploadedFile] = msgspec.field(default_factory=list)
    bytes_total: int = 0
    bytes_done: int = 0
    updated_at: datetime = msgspec.field(default_factory=utc_now)
    error_code: str | None = None
    error_message: str | None = None


def request_key(job_id: str) -> str:
    return f"job.{job_id}"


def recording_key(job_id: str) -> str:
    return f"job.{job_id}.rec"


def upload_key(job_id: str) -> str:
    return f"job.{job_id}.up"


def room_key(room_id: str) -> str:
    return f"room.{room_id}"


class IdempotentJob(msgspec.Struct, kw_only=True, omit_defaults=True):
    """``idem.<hash>``: the job a request under an Idempotency-Key made (gateway), and all it
    takes to start it again until it is known started: its request document and its event."""

    v: int = 1
    body_hash: str  # of the normalised request: the same key with another body is refused
    request: JobRequest
    event: msgspec.Raw  # the encoded starting event, re-published as is (same event id)
    started: bool = False  # stored and published; a retry then only answers
    created_at: datetime = msgspec.field(default_factory=utc_now)

    @property
    def job_id(self) -> str:
        return self.request.job_id


def idempotency_key(scope: str, key: str) -> str:
    """Where ``key`` of ``scope`` (an API key's name or hash) is kept: hashed, since either
    may be something a reader of the bucket must not learn."""
    return "idem." + hashlib.sha256(f"{scope}\0{key}".encode()).hexdigest()


@dataclass(frozen=True)
class Outcome:
    """How a recording ended, as ``finish`` writes it."""

    state: RecState
    error_code: str | None = None
    error_message: str | None = None
    room_id: str | None = None
    # The files this holder finalised, as it knows them: listed even if a write of them to
    # the job was lost while NATS was away.
    files: tuple[SegmentEntry, ...] = ()


@dataclass(frozen=True)
class Totals:
    """Counters of a job over all its attempts (a failover adds to them, never resets)."""

    bytes: int = 0
    reconnects: int = 0
    stalls: int = 0

    @classmethod
    def of(cls, doc: RecordingPart | None) -> Totals:
        return cls(doc.bytes, doc.reconnects, doc.stalls) if doc else cls()

    def plus(self, bytes_: int, reconnects: int, stalls: int) -> Totals:
        return Totals(self.bytes + bytes_, self.reconnects + reconnects, self.stalls + stalls)

    def apply(self, doc: RecordingPart) -> None:
        doc.bytes, doc.reconnects, doc.stalls = self.bytes, self.reconnects, self.stalls


@dataclass(frozen=True)
class Claim:
    """What a recorder knows when it starts recording a job it holds the lease of."""

    recorder_id: str
    room_id: str
    title: str | None
    unique_id: str | None
    attempt: int
    engine: str | None = None  # native or tlr-cli
    engine_commit: str | None = None  # tlr-cli: the commit of the checkout it runs
    egress: str | None = None  # the pool egress's name; None: its own proxy, or direct

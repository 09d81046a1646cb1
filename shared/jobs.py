"""Job status in KV ``jobs``: each service writes only its own key; the gateway assembles.

    job.<id>        the request, written by the gateway (``desired`` flips to "cancel")
    job.<id>.rec    the recording, written by whichever recorder holds the job
    job.<id>.up     the upload, written by the uploader
    room.<room_id>  the job that owns a room's recording, written by the recorder

Writes use compare-and-set on the key's revision, so two writers of one part never lose an
update; separate keys mean different services never contend.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Literal, TypeVar

import msgspec
import nats.js.errors
from nats.js.kv import KeyValue

from shared.events import RecordingOptions, UploadedFile, utc_now
from shared.metrics import JOBS
from shared.tiktok.models import StreamSource

T = TypeVar("T")
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


class SegmentEntry(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One file of a job. ``state`` is "recording" while written, "final" once remuxed."""

    path: str
    part: int = 0
    size: int = 0
    duration_s: float | None = None
    state: Literal["recording", "final", "raw"] = "recording"


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
    reconnects: int = 0
    stalls: int = 0
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


async def room_owner(kv: KeyValue, room_id: str) -> str | None:
    """The job that last recorded ``room_id`` (it keeps priority while it is unfinished)."""
    entry = await _get(kv, room_key(room_id))
    return entry[0].decode() if entry else None


async def set_room_owner(kv: KeyValue, room_id: str, job_id: str) -> None:
    await kv.put(room_key(room_id), job_id.encode())


_request_decoder = msgspec.json.Decoder(JobRequest)
_recording_decoder = msgspec.json.Decoder(RecordingPart)
_upload_decoder = msgspec.json.Decoder(UploadPart)


async def get_request(kv: KeyValue, job_id: str) -> tuple[JobRequest, int] | None:
    entry = await _get(kv, request_key(job_id))
    if entry is None:
        return None
    return _request_decoder.decode(entry[0]), entry[1]


async def get_recording(kv: KeyValue, job_id: str) -> tuple[RecordingPart, int] | None:
    entry = await _get(kv, recording_key(job_id))
    if entry is None:
        return None
    return _recording_decoder.decode(entry[0]), entry[1]


async def get_upload(kv: KeyValue, job_id: str) -> tuple[UploadPart, int] | None:
    entry = await _get(kv, upload_key(job_id))
    if entry is None:
        return None
    return _upload_decoder.decode(entry[0]), entry[1]


async def _get(kv: KeyValue, key: str) -> tuple[bytes, int] | None:
    try:
        entry = await kv.get(key)
    except nats.js.errors.KeyNotFoundError:
        return None
    if not entry.value:  # deleted or purged
        return None
    assert entry.revision is not None
    return entry.value, entry.revision


async def create_request(kv: KeyValue, request: JobRequest) -> int:
    """Store a new job; raises KeyWrongLastSequenceError if the id exists."""
    rev: int = await kv.create(request_key(request.job_id), msgspec.json.encode(request))
    JOBS.labels(status="pending").inc()
    return rev


async def update_request(
    kv: KeyValue, job_id: str, change: Callable[[JobRequest | None], JobRequest | None]
) -> JobRequest | None:
    """Apply ``change`` to ``job.<id>`` under CAS. ``change`` returning None writes nothing."""
    return await _cas(kv, request_key(job_id), _request_decoder, change)


async def update_recording(
    kv: KeyValue, job_id: str, change: Callable[[RecordingPart | None], RecordingPart | None]
) -> RecordingPart | None:
    """Create or update ``job.<id>.rec`` under CAS."""

    before: list[str | None] = [None]

    def stamped(doc: RecordingPart | None) -> RecordingPart | None:
        before[0] = doc.state if doc is not None else None
        new = change(doc)
        if new is not None:
            new.updated_at = utc_now()
        return new

    doc = await _cas(kv, recording_key(job_id), _recording_decoder, stamped)
    # Counted on the write that changed the state (the last call of ``stamped`` is the one
    # that was written), so retries of a lost CAS race count once.
    if doc is not None and doc.state != before[0]:
        JOBS.labels(status=doc.state.lower()).inc()
    return doc


async def update_upload(
    kv: KeyValue, job_id: str, change: Callable[[UploadPart | None], UploadPart | None]
) -> UploadPart | None:
    """Create or update ``job.<id>.up`` under CAS."""

    def stamped(doc: UploadPart | None) -> UploadPart | None:
        new = change(doc)
        if new is not None:
            new.updated_at = utc_now()
        return new

    return await _cas(kv, upload_key(job_id), _upload_decoder, stamped)


async def _cas(
    kv: KeyValue,
    key: str,
    decoder: msgspec.json.Decoder[T],
    change: Callable[[T | None], T | None],
) -> T | None:
    """Read, change, write with the read revision; on a lost race read again and retry."""
    for _ in range(50):
        current = await _get(kv, key)
        doc = decoder.decode(current[0]) if current else None
        new = change(doc)
        if new is None:
            return doc
        data = msgspec.json.encode(new)
        try:
            if current is None:
                await kv.create(key, data)
            else:
                await kv.update(key, data, last=current[1])
        except nats.js.errors.KeyWrongLastSequenceError:
            continue
        return new
    msg = f"too many concurrent updates of {key}"
    raise RuntimeError(msg)

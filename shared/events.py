"""Every message that crosses NATS, declared once as a msgspec tagged union.

The tag of each event is also its subject (``subject_for`` in :mod:`shared.subjects`), so a
subject is never typed by hand twice. Schema evolution follows msgspec's rules: a new field
always has a default, an existing field never changes type, and decoders ignore fields they do
not know, so services can be upgraded one at a time.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Literal

import msgspec

SCHEMA_VERSION = 1


def new_id() -> str:
    """A random identifier for events, jobs and correlation ids."""
    return str(uuid.uuid4())


def utc_now() -> datetime:
    return datetime.now(UTC)


class Event(msgspec.Struct, frozen=True, kw_only=True, tag_field="type"):
    """Fields every event carries. ``event_id`` doubles as the ``Nats-Msg-Id`` (dedupe)."""

    v: int = SCHEMA_VERSION
    # Producers that may retry pass a deterministic id (e.g. ``live:<room>:<session>``).
    event_id: str = msgspec.field(default_factory=new_id)
    correlation_id: str = msgspec.field(default_factory=new_id)
    occurred_at: datetime = msgspec.field(default_factory=utc_now)

    @classmethod
    def type_name(cls) -> str:
        tag = cls.__struct_config__.tag
        if not isinstance(tag, str):
            msg = f"{cls.__name__} is not a concrete event (it has no tag)"
            raise TypeError(msg)
        return tag


class RecordingOptions(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """How to record and what to do with the files."""

    upload_s3: bool = False
    quality: str | None = None
    # A proxy or cookies reference; carried sealed so no secret ever sits in an event.
    proxy: str | None = None
    cookies: str | None = None
    output_template: str | None = None
    # The recording engine (ENGINES); None: the recorder's RECORDER_ENGINE. A str, not the
    # Literal, so that an engine added later does not make older recorders drop the event.
    engine: str | None = None
    # The container of the files (FORMATS; a str for the same reason as ``engine``): flv is
    # the stream as received, the others a stream copy of it.
    format: str = "mp4"
    # Also make one file of the live from its segments at the end (runs of segments whose
    # codec parameters match), and keep the segments (or not) once it is made.
    join: bool = False
    keep_segments: bool = True


# The recorder's engines: its own (native) and the upstream CLI run as a subprocess.
EngineName = Literal["native", "tlr-cli"]
ENGINES: tuple[str, ...] = ("native", "tlr-cli")
# The containers a recording can be written in.
OutputFormat = Literal["mp4", "mkv", "ts", "flv"]
FORMATS: tuple[str, ...] = ("mp4", "mkv", "ts", "flv")


class RecordedFile(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One finished file of a recording, relative to RECORDINGS_DIR."""

    path: str
    size: int
    duration_s: float | None = None
    part: int = 0
    remuxed: bool = True
    # A file joined from segments (options.join): the parts it was made of, in order.
    joined_from: tuple[int, ...] = ()


class UploadedFile(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Where a recorded file now lives in object storage (``path`` is the local one)."""

    path: str
    bucket: str
    key: str
    size: int
    etag: str | None = None
    # True when the uploader removed the local copy after confirming the upload.
    local_deleted: bool = False


# --- watchers ---------------------------------------------------------------------------------


class WatchRequested(Event, frozen=True, tag="watch.requested"):
    """Register (or update) a watcher; the scheduler owns it from then on."""

    task_id: str
    key: str
    room_id: str | None = None
    url: str | None = None
    unique_id: str | None = None
    poll_interval: int = 60
    options: RecordingOptions = msgspec.field(default_factory=RecordingOptions)
    # The name of the API key that asked: the watcher and the jobs it starts are its.
    owner: str | None = None


class WatchDeleted(Event, frozen=True, tag="watch.deleted"):
    """Stop a watcher and any recording it started."""

    key: str


class WatchPaused(Event, frozen=True, tag="watch.paused"):
    """Stop polling a watcher (and its recording) until resumed."""

    key: str


class WatchResumed(Event, frozen=True, tag="watch.resumed"):
    """Poll a paused watcher again."""

    key: str


class WatchUpdated(Event, frozen=True, tag="watch.updated"):
    """Change a watcher from its next check on; its recording in progress goes on as it was.

    A field left None is kept. ``options`` is the whole new set (secrets sealed), so a
    redelivered update sets the same thing again.
    """

    key: str
    # The watcher it was read as: a newer watcher made under the same key is left alone.
    task_id: str
    poll_interval: int | None = None
    options: RecordingOptions | None = None
    # True: not checked until False again (unlike watch.paused, its recording goes on).
    paused: bool | None = None


# --- the egress pool (the scheduler owns it) --------------------------------------------------


class EgressAdded(Event, frozen=True, tag="egress.added"):
    """Add an egress to the pool, or replace the one of that name (its proxy, its budget)."""

    name: str
    # Sealed (shared.secrets), like a watcher's options.proxy; None: a direct egress.
    proxy: str | None = None
    requests_per_min: float | None = None  # None: TIKTOK_REQUESTS_PER_MIN


class EgressRemoved(Event, frozen=True, tag="egress.removed"):
    """Take an egress out of the pool; its watchers move to the others."""

    name: str


class EgressFailed(Event, frozen=True, tag="egress.failed"):
    """A recorder's request through a pool egress met a WAF page or an empty body: the pool
    counts it with the scheduler's own answers (two running block the egress)."""

    name: str
    error_code: str  # an ErrorCode (WAF_BLOCKED)
    job_id: str | None = None


# --- recording work (both consumed by the recorders through one durable) ----------------------


class RecordingRequested(Event, frozen=True, tag="recording.requested"):
    """An on-demand recording asked for through the REST API."""

    job_id: str
    room_id: str | None = None
    url: str | None = None
    duration: int | None = None
    options: RecordingOptions = msgspec.field(default_factory=RecordingOptions)
    owner: str | None = None  # the name of the API key that asked


class RoomLive(Event, frozen=True, tag="room.live"):
    """A watched room went live; published once per live session by the scheduler."""

    job_id: str
    room_id: str
    watcher_key: str
    url: str | None = None
    duration: int | None = None
    unique_id: str | None = None
    title: str | None = None
    detected_at: datetime = msgspec.field(default_factory=utc_now)
    options: RecordingOptions = msgspec.field(default_factory=RecordingOptions)
    # The pool egress (its name, never its URL) the live was found through; the recorder
    # fetches room info and media through the same one. None: no pool, or its own proxy.
    egress: str | None = None


class RecordingStarted(Event, frozen=True, tag="recording.started"):
    """A recorder claimed a job and began writing (``part`` > 0 after a failover)."""

    job_id: str
    room_id: str
    recorder_id: str
    part: int = 0
    started_at: datetime = msgspec.field(default_factory=utc_now)


class RecordingFinished(Event, frozen=True, tag="recording.finished"):
    """A job ended, successfully or not; lists every file it produced."""

    job_id: str
    room_id: str | None = None
    returncode: int = 0
    files: list[RecordedFile] = msgspec.field(default_factory=list)
    error_code: str | None = None
    error_message: str | None = None
    started_at: datetime | None = None
    ended_at: datetime = msgspec.field(default_factory=utc_now)
    watcher_key: str | None = None
    upload_s3: bool = False
    # What the files are of, for the index: the live's URL, its host's @name and its title.
    url: str | None = None
    unique_id: str | None = None
    title: str | None = None


class UploadDone(Event, frozen=True, tag="upload.done"):
    """The files of a job that are safe in object storage: all of them, or, when some were
    missing locally (the upload then ends FAILURE FILE_MISSING), those that were uploaded."""

    job_id: str
    files: list[UploadedFile] = msgspec.field(default_factory=list)


class DeleteReason(StrEnum):
    """Why a local file was removed (``FileDeleted.reason``; a plain string on the wire, so a
    new reason never breaks an older consumer)."""

    RETENTION = "retention"  # older than RETENTION_DAYS
    QUOTA = "quota"  # its room was over QUOTA_BYTES_PER_ROOM
    DISK_FLOOR = "disk_floor"  # the disk had less than DISK_FREE_MIN_BYTES free
    UPLOADED = "uploaded"  # DELETE_LOCAL_AFTER_UPLOAD, once the S3 copy was confirmed


class FileDeleted(Event, frozen=True, tag="file.deleted"):
    """A local recorded file was removed: by the indexer (retention, quota, disk floor) or by
    the uploader once its upload was confirmed (``uploaded``)."""

    path: str
    reason: str  # a DeleteReason
    job_id: str | None = None
    room_id: str | None = None
    size: int = 0


AnyEvent = (
    WatchRequested
    | WatchDeleted
    | WatchPaused
    | WatchResumed
    | WatchUpdated
    | EgressAdded
    | EgressRemoved
    | EgressFailed
    | RecordingRequested
    | RoomLive
    | RecordingStarted
    | RecordingFinished
    | UploadDone
    | FileDeleted
)

EVENT_TYPES: tuple[type[Event], ...] = (
    WatchRequested,
    WatchDeleted,
    WatchPaused,
    WatchResumed,
    WatchUpdated,
    EgressAdded,
    EgressRemoved,
    EgressFailed,
    RecordingRequested,
    RoomLive,
    RecordingStarted,
    RecordingFinished,
    UploadDone,
    FileDeleted,
)

_encoder = msgspec.json.Encoder()
_decoder: msgspec.json.Decoder[Any] = msgspec.json.Decoder(AnyEvent)


def encode(event: Event) -> bytes:
    return _encoder.encode(event)


def decode(data: bytes) -> Event:
    """Decode any event by its ``type`` tag.

    Raises:
        msgspec.ValidationError: unknown type, missing or mistyped field.
        msgspec.DecodeError: not JSON at all.
    """
    event: Event = _decoder.decode(data)
    return event

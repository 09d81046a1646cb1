"""Request and response models of the REST API (pydantic stays at this edge)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from services.gateway.validators import CookiesName, OutputTemplate, ProxyUrl, RoomId, TargetUrl
from shared.errors import ErrorCode
from shared.events import EngineName, OutputFormat
from shared.tiktok.quality import Quality
from shared.watchers import Watcher

FORMAT_HELP = (
    "Container of the files: mp4 (default), mkv, ts (each a stream copy of the live), or flv "
    "(the stream as received, no remux); it replaces the output template's extension"
)
JOIN_HELP = (
    "Also make one file of the live from its segments when it ends (stream copy), listed next "
    "to them with joined_from; a resolution or codec change starts a new joined file"
)
OWNER = (
    "The name of the API key it belongs to (a watcher's jobs and files: the watcher's); "
    "null for what was made before ownership was recorded, which only admins see"
)


class RecordingOptionsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    upload_s3: bool = Field(False, description="Upload the files to S3 when the recording ends")
    proxy: ProxyUrl | None = Field(
        None,
        description="Proxy for TikTok requests and the stream; sealed, never logged. Not on a "
        "private, loopback, link-local or CGNAT address unless the deployment allows it "
        "(ALLOW_PRIVATE_PROXIES): 422 otherwise",
    )
    cookies: CookiesName | None = Field(
        None,
        description="Cookie file (Netscape or JSON) for 18+ lives: a name or relative path "
        "inside COOKIES_DIR",
    )
    quality: Quality | None = Field(
        None, description="Preferred quality; lower ones are used when it is missing"
    )
    engine: EngineName | None = Field(
        None,
        description="Recording engine: native (the recorder's own) or tlr-cli (the upstream "
        "tiktok-live-recorder run by the recorder); none: the recorder's RECORDER_ENGINE",
    )
    format: OutputFormat = Field("mp4", description=FORMAT_HELP)
    join: bool = Field(False, description=JOIN_HELP)
    keep_segments: bool = Field(
        True, description="With join: false deletes the segments a joined file was made of"
    )


class RecordingCreate(BaseModel):
    """Body of POST /recordings: give room_id or url (a live/profile URL or @user)."""

    model_config = ConfigDict(extra="forbid")

    room_id: RoomId | None = Field(None, examples=["7503448765740976902"])
    url: TargetUrl | None = Field(None, examples=["https://www.tiktok.com/@alice/live"])
    duration: int | None = Field(
        None, ge=1, le=86_400, description="Seconds to record; none = until the live ends"
    )
    output_template: OutputTemplate | None = Field(
        None,
        description="File name under RECORDINGS_DIR; placeholders {room_id} {user} {title} "
        "{job_id} {part} {YYYY} {MM} {DD} {HH} {mm} {ss} {timestamp}",
        examples=["{room_id}/{YYYY}/{MM}/{DD}/{timestamp}_{title}.mp4"],
    )
    options: RecordingOptionsIn = Field(default_factory=RecordingOptionsIn)


class TaskAccepted(BaseModel):
    task_id: str
    status: Literal["PENDING"] = "PENDING"


JobStatusName = Literal["PENDING", "STARTED", "RETRY", "SUCCESS", "FAILURE", "CANCELLED"]


class S3Object(BaseModel):
    bucket: str
    key: str


class FileOut(BaseModel):
    path: str = Field(description="Relative to RECORDINGS_DIR")
    size: int
    duration_s: float | None = None
    part: int = 0
    state: Literal["recording", "final", "raw"] = Field(
        description="recording: being written; final: playable, in the job's format; raw: FLV "
        "kept (remux failed)"
    )
    joined_from: list[int] = Field(
        default_factory=list,
        description="A file joined from segments (options.join): the parts it holds; [] for a "
        "segment",
    )


class JobResult(BaseModel):
    returncode: int | None = None
    files: list[str] = Field(default_factory=list, description="Final files, in order")
    s3: list[S3Object] = Field(default_factory=list)
    started_at: datetime | None = None
    ended_at: datetime | None = None


class JobProgress(BaseModel):
    bytes: int = 0
    segments: int = 0
    bitrate_kbps: float = 0.0
    quality: str | None = Field(
        None,
        description="The rendition being recorded (sdk_key: origin, uhd_60, hd, sd, ld, ao); "
        "lower than quality_wanted when a better one was dead",
    )
    quality_wanted: str | None = Field(None, description="The first quality asked for")
    stream_source: Literal["main", "backup", "legacy", "unknown"] | None = Field(
        None, description="Where the URL was listed: main, backup CDN, or the legacy map"
    )
    engine: str | None = Field(None, description="The recording engine: native or tlr-cli")
    engine_commit: str | None = Field(
        None, description="tlr-cli: the commit SHA of the upstream checkout that records"
    )
    egress: str | None = Field(
        None,
        description="The egress of the pool the recording goes through (its name); null: "
        "the job's own proxy, or direct",
    )
    reconnects: int = 0
    stalls: int = 0
    recorder_id: str | None = None
    files: list[FileOut] = Field(default_factory=list)


class WatcherOptionsIn(RecordingOptionsIn):
    """Recording options of a watcher; the file name template lives here for watchers."""

    output_template: OutputTemplate | None = Field(
        None,
        description="File name under RECORDINGS_DIR; same placeholders as POST /recordings",
        examples=["{room_id}/{YYYY}/{MM}/{DD}/{timestamp}_{title}.mp4"],
    )


class WatcherCreate(BaseModel):
    """Body of POST /watchers: give room_id or url (a live/profile URL or @user)."""

    model_config = ConfigDict(extra="forbid")

    room_id: RoomId | None = Field(None, examples=["7503448765740976902"])
    url: TargetUrl | None = Field(None, examples=["@alice", "https://www.tiktok.com/@alice/live"])
    poll_interval: int = Field(
        60, ge=10, le=86_400, description="Seconds between two checks of the room (at most)"
    )
    options: WatcherOptionsIn = Field(default_factory=WatcherOptionsIn)


class WatcherOptionsPatch(BaseModel):
    """Options to change: a field sent replaces the watcher's, null clears it, one left out
    is kept (so is a proxy: its value is never shown, send it only to change it)."""

    # Strict: a 0 is not read as false, nor "120" as 120 (a PATCH changes only what it names).
    model_config = ConfigDict(extra="forbid", strict=True)

    upload_s3: bool | None = Field(None, description="null or left out: kept")
    proxy: ProxyUrl | None = Field(None, description="As on POST /watchers; null: no proxy")
    cookies: CookiesName | None = Field(None, description="As on POST /watchers; null: none")
    quality: Quality | None = Field(None, description="null: the deployment's preference")
    output_template: OutputTemplate | None = Field(
        None, description="As on POST /watchers; null: the deployment's OUTPUT_TEMPLATE"
    )
    engine: EngineName | None = Field(
        None, description="As on POST /watchers; null: the deployment's RECORDER_ENGINE"
    )
    format: OutputFormat | None = Field(None, description="As on POST /watchers; null: mp4")
    join: bool | None = Field(None, description="null or left out: kept")
    keep_segments: bool | None = Field(None, description="null or left out: kept")


class WatcherUpdate(BaseModel):
    """Body of PATCH /watchers/{key}: what to change, at least one field; the rest is kept."""

    model_config = ConfigDict(
        extra="forbid", strict=True, json_schema_extra={"examples": [{"poll_interval": 120}]}
    )

    poll_interval: int | None = Field(
        None, ge=10, le=86_400, description="Seconds between two checks (at most)"
    )
    options: WatcherOptionsPatch | None = Field(
        None, description="Recording options of the lives recorded from now on"
    )
    paused: bool | None = Field(
        None,
        description="true: not checked until false again; unlike POST .../pause, the "
        "recording in progress goes on",
    )


BULK_MAX_ITEMS = 1_000


class WatcherBulk(BaseModel):
    """Body of POST /watchers/bulk: up to 1,000 watchers; what GET /watchers?format=json
    exports is such a body."""

    model_config = ConfigDict(extra="forbid")

    items: list[dict[str, Any]] = Field(
        min_length=1,
        max_length=BULK_MAX_ITEMS,
        description="Each a body of POST /watchers, checked on its own: a bad one is refused "
        "in its result, the others are made",
        examples=[[{"url": "@alice"}, {"room_id": "7503448765740976902", "poll_interval": 120}]],
    )


class WatcherBulkResult(BaseModel):
    index: int = Field(description="The item's position in items, from 0")
    key: str | None = Field(None, description="The watcher's key, once the item names one")
    status: int = Field(description="202 made; else as POST /watchers would answer (409, 422)")
    task_id: str | None = Field(None, description="The watch job, when made")
    error_code: ErrorCode | None = None
    error_message: str | None = None


class WatcherBulkOut(BaseModel):
    results: list[WatcherBulkResult] = Field(description="One per item, in order")
    created: int
    failed: int


class WatcherExport(BaseModel):
    """The API key's watchers as POST /watchers bodies (never a proxy: give it again)."""

    items: list[WatcherCreate]


class WatcherOptionsOut(BaseModel):
    upload_s3: bool = False
    quality: str | None = None
    proxy: bool = Field(False, description="A proxy is set (its value is sealed, never shown)")
    cookies: str | None = None
    output_template: str | None = None
    engine: str | None = None
    format: str = "mp4"
    join: bool = False
    keep_segments: bool = True


class WatcherOut(BaseModel):
    """A watcher as the scheduler sees it."""

    key: str = Field(description="Room id, @user, or the short-link URL; used in /watchers/{key}")
    task_id: str = Field(description="The watch job (GET /jobs/{task_id})")
    room_id: str | None = Field(None, description="The room id last seen")
    unique_id: str | None = None
    url: str | None = None
    poll_interval: int
    status: Literal["active", "paused", "deleted"]
    options: WatcherOptionsOut
    created_at: datetime
    last_run_at: datetime | None = None
    last_outcome: str | None = Field(None, description="live, offline, paused or an error code")
    live_state: Literal["unknown", "offline", "live", "paused"] = "unknown"
    last_live_at: datetime | None = None
    current_job_id: str | None = Field(None, description="The recording job running now")
    jobs: list[str] = Field(default_factory=list, description="Recording jobs started, newest last")
    failures: int = 0
    error_code: str | None = Field(
        None,
        description="Why the last check failed, e.g. VALIDATION_ERROR when its proxy cannot be "
        "unsealed here (it is then not polled at all); cleared by a check that succeeds",
    )
    error_message: str | None = None
    next_check_at: datetime | None = None
    owner: str | None = Field(None, description=OWNER)

    @classmethod
    def from_watcher(cls, w: Watcher) -> WatcherOut:
        o = w.options
        return cls(
            key=w.key,
            task_id=w.task_id,
            room_id=w.room_id,
            unique_id=w.unique_id,
            url=w.url,
            poll_interval=w.poll_interval,
            status=w.status,
            options=WatcherOptionsOut(
                upload_s3=o.upload_s3,
                quality=o.quality,
                proxy=o.proxy is not None,
                cookies=o.cookies,
                output_template=o.output_template,
                engine=o.engine,
                format=o.format,
                join=o.join,
                keep_segments=o.keep_segments,
            ),
            created_at=w.created_at,
            last_run_at=w.last_run_at,
            error_code=w.error_code,
            error_message=w.error_message,
            last_outcome=w.last_outcome,
            live_state=w.live_state,
            last_live_at=w.last_live_at,
            current_job_id=w.current_job_id,
            jobs=list(w.jobs),
            failures=w.failures,
            next_check_at=w.next_check_at,
            owner=w.owner,
        )


class WatcherList(BaseModel):
    items: list[WatcherOut]
    page: int
    page_size: int
    total: int


class Ok(BaseModel):
    ok: bool = True


class UploadOut(BaseModel):
    """The upload of a job's files (jobs with ``options.upload_s3``)."""

    state: Literal["STARTED", "RETRY", "SUCCESS", "FAILURE"] = Field(
        description="RETRY: the object store is not reachable; the upload stays queued"
    )
    files_done: int = 0
    bytes_total: int = 0
    bytes_done: int = 0
    error_code: str | None = None
    error_message: str | None = None


class FileItem(BaseModel):
    """One recorded file in the index."""

    id: int | None = Field(
        None, description="Its id: GET /files/{id}/content and /files/{id}/thumbnail"
    )
    name: str
    size: int = Field(description="Bytes")
    mtime: datetime = Field(description="Last write (UTC): the sort key, newest first")
    path: str = Field(description="Relative to RECORDINGS_DIR")
    room_id: str | None = None
    job_id: str | None = None
    s3: S3Object | None = Field(None, description="The object-storage copy, once uploaded")
    local: bool = Field(True, description="False once the local copy was removed")
    duration_s: float | None = None
    user: str | None = Field(None, description="The host's unique id, without @")
    url: str | None = None
    title: str | None = None
    started_at: datetime | None = Field(None, description="When the job's recording started")
    owner: str | None = Field(None, description=OWNER)
    thumbnail: bool = Field(False, description="Its JPEG is at GET /files/{id}/thumbnail")


class FileList(BaseModel):
    items: list[FileItem]
    page: int
    page_size: int
    total: int


class RebuildResult(BaseModel):
    """What a scan of RECORDINGS_DIR changed in the index."""

    scanned: int
    added: int
    updated: int
    removed: int


class JobStatus(BaseModel):
    task_id: str
    kind: Literal["recording", "watch"]
    status: JobStatusName
    room_id: str | None = None
    url: str | None = None
    title: str | None = None
    created_at: datetime
    result: JobResult
    progress: JobProgress
    error_code: str | None = None
    error_message: str | None = None
    correlation_id: str | None = Field(
        None,
        description="The request's X-Correlation-ID, in every event and log line of the job",
    )
    upload: UploadOut | None = Field(
        None, description="Jobs with upload_s3: the upload, once the uploader took it"
    )
    owner: str | None = Field(None, description=OWNER)
    watcher: WatcherOut | None = Field(
        None, description="watch jobs: the watcher, when the scheduler knows it (else null)"
    )
    jobs: list[str] = Field(
        default_factory=list, description="watch jobs: the recording jobs it started"
    )


class JobSummary(BaseModel):
    """One job of a listing, as the job index knows it (GET /jobs/{task_id}: all of it)."""

    task_id: str
    kind: Literal["recording", "watch"]
    status: JobStatusName = Field(
        description="As GET /jobs/{task_id}, except that a watch job is STARTED until cancelled"
    )
    created_at: datetime = Field(description="When it was asked (UTC): the sort key")
    updated_at: datetime | None = Field(None, description="The recording's last change")
    room_id: str | None = None
    user: str | None = Field(None, description="The host's unique id, lower case, without @")
    url: str | None = None
    title: str | None = None
    error_code: str | None = Field(None, description="FAILURE and CANCELLED: why")
    owner: str | None = Field(None, description=OWNER)


class JobList(BaseModel):
    items: list[JobSummary]
    next_cursor: str | None = Field(
        description="Pass it as cursor for the next page; null on the last page"
    )
    page_size: int

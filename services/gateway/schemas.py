"""Request and response models of the REST API (pydantic stays at this edge)."""

from __future__ import annotations

import ipaddress
import re
from datetime import UTC, datetime
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    WithJsonSchema,
)

from shared.naming import validate_template
from shared.tiktok.quality import Quality
from shared.watchers import Watcher

PROXY_SCHEMES = frozenset({"http", "https", "socks5", "socks5h"})
MAX_URL = 300
ROOM_ID_PATTERN = r"^[0-9]{15,20}$"
COOKIES_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}(/[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}){0,7}$"
_ROOM_ID = re.compile(ROOM_ID_PATTERN)
# TikTok usernames: letters, digits, '_' and '.', at most 24, never starting or ending in '.'.
_NAME = r"[A-Za-z0-9_](?:[A-Za-z0-9_.]{0,22}[A-Za-z0-9_])?"
_USER = re.compile(rf"@?{_NAME}")
# A query as TikTok's share links carry (?lang=en&...): plain, percent-encoded characters.
_QUERY = r"(?:\?[A-Za-z0-9._~%&=+-]{0,256})?"
_TIKTOK_URL = re.compile(
    # Profile, live, share/live/<room id> and /t/<code> on www, m and the bare host.
    rf"https://(?i:(?:www\.|m\.)?tiktok\.com)"
    rf"/(?:@{_NAME}(?:/live)?|share/live/[0-9]{{15,20}}|t/[A-Za-z0-9]{{1,32}})/?{_QUERY}"
    # Short links on vm.
    rf"|https://(?i:vm\.tiktok\.com)/[A-Za-z0-9]{{1,32}}/?{_QUERY}"
)
_COOKIES = re.compile(COOKIES_PATTERN)
_ISO_DATETIME = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}"
    r"(?:[Tt ][0-9]{2}:[0-9]{2}(?::[0-9]{2}(?:\.[0-9]{1,9})?)?(?:[Zz]|[+-][0-9]{2}:?[0-9]{2})?)?"
)
_PLACEHOLDER = re.compile(r"\{[A-Za-z_]+\}")
_TEMPLATE_PUNCT = frozenset(" -_.,+=@()[]/")
_HOST_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOSTNAME = re.compile(rf"{_HOST_LABEL}(?:\.{_HOST_LABEL})*\.?")
# RFC 3986 userinfo: unreserved, percent-encoded and sub-delims; it is never seen by a shell.
_USERINFO = re.compile(r"[A-Za-z0-9._~%!$&'()*+,;=:-]*")


def check_room_id(value: str) -> str:
    """``value`` if it is a room id; ValueError otherwise."""
    if not _ROOM_ID.fullmatch(value):
        msg = "room_id must be 15 to 20 digits"
        raise ValueError(msg)
    return value


def check_target_url(value: str) -> str:
    """An https TikTok live, profile or share link (www, m, vm hosts) or an @user name;
    nothing else reaches TikTok. A bare user name comes back as ``@user``."""
    if _USER.fullmatch(value):
        return value if value.startswith("@") else f"@{value}"
    if len(value) > MAX_URL or not _TIKTOK_URL.fullmatch(value):
        msg = (
            "url must be @user (letters, digits, '_' and '.', at most 24) or an https URL "
            "https://www.tiktok.com/@user[/live], https://m.tiktok.com/@user[/live] or "
            "https://vm.tiktok.com/<code>"
        )
        raise ValueError(msg)
    return value


def check_proxy(value: str) -> str:
    """``scheme://[user:password@]host:port`` with scheme http, https, socks5 or socks5h."""
    shape = (
        "proxy must be http://, https:// or socks5:// with a host and a port, "
        "like http://user:pass@host:8080"
    )
    if len(value) > 500 or not value.isascii() or not value.isprintable() or " " in value:
        raise ValueError(shape)
    parts = urlsplit(value)
    try:
        port = parts.port
    except ValueError:
        port = None
    if parts.scheme not in PROXY_SCHEMES or not parts.hostname or not port:
        raise ValueError(shape)
    if not (_is_ip(parts.hostname) or _HOSTNAME.fullmatch(parts.hostname)):
        msg = "proxy host must be a host name or an IP address"
        raise ValueError(msg)
    if not _USERINFO.fullmatch(parts.netloc.rpartition("@")[0]):
        msg = "proxy user and password must be percent-encoded"
        raise ValueError(msg)
    if parts.path not in ("", "/") or parts.query or parts.fragment or "?" in value or "#" in value:
        msg = "proxy must be only scheme, host and port (no path, query or fragment)"
        raise ValueError(msg)
    return value


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def check_cookies_name(value: str) -> str:
    """A file in COOKIES_DIR: a name, or a relative path of plain names (no '..')."""
    if len(value) > 255 or not _COOKIES.fullmatch(value):
        msg = (
            "cookies must name a file in the cookies folder (COOKIES_DIR): letters, digits, "
            "'_', '-' and '.', '/' between folders; not absolute, no '..'"
        )
        raise ValueError(msg)
    return value


def _iso_text(value: object) -> object:
    """Only ISO 8601 text: pydantic alone also reads numbers (``0``) as Unix timestamps."""
    if isinstance(value, str) and _ISO_DATETIME.fullmatch(value):
        return value
    if isinstance(value, datetime):
        return value
    msg = "must be an ISO 8601 date-time such as 2026-03-01T12:00:00Z (no offset = UTC)"
    raise ValueError(msg)


def _in_utc(value: datetime) -> datetime:
    """The same instant in UTC (naive means UTC); ValueError when it falls outside the years
    a datetime can hold, as 0001-01-01T00:00:00+14:00 does."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError:
        msg = "must fall between years 1 and 9999 once in UTC"
        raise ValueError(msg) from None


def _template(value: str) -> str:
    """A safe template (see shared.naming), whose literal text is also plain: no shell or
    glob characters in a file name, even though no shell ever sees one."""
    validate_template(value)
    literal = _PLACEHOLDER.sub("", value)
    if not all(c.isalnum() or c in _TEMPLATE_PUNCT for c in literal):
        msg = (
            "output_template may hold, besides {placeholders}, only letters, digits, "
            f"spaces and {' '.join(sorted(_TEMPLATE_PUNCT - {' '}))}"
        )
        raise ValueError(msg)
    return value


RoomId = Annotated[
    str,
    AfterValidator(check_room_id),
    WithJsonSchema({"type": "string", "pattern": ROOM_ID_PATTERN}),
]
TargetUrl = Annotated[str, AfterValidator(check_target_url)]
ProxyUrl = Annotated[str, AfterValidator(check_proxy)]
CookiesName = Annotated[
    str,
    AfterValidator(check_cookies_name),
    WithJsonSchema({"type": "string", "pattern": COOKIES_PATTERN, "maxLength": 255}),
]
OutputTemplate = Annotated[str, Field(max_length=300), AfterValidator(_template)]
IsoDatetime = Annotated[
    datetime,
    BeforeValidator(_iso_text),
    AfterValidator(_in_utc),
    WithJsonSchema({"type": "string", "format": "date-time"}),
]


class RecordingOptionsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    upload_s3: bool = Field(False, description="Upload the files to S3 when the recording ends")
    proxy: ProxyUrl | None = Field(
        None, description="Proxy for TikTok requests and the stream; sealed, never logged"
    )
    cookies: CookiesName | None = Field(
        None,
        description="Cookie file (Netscape or JSON) for 18+ lives: a name or relative path "
        "inside COOKIES_DIR",
    )
    quality: Quality | None = Field(
        None, description="Preferred quality; lower ones are used when it is missing"
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
        description="recording: being written; final: playable MP4; raw: FLV kept (remux failed)"
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


class WatcherOptionsOut(BaseModel):
    upload_s3: bool = False
    quality: str | None = None
    proxy: bool = Field(False, description="A proxy is set (its value is sealed, never shown)")
    cookies: str | None = None
    output_template: str | None = None


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
    watcher: WatcherOut | None = Field(
        None, description="watch jobs: the watcher, when the scheduler knows it (else null)"
    )
    jobs: list[str] = Field(
        default_factory=list, description="watch jobs: the recording jobs it started"
    )

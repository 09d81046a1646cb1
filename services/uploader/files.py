"""One file of an upload job: where it goes, and making sure the bucket holds it, with retries."""

from __future__ import annotations

import asyncio
import contextlib
import stat
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Protocol

import aiohttp
import botocore.exceptions

from services.uploader import metrics
from services.uploader.s3 import (
    BucketMissing,
    IntegrityError,
    OnProgress,
    RemoteObject,
    error_code,
    is_transient,
    object_key,
)
from services.uploader.settings import UploaderSettings
from shared.consumer import retry_delay
from shared.errors import ErrorCode
from shared.events import RecordedFile
from shared.job_store import JobStore
from shared.logging import get_logger, redact_text

log = get_logger(__name__)


class Objects(Protocol):
    """The object store as the uploader's handlers use it (``s3.ObjectStore`` over S3)."""

    bucket: str

    def is_multipart(self, size: int) -> bool: ...

    def forget_bucket(self) -> None: ...

    async def ensure_bucket(self) -> None: ...

    async def head(self, key: str) -> RemoteObject | None: ...

    async def expected_etag(self, path: Path, size: int) -> str: ...

    async def upload(self, path: Path, key: str, size: int, on_progress: OnProgress) -> str: ...


# A refusal or a missing configuration needs a person: check once a minute.
OPERATOR_DELAY = 60.0
# Within one delivery, the pause before the 2nd, 3rd ... try of a file: up to 0.5, 1, 2 ... s.
ATTEMPT_BACKOFF = 0.5
ATTEMPT_BACKOFF_CAP = 30.0


def attempt_pause(attempt: int) -> float:
    """The pause after try ``attempt`` failed: jittered (see retry_delay), so uploaders that
    lost the store together do not come back together."""
    return retry_delay(attempt, base=ATTEMPT_BACKOFF, cap=ATTEMPT_BACKOFF_CAP)


# What the object store (or the way to it) may raise; anything else is a bug or a local fault.
S3_FAILURES = (
    botocore.exceptions.BotoCoreError,
    botocore.exceptions.ClientError,
    IntegrityError,
    BucketMissing,
    aiohttp.ClientError,
    asyncio.TimeoutError,
)


@dataclass(frozen=True)
class Planned:
    """A file of the job: where it is on disk and where it goes."""

    recorded: RecordedFile
    path: Path
    relative: str  # normalized, posix, under RECORDINGS_DIR
    key: str


@dataclass(frozen=True)
class Stored:
    """A file the bucket is confirmed to hold."""

    planned: Planned
    size: int
    etag: str
    on_disk: bool  # False when only the bucket still has it


class Deferred(Exception):
    """The store cannot take the job now: RETRY, and the job goes back to the queue."""

    def __init__(self, code: str, message: str, delay: float | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.delay = delay  # None: the growing outage backoff


class Missing(Exception):
    """A file is neither on disk nor in the bucket."""


class Progress:
    """``bytes_done`` of ``job.<id>.up``, written after each part or file."""

    def __init__(self, jobs: JobStore, job_id: str, token: int) -> None:
        self.jobs = jobs
        self.job_id = job_id
        self.token = token
        self.committed = 0  # bytes of the files finished so far
        self.done = 0

    def rewind(self) -> None:
        """A file starts (again): its bytes count from zero."""
        self.done = self.committed

    def commit(self) -> None:
        self.committed = self.done

    async def add(self, n: int) -> None:
        self.done += n
        await self.jobs.upload_progress(self.job_id, self.token, self.done)


def plan(settings: UploaderSettings, files: list[RecordedFile]) -> list[Planned]:
    """Each file's absolute path and key (blocking: it resolves symlinks).

    Raises:
        ValueError: a path is absolute, empty, or leads outside RECORDINGS_DIR.
    """
    root = settings.recordings_dir.resolve()
    out = []
    for f in files:
        rel = PurePosixPath(f.path)
        if not f.path or rel.is_absolute() or ".." in rel.parts or rel == PurePosixPath("."):
            msg = f"path {f.path!r} is not a file under RECORDINGS_DIR"
            raise ValueError(msg)
        path = (root / rel).resolve()
        if not path.is_relative_to(root) or path == root:
            msg = f"path {f.path!r} leads outside RECORDINGS_DIR"
            raise ValueError(msg)
        relative = rel.as_posix()
        out.append(Planned(f, root / rel, relative, object_key(settings.s3_prefix, relative)))
    return out


async def sync_file(
    store: Objects, p: Planned, progress: Progress, *, attempts: int, stopping: asyncio.Event
) -> Stored:
    """Make sure the bucket holds ``p``: ``attempts`` tries, exponential backoff between them;
    ``stopping`` set cuts the backoff short.

    Raises:
        Deferred: the store is unreachable (after the last try) or refuses the upload.
        Missing: the file is neither on disk nor in the bucket.
    """
    started = time.perf_counter()
    for attempt in range(1, attempts + 1):
        progress.rewind()
        try:
            result = await _try_file(store, p, progress)
        except S3_FAILURES as exc:
            if isinstance(exc, botocore.exceptions.ClientError) and (
                error_code(exc) == "NoSuchBucket"
            ):
                store.forget_bucket()  # e.g. a restarted store: create it on the next try
            if not is_transient(exc):
                metrics.FILES.labels("failed").inc()
                raise Deferred(ErrorCode.S3_ERROR, describe(exc), OPERATOR_DELAY) from exc
            if attempt == attempts:
                metrics.FILES.labels("failed").inc()
                raise Deferred(ErrorCode.S3_UNAVAILABLE, describe(exc)) from exc
            kind = "integrity" if isinstance(exc, IntegrityError) else "transient"
            metrics.RETRIES.labels(kind).inc()
            pause = attempt_pause(attempt)
            log.warning(
                "uploader.retry", path=p.relative, attempt=attempt, in_s=pause, error=describe(exc)
            )
            if await _pause(stopping, pause):
                msg = f"shutting down during retries: {describe(exc)}"
                raise Deferred(ErrorCode.S3_UNAVAILABLE, msg, 0) from exc
        else:
            metrics.FILE_SECONDS.observe(time.perf_counter() - started)
            return result
    raise AssertionError  # unreachable: the last try returns or raises


async def _try_file(store: Objects, p: Planned, progress: Progress) -> Stored:
    await store.ensure_bucket()
    size = await asyncio.to_thread(size_of, p.path)
    remote = await store.head(p.key)
    if size is None:
        # Gone from disk: fine if the bucket has it (we uploaded it, removed it and stopped
        # before recording SUCCESS); nothing can bring it back otherwise.
        if remote is not None and remote.size == p.recorded.size:
            metrics.FILES.labels("already_present").inc()
            log.info("uploader.missing_but_stored", path=p.relative, key=p.key)
            await progress.add(remote.size)
            return Stored(p, remote.size, remote.etag, on_disk=False)
        log.error("uploader.file_missing", path=p.relative, key=p.key)
        raise Missing(p.relative)
    # A redelivery must not upload twice: same size and same ETag means the same bytes.
    if remote is not None and remote.size == size:
        # An SSE-KMS/SSE-C ETag is no MD5: the size is all a HEAD can confirm there.
        expected = await store.expected_etag(p.path, size) if remote.md5_etag else remote.etag
        if remote.etag == expected:
            metrics.FILES.labels("already_present").inc()
            log.info("uploader.already_present", path=p.relative, key=p.key)
            await progress.add(size)
            return Stored(p, size, expected, on_disk=True)
    etag = await store.upload(p.path, p.key, size, progress.add)
    metrics.FILES.labels("uploaded").inc()
    metrics.BYTES.inc(size)
    log.info(
        "uploader.uploaded",
        path=p.relative,
        key=p.key,
        size=size,
        etag=etag,
        multipart=store.is_multipart(size),
    )
    return Stored(p, size, etag, on_disk=True)


async def _pause(stopping: asyncio.Event, seconds: float) -> bool:
    """Sleep ``seconds`` unless the service stops first; True when it is stopping."""
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(stopping.wait(), seconds)
    return stopping.is_set()


def size_of(path: Path) -> int | None:
    """Size of the regular file at ``path``; None when there is none (blocking)."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_size if stat.S_ISREG(st.st_mode) else None


def describe(exc: BaseException) -> str:
    # Error texts name endpoints and keys, never credentials; URLs are redacted anyway.
    return redact_text(f"{type(exc).__name__}: {exc}")[:500]

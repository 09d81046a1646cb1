"""The uploader's only door to object storage: an aiobotocore S3 client with integrity checks.

Every PUT and part carries its Content-MD5 (the server refuses a body damaged in transit) and
every answer's ETag is compared with the one computed locally, so a file counts as uploaded
only when the store holds exactly its bytes. Files are read in a thread, one part at a time.
A failed part is retried on its own, and an unfinished multipart upload of the key (an outage,
a redelivery) is resumed: only the parts the store lacks are sent again.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import botocore.exceptions
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session

from services.uploader import metrics
from services.uploader.settings import UploaderSettings
from shared.consumer import retry_delay

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client
    from types_aiobotocore_s3.type_defs import CompletedPartTypeDef

# S3 error codes worth another try: throttling, server trouble, a body damaged in transit,
# and a bucket that vanished (a restarted store): the next attempt creates it again.
TRANSIENT_CODES = frozenset(
    {
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "RequestLimitExceeded",
        "RequestTimeout",
        "InternalError",
        "ServiceUnavailable",
        "BadDigest",
        "NoSuchBucket",
        "NoSuchUpload",
    }
)

OnProgress = Callable[[int], Awaitable[None]]

# Tries of one part within one try of its file, with jittered pauses of up to 0.5, 1, 2 s.
PART_ATTEMPTS = 4
PART_BACKOFF = 0.5
PART_BACKOFF_CAP = 8.0


class IntegrityError(Exception):
    """The store's ETag differs from the local one: what it holds is not our file."""


# What one part's upload may raise that another try of it may fix (see is_transient).
PART_FAILURES = (
    botocore.exceptions.BotoCoreError,
    botocore.exceptions.ClientError,
    IntegrityError,
    aiohttp.ClientError,
    asyncio.TimeoutError,
)


class BucketMissing(Exception):
    """The bucket does not exist and S3_CREATE_BUCKET is off."""


@dataclass(frozen=True)
class RemoteObject:
    """What a HEAD tells about an object."""

    size: int
    etag: str  # without the quotes S3 puts around it
    md5_etag: bool = True  # False under SSE-KMS / SSE-C: the ETag says nothing of the bytes


def etag_is_md5(reply: Mapping[str, Any]) -> bool:
    """Whether an S3 answer's ETag can be the MD5 of the bytes (of each part, for multipart).

    Under SSE-KMS (``x-amz-server-side-encryption: aws:kms``, or DSSE) and SSE-C
    (``x-amz-server-side-encryption-customer-algorithm``) it is not: comparing it with a local
    MD5 would fail for ever. Then the Content-MD5 every PUT and part carries (checked by the
    store) and the size stand for it.
    """
    sse = str(reply.get("ServerSideEncryption", ""))
    return not sse.startswith("aws:kms") and not reply.get("SSECustomerAlgorithm")


def create_client(settings: UploaderSettings) -> AbstractAsyncContextManager[S3Client]:
    """An S3 client; credentials and region come from the standard AWS variables.

    botocore's own retries are off: the uploader retries with its own backoff and, beyond
    that, leaves the job queued in JetStream. Short connect timeouts make an outage show fast.
    """
    config = AioConfig(
        connect_timeout=5,
        read_timeout=60,
        retries={"total_max_attempts": 1, "mode": "standard"},
        # We send Content-MD5 ourselves; botocore's default CRC32 trailers would add a second
        # checksum scheme some S3-compatible stores do not speak.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        # MinIO, moto and most self-hosted stores serve buckets as paths, not subdomains.
        s3={"addressing_style": "path" if settings.s3_endpoint_url else "auto"},
        max_pool_connections=max(10, settings.upload_concurrency * 2),
    )
    return get_session().create_client("s3", endpoint_url=settings.s3_endpoint_url, config=config)


def is_transient(exc: BaseException) -> bool:
    """True for failures another try may fix: network trouble, timeouts, 5xx, throttling."""
    if isinstance(exc, IntegrityError | asyncio.TimeoutError | aiohttp.ClientError):
        return True
    if isinstance(
        exc,
        botocore.exceptions.HTTPClientError  # connection refused/closed, read timeouts
        | botocore.exceptions.ConnectionError,
    ):
        return True
    if isinstance(exc, botocore.exceptions.ClientError):
        return status_of(exc) >= 500 or error_code(exc) in TRANSIENT_CODES
    return False


def error_code(exc: botocore.exceptions.ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def status_of(exc: botocore.exceptions.ClientError) -> int:
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))


def object_key(prefix: str, relative: str) -> str:
    """``prefix/relative`` (a posix path), or just ``relative`` without a prefix."""
    prefix = prefix.strip("/")
    return f"{prefix}/{relative}" if prefix else relative


def read_part(path: Path, offset: int, length: int) -> tuple[bytes, bytes]:
    """``length`` bytes of ``path`` from ``offset``, and their MD5 digest (blocking)."""
    with path.open("rb") as f:
        f.seek(offset)
        data = f.read(length)
    if len(data) != length:
        msg = f"{path.name} changed while uploading ({offset + len(data)} < {offset + length})"
        raise IntegrityError(msg)
    return data, hashlib.md5(data, usedforsecurity=False).digest()


def multipart_etag(part_digests: list[bytes]) -> str:
    """S3's ETag of a multipart object: MD5 of the parts' MD5s, then ``-<parts>``."""
    joined = hashlib.md5(b"".join(part_digests), usedforsecurity=False).hexdigest()
    return f"{joined}-{len(part_digests)}"


def part_ranges(size: int, part_size: int) -> list[tuple[int, int]]:
    """(offset, length) of each part of a ``size``-byte file."""
    return [(off, min(part_size, size - off)) for off in range(0, size, part_size)] or [(0, 0)]


def local_etag(path: Path, size: int, *, multipart: bool, part_size: int) -> str:
    """The ETag the store reports for ``path`` uploaded our way (blocking; one part in memory)."""
    if not multipart:
        md5 = hashlib.md5(usedforsecurity=False)
        with path.open("rb") as f:
            while chunk := f.read(1024 * 1024):
                md5.update(chunk)
        return md5.hexdigest()
    return multipart_etag([read_part(path, off, n)[1] for off, n in part_ranges(size, part_size)])


class ObjectStore:
    """One bucket on one S3 endpoint, as the uploader uses it."""

    def __init__(
        self,
        client: S3Client,
        *,
        bucket: str,
        create_bucket: bool,
        multipart_threshold: int,
        part_size: int,
    ) -> None:
        self.client = client
        self.bucket = bucket
        self.create = create_bucket
        self.multipart_threshold = multipart_threshold
        self.part_size = part_size
        self._bucket_ready = False

    def is_multipart(self, size: int) -> bool:
        return size >= self.multipart_threshold

    def forget_bucket(self) -> None:
        """The bucket was reported missing: check (and create) it again before the next use."""
        self._bucket_ready = False

    async def ensure_bucket(self) -> None:
        """Create the bucket when it is missing (and allowed); checked once until forgotten."""
        if self._bucket_ready:
            return
        try:
            await self.client.head_bucket(Bucket=self.bucket)
        except botocore.exceptions.ClientError as exc:
            if status_of(exc) != 404:
                raise
            if not self.create:
                msg = f"bucket {self.bucket} does not exist and S3_CREATE_BUCKET is off"
                raise BucketMissing(msg) from None
            await self._create_bucket()
        self._bucket_ready = True

    async def _create_bucket(self) -> None:
        region = self.client.meta.region_name
        try:
            if region and region != "us-east-1":
                await self.client.create_bucket(
                    Bucket=self.bucket,
                    CreateBucketConfiguration={"LocationConstraint": region},  # type: ignore[typeddict-item]  # any region name is valid here
                )
            else:
                await self.client.create_bucket(Bucket=self.bucket)
        except botocore.exceptions.ClientError as exc:
            # Another uploader created it in the meantime.
            if error_code(exc) != "BucketAlreadyOwnedByYou":
                raise

    async def head(self, key: str) -> RemoteObject | None:
        """The object at ``key``, or None when there is none."""
        try:
            head = await self.client.head_object(Bucket=self.bucket, Key=key)
        except botocore.exceptions.ClientError as exc:
            if status_of(exc) == 404:
                return None
            raise
        return RemoteObject(
            size=head["ContentLength"], etag=_unquote(head["ETag"]), md5_etag=etag_is_md5(head)
        )

    async def expected_etag(self, path: Path, size: int) -> str:
        return await asyncio.to_thread(
            local_etag, path, size, multipart=self.is_multipart(size), part_size=self.part_size
        )

    async def upload(self, path: Path, key: str, size: int, on_progress: OnProgress) -> str:
        """Upload ``size`` bytes of ``path`` to ``key``; returns the verified ETag.

        Raises:
            IntegrityError: the store's ETag is not the local one (or the file changed).
            botocore.exceptions.ClientError, BotoCoreError: the store refused or was unreachable.
        """
        if self.is_multipart(size):
            return await self._upload_parts(path, key, size, on_progress)
        body, digest = await asyncio.to_thread(read_part, path, 0, size)
        reply = await self.client.put_object(
            Bucket=self.bucket, Key=key, Body=body, ContentMD5=_b64(digest)
        )
        await on_progress(size)
        return _checked(reply, digest.hex(), key)

    async def _upload_parts(self, path: Path, key: str, size: int, on_progress: OnProgress) -> str:
        upload_id, stored = await self._resume_or_create(key)
        parts: list[CompletedPartTypeDef] = []
        digests: list[bytes] = []
        try:
            for number, (offset, length) in enumerate(part_ranges(size, self.part_size), 1):
                body, digest = await asyncio.to_thread(read_part, path, offset, length)
                if stored.get(number) == (length, digest.hex()):
                    etag = f'"{digest.hex()}"'  # sent by an earlier try: the same bytes
                else:
                    etag = await self._put_part(key, upload_id, number, body, digest)
                del body  # one part in memory at a time
                parts.append({"ETag": etag, "PartNumber": number})
                digests.append(digest)
                await on_progress(length)
            done = await self.client.complete_multipart_upload(
                Bucket=self.bucket,
                Key=key,
                UploadId=upload_id,
                MultipartUpload={"Parts": parts},
            )
            expected = _checked(done, multipart_etag(digests), key)
        except BaseException as exc:
            # An outage or a shutdown keeps the parts: the next try resumes this upload. Other
            # failures (damaged data, a refusal) abort it, else its parts cost storage until
            # a lifecycle rule reaps them; when that fails too, the rule is the backstop.
            if not _resumable(exc):
                with contextlib.suppress(Exception):
                    await self.client.abort_multipart_upload(
                        Bucket=self.bucket, Key=key, UploadId=upload_id
                    )
            raise
        return expected

    async def _resume_or_create(self, key: str) -> tuple[str, dict[int, tuple[int, str]]]:
        """The newest unfinished upload of ``key`` and its parts {number: (size, ETag)}, or a
        new upload: a retry or a redelivery sends only the parts the store does not have."""
        listed = await self.client.list_multipart_uploads(Bucket=self.bucket, Prefix=key)
        mine = [u for u in listed.get("Uploads", []) if u.get("Key") == key and "UploadId" in u]
        if mine:
            upload_id = max(mine, key=lambda u: str(u.get("Initiated", "")))["UploadId"]
            parts: dict[int, tuple[int, str]] = {}
            marker = 0
            try:
                while True:
                    page = await self.client.list_parts(
                        Bucket=self.bucket, Key=key, UploadId=upload_id, PartNumberMarker=marker
                    )
                    for part in page.get("Parts", []):
                        parts[part["PartNumber"]] = (part["Size"], _unquote(part["ETag"]))
                    if not page.get("IsTruncated"):
                        return upload_id, parts
                    marker = page["NextPartNumberMarker"]
            except botocore.exceptions.ClientError as exc:
                if error_code(exc) != "NoSuchUpload":  # aborted or reaped meanwhile: start anew
                    raise
        created = await self.client.create_multipart_upload(Bucket=self.bucket, Key=key)
        return created["UploadId"], {}

    async def _put_part(
        self, key: str, upload_id: str, number: int, body: bytes, digest: bytes
    ) -> str:
        """Upload one part, retried on its own: a failed part must not cost the parts before."""
        for attempt in range(1, PART_ATTEMPTS + 1):
            try:
                reply = await self.client.upload_part(
                    Bucket=self.bucket,
                    Key=key,
                    UploadId=upload_id,
                    PartNumber=number,
                    Body=body,
                    ContentMD5=_b64(digest),
                )
                _checked(reply, digest.hex(), key)
            except PART_FAILURES as exc:
                gone = isinstance(exc, botocore.exceptions.ClientError) and (
                    error_code(exc) == "NoSuchUpload"
                )
                if attempt == PART_ATTEMPTS or gone or not is_transient(exc):
                    raise
                metrics.RETRIES.labels("part").inc()
                await asyncio.sleep(retry_delay(attempt, base=PART_BACKOFF, cap=PART_BACKOFF_CAP))
            else:
                return reply["ETag"]
        raise AssertionError  # unreachable: the last try returns or raises


def _resumable(exc: BaseException) -> bool:
    """Whether an unfinished multipart upload is worth keeping after ``exc``."""
    if isinstance(exc, asyncio.CancelledError):
        return True
    return is_transient(exc) and not isinstance(exc, IntegrityError)


def _b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode()


def _unquote(etag: str) -> str:
    return etag.strip('"')


def _checked(reply: Mapping[str, Any], expected: str, key: str) -> str:
    """The object's ETag: ``expected`` once compared, or the store's when it cannot be an MD5."""
    if not etag_is_md5(reply):
        return _unquote(str(reply.get("ETag", "")))
    _check(str(reply.get("ETag", "")), expected, key)
    return expected


def _check(etag: str, expected: str, key: str) -> None:
    if _unquote(etag) != expected:
        msg = f"ETag of {key} is {_unquote(etag)!r}, expected {expected!r}"
        raise IntegrityError(msg)

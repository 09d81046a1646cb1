"""An object store in a dict (the uploader's `files.Objects` Protocol), with MD5 ETags like S3."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

from services.uploader.s3 import OnProgress, RemoteObject


class MemoryObjectStore:
    """What ``services.uploader.handlers`` calls on ``ObjectStore``; single-part ETags (MD5).

    ``objects`` maps keys to their bytes; ``uploads`` lists every key uploaded, in order.
    """

    def __init__(self, bucket: str = "recordings", *, sse_kms: bool = False) -> None:
        self.bucket = bucket
        self.sse_kms = sse_kms  # ETags are then opaque (not MD5s), as under SSE-KMS
        self.objects: dict[str, bytes] = {}
        self.uploads: list[str] = []
        self.bucket_checks = 0

    def is_multipart(self, size: int) -> bool:  # noqa: ARG002  # one PUT for every size
        return False

    def forget_bucket(self) -> None:
        pass

    async def ensure_bucket(self) -> None:
        self.bucket_checks += 1

    async def head(self, key: str) -> RemoteObject | None:
        data = self.objects.get(key)
        if data is None:
            return None
        if self.sse_kms:
            return RemoteObject(len(data), self._opaque(data), md5_etag=False)
        return RemoteObject(len(data), hashlib.md5(data).hexdigest())

    @staticmethod
    def _opaque(data: bytes) -> str:
        return hashlib.sha256(b"kms" + data).hexdigest()[:32]

    async def expected_etag(self, path: Path, size: int) -> str:
        data = await asyncio.to_thread(path.read_bytes)
        return hashlib.md5(data[:size]).hexdigest()

    async def upload(self, path: Path, key: str, size: int, on_progress: OnProgress) -> str:
        data = (await asyncio.to_thread(path.read_bytes))[:size]
        self.objects[key] = data
        self.uploads.append(key)
        await on_progress(size)
        return self._opaque(data) if self.sse_kms else hashlib.md5(data).hexdigest()

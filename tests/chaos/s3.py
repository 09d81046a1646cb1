"""The object store of the chaos scenarios: a real S3 server (moto) behind an S3FaultProxy."""

from __future__ import annotations

import os
from dataclasses import dataclass

from shared.config import MIB
from tests.s3_fault_proxy import S3FaultProxy
from tests.s3_server import S3Server

BUCKET = "chaos-recordings"
PART = 5 * MIB  # S3's smallest part: a file of a few MiB uploads in several parts


@dataclass
class ChaosS3:
    server: S3Server
    proxy: S3FaultProxy
    bucket: str = BUCKET

    @property
    def env(self) -> dict[str, str]:
        """What an uploader process needs to upload through the proxy, in parts of PART."""
        aws = {k: v for k, v in os.environ.items() if k.startswith("AWS_")}
        return {
            **aws,
            "S3_BUCKET": self.bucket,
            "S3_ENDPOINT_URL": self.proxy.endpoint_url,
            "S3_MULTIPART_THRESHOLD": str(PART),
            "S3_PART_SIZE": str(PART),
        }

    async def objects(self) -> dict[str, int]:
        """{key: size} of every object in the bucket, asked of the server itself."""
        found: dict[str, int] = {}
        async with self.server.client() as s3:
            paginator = s3.get_paginator("list_objects_v2")
            async for page in paginator.paginate(Bucket=self.bucket):
                for obj in page.get("Contents", []):
                    found[obj.get("Key", "")] = obj.get("Size", 0)
        return found

    async def pending_uploads(self) -> list[str]:
        """Keys of multipart uploads begun and neither completed nor aborted."""
        async with self.server.client() as s3:
            listed = await s3.list_multipart_uploads(Bucket=self.bucket)
        return [u.get("Key", "") for u in listed.get("Uploads", [])]

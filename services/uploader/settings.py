"""The uploader's own settings, on top of the ones every service reads."""

from __future__ import annotations

from pydantic import Field

from shared.config import MIB, Settings


class UploaderSettings(Settings):
    """Settings of the uploader. Credentials come from the standard AWS variables
    (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION, AWS_PROFILE...)."""

    s3_bucket: str | None = Field(
        None, description="Bucket to upload to (unset: upload jobs wait, queued, until it is)"
    )
    s3_endpoint_url: str | None = Field(
        None, description="S3 API endpoint (MinIO, moto...); unset means AWS S3"
    )
    s3_prefix: str = Field("", description="Key prefix; keys mirror the path under RECORDINGS_DIR")
    s3_create_bucket: bool = Field(True, description="Create the bucket when it is missing")
    s3_multipart_threshold: int = Field(
        64 * MIB, ge=5 * MIB, description="Files from this size (bytes) upload in parts"
    )
    s3_part_size: int = Field(
        16 * MIB, ge=5 * MIB, le=5 * 1024 * MIB, description="Size (bytes) of a multipart part"
    )
    s3_attempts: int = Field(
        3, ge=1, le=10, description="Tries per file per delivery before the job is queued again"
    )
    upload_concurrency: int = Field(4, ge=1, le=64, description="Jobs one uploader runs at once")
    ffmpeg_bin: str | None = Field(
        None, description="ffmpeg making thumbnails (unset: ffmpeg on PATH, else the bundled one)"
    )
    delete_local_after_upload: bool = Field(
        False, description="Remove the local file once its upload is confirmed"
    )

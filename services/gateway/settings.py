"""The gateway's own settings, on top of the ones every service reads."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import NoDecode

from shared.config import Settings, split_csv


class GatewaySettings(Settings):
    """Settings of the REST gateway."""

    gateway_host: str = Field("127.0.0.1", description="Address the gateway listens on")
    gateway_port: int = Field(8000, ge=1, le=65535, description="Port the gateway listens on")
    api_keys: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Accepted API keys, comma-separated"
    )
    api_keys_file: Path | None = Field(
        None,
        description="File of API keys, one per line: name key [requests per minute] "
        "[role=admin|user]",
    )
    rate_limit_per_min: int = Field(60, ge=1, description="Requests per minute per API key")
    auth_failures_per_min: int = Field(
        20,
        ge=1,
        le=1_000_000,
        description="Failed authentications (401, 403) one client address may have per minute "
        "in one gateway process; past them every request from it is 429 until the minute ends",
    )
    forwarded_allow_ips: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Reverse proxies (addresses or networks, comma-separated; * = any) whose "
        "X-Forwarded-For names the client (none: it is never believed); passed to uvicorn",
    )
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Origins allowed by CORS, comma-separated (none: no CORS)"
    )
    max_body_bytes: int = Field(
        65_536, ge=1024, description="Largest request body accepted (bigger: 413)"
    )

    files_local: bool = Field(
        True,
        description="Serve file downloads from RECORDINGS_DIR when the file is there (false: a "
        "gateway without the recordings volume; files download from S3 only)",
    )
    download_url_expiry: int = Field(
        300, ge=1, le=604_800, description="Seconds a presigned S3 download URL stays valid"
    )
    s3_endpoint_url: str | None = Field(
        None, description="S3 API endpoint of the uploaded files (MinIO, moto...); unset: AWS S3"
    )

    @field_validator("api_keys", "cors_origins", "forwarded_allow_ips", mode="before")
    @classmethod
    def _split_lists(cls, value: object) -> object:
        return split_csv(value)

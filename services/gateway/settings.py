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
        description="File of API keys, one per line: name key [requests per minute]",
    )
    rate_limit_per_min: int = Field(60, ge=1, description="Requests per minute per API key")
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Origins allowed by CORS, comma-separated (none: no CORS)"
    )
    max_body_bytes: int = Field(
        65_536, ge=1024, description="Largest request body accepted (bigger: 413)"
    )

    @field_validator("api_keys", "cors_origins", mode="before")
    @classmethod
    def _split_lists(cls, value: object) -> object:
        return split_csv(value)

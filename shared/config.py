"""Typed settings read from the environment; built in ``__main__`` only, never at import time."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.tiktok.http import DEFAULT_USER_AGENT


def _default_instance_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


def split_csv(value: object) -> object:
    """Let list settings be written as ``a,b,c`` in the environment."""
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


class Settings(BaseSettings):
    """Settings every service reads. Each field is the upper-cased environment variable."""

    model_config = SettingsConfigDict(env_ignore_empty=True, extra="ignore", frozen=True)

    nats_url: str = Field(
        "nats://127.0.0.1:4222", description="NATS server URL(s), comma-separated for a cluster"
    )
    nats_replicas: int = Field(
        1, ge=1, le=5, description="Replicas of every stream and KV bucket (3 in a cluster)"
    )
    recordings_dir: Path = Field(
        Path("var/recordings"), description="Root folder of every recorded file"
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", description="Minimum log level"
    )
    log_format: Literal["auto", "json", "console"] = Field(
        "auto", description="json, console, or auto (JSON unless stdout is a terminal)"
    )
    metrics_port: int = Field(
        0, ge=0, le=65535, description="Prometheus port of a service (0 = off; gateway: /metrics)"
    )
    metrics_host: str = Field(
        "0.0.0.0", description="Address of /metrics, /healthz and /ready on METRICS_PORT"
    )
    instance_id: str = Field(
        default_factory=_default_instance_id, description="Name of this process in NATS and logs"
    )
    tiktok_web_base: str = Field(
        "https://www.tiktok.com", description="Base URL of TikTok's web host (tests: the fake)"
    )
    tiktok_webcast_base: str = Field(
        "https://webcast.tiktok.com", description="Base URL of TikTok's webcast API host"
    )
    tiktok_user_agent: str = Field(
        DEFAULT_USER_AGENT,
        description="User-Agent of every TikTok request (keep it a current desktop Chrome)",
    )
    tiktok_signer_url: str | None = Field(
        None, description="Signing service for api-live (README: TikTok); off by default"
    )
    tiktok_impersonate: str | None = Field(
        None, description="curl_cffi browser target (e.g. chrome) for www pages; off by default"
    )
    secret_key: str | None = Field(
        None, description="Shared key (base64url, 32 bytes) sealing proxy URLs in events"
    )
    cookies_dir: Path = Field(
        Path("var/cookies"), description="The only folder cookie files may be read from"
    )

    @property
    def nats_servers(self) -> list[str]:
        servers = split_csv(self.nats_url)
        assert isinstance(servers, list)
        return servers


MIB = 1024 * 1024

"""Typed settings read from the environment; built in ``__main__`` only, never at import time."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from shared.egress import DEFAULT_STREAM_HOST_SUFFIXES, StreamPolicy, parse_host_list
from shared.tiktok.http import DEFAULT_USER_AGENT


def _default_instance_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


def split_csv(value: object) -> object:
    """Let list settings be written as ``a,b,c`` in the environment."""
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


class SettingsError(Exception):
    """A setting that cannot work, named in the message (which never holds a secret's value).

    Not a ValueError on purpose: pydantic would wrap it in a ValidationError whose text repeats
    every raw input of the model, passwords included.
    """


NATS_FILE_SETTINGS = (
    "nats_password_file",
    "nats_creds_file",
    "nats_nkey_seed_file",
    "nats_tls_ca",
    "nats_tls_cert",
    "nats_tls_key",
)


class NatsClientSettings(BaseSettings):
    """How a process reaches NATS: URLs, credentials, TLS. ``shared.bus.Bus.connect`` reads
    these from the environment by itself, so every service gets them without passing them."""

    model_config = SettingsConfigDict(env_ignore_empty=True, extra="ignore", frozen=True)

    nats_url: str = Field(
        "nats://127.0.0.1:4222", description="NATS server URL(s), comma-separated for a cluster"
    )
    nats_user: str | None = Field(None, description="NATS user name (with a password)")
    nats_password: SecretStr | None = Field(
        None, description="NATS password; prefer NATS_PASSWORD_FILE (never logged)"
    )
    nats_password_file: Path | None = Field(
        None, description="File holding the NATS password (read at start; trailing newline ignored)"
    )
    nats_creds_file: Path | None = Field(
        None, description="NATS credentials file (JWT and NKey seed, from nsc)"
    )
    nats_nkey_seed_file: Path | None = Field(
        None, description="File holding a NATS user NKey seed (SU...); never the seed itself"
    )
    nats_tls_ca: Path | None = Field(
        None, description="CA bundle (PEM) that verifies the NATS server; turns TLS on"
    )
    nats_tls_cert: Path | None = Field(
        None, description="Client certificate (PEM) for NATS mutual TLS; needs NATS_TLS_KEY"
    )
    nats_tls_key: Path | None = Field(None, description="Private key (PEM) of NATS_TLS_CERT")
    nats_provision: bool = Field(
        True,
        description="Create streams, buckets and durables at start (false: wait for a provisioner)",
    )

    @field_validator(*NATS_FILE_SETTINGS)
    @classmethod
    def _readable(cls, value: Path | None, info: object) -> Path | None:
        if value is None:
            return None
        name = str(getattr(info, "field_name", "")).upper()
        if not value.is_file():
            what = "is not a file" if value.exists() else "does not exist"
            msg = f"{name}: {value} {what}"
            raise SettingsError(msg)
        try:
            with value.open("rb"):
                pass
        except OSError as exc:
            msg = f"{name}: {value} cannot be read ({exc.strerror})"
            raise SettingsError(msg) from None
        return value

    @model_validator(mode="after")
    def _consistent(self) -> NatsClientSettings:
        # Imported here: shared.nats_auth reads these settings.
        from shared.nats_auth import check_client_settings

        check_client_settings(self)
        return self

    @property
    def nats_servers(self) -> list[str]:
        servers = split_csv(self.nats_url)
        assert isinstance(servers, list)
        return servers


class Settings(NatsClientSettings):
    """Settings every service reads. Each field is the upper-cased environment variable."""

    model_config = SettingsConfigDict(env_ignore_empty=True, extra="ignore", frozen=True)

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
    stream_host_suffixes: Annotated[tuple[str, ...], NoDecode] = Field(
        DEFAULT_STREAM_HOST_SUFFIXES,
        description="Hosts stream URLs and their redirects may point at, comma-separated; "
        "each allows its subdomains (an IP address: only itself)",
    )
    allow_private_stream_hosts: bool = Field(
        False,
        description="Let stream URLs reach private, loopback or link-local addresses "
        "(a fake TikTok on this machine)",
    )
    allow_private_proxies: bool = Field(
        False, description="Accept proxies on private, loopback or link-local addresses"
    )
    allow_private_webhooks: bool = Field(
        False,
        description="Let notification targets (webhooks, Apprise URLs with a host) reach "
        "private, loopback or link-local addresses (a receiver on this machine: tests only)",
    )

    @field_validator("stream_host_suffixes", mode="before")
    @classmethod
    def _stream_hosts(cls, value: object) -> object:
        entries = split_csv(value)
        if isinstance(entries, list | tuple) and all(isinstance(e, str) for e in entries):
            try:
                return parse_host_list(entries)
            except ValueError as exc:
                msg = f"STREAM_HOST_SUFFIXES: {exc}"
                raise SettingsError(msg) from None
        msg = "STREAM_HOST_SUFFIXES: a comma-separated list of host names"
        raise SettingsError(msg)

    @field_validator(
        "allow_private_stream_hosts",
        "allow_private_proxies",
        "allow_private_webhooks",
        mode="before",
    )
    @classmethod
    def _switch(cls, value: object, info: object) -> object:
        # pydantic's own message names the field in lower case among every other error; a
        # security switch gets a message of its own.
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _SWITCH_WORDS:
            return _SWITCH_WORDS[value.strip().lower()]
        name = str(getattr(info, "field_name", "")).upper()
        msg = f"{name} must be true or false"
        raise SettingsError(msg)

    @property
    def stream_policy(self) -> StreamPolicy:
        """Where stream GETs may go (STREAM_HOST_SUFFIXES, ALLOW_PRIVATE_STREAM_HOSTS)."""
        return StreamPolicy(self.stream_host_suffixes, self.allow_private_stream_hosts)


_SWITCH_WORDS = {
    "true": True,
    "1": True,
    "yes": True,
    "on": True,
    "false": False,
    "0": False,
    "no": False,
    "off": False,
}


MIB = 1024 * 1024

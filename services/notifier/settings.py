"""The notifier's own settings, on top of the ones every service reads (ALLOW_PRIVATE_WEBHOOKS
and SECRET_KEY, which it shares with the gateway, among them)."""

from __future__ import annotations

from pydantic import Field

from shared.config import Settings


class NotifierSettings(Settings):
    """Settings of the notifier."""

    notify_max_attempts: int = Field(
        8, ge=1, le=100, description="Attempts at one notification before it is a dead letter"
    )
    notify_retry_base: float = Field(
        2.0, gt=0, le=3600, description="Seconds before the first retry; doubles each time"
    )
    notify_retry_cap: float = Field(
        600.0, gt=0, le=86_400, description="Longest wait (seconds) between two attempts"
    )
    notify_timeout: float = Field(
        10.0, gt=0, le=120, description="Seconds a target gets to answer one notification"
    )
    notify_concurrency: int = Field(
        16, ge=1, le=256, description="Notifications one notifier sends at once"
    )

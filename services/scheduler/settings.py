"""The scheduler's own settings, on top of the ones every service reads."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from shared.config import Settings


class SchedulerSettings(Settings):
    """Settings of the scheduler (watchers and polling)."""

    scheduler_db: Path = Field(
        Path("var/scheduler.sqlite3"), description="SQLite file of the watchers"
    )
    check_batch_size: int = Field(
        50, ge=1, le=200, description="Room ids per TikTok check_alive request"
    )
    tiktok_requests_per_min: float = Field(
        120.0, gt=0, description="Polling budget: TikTok requests per minute per egress (proxy)"
    )
    egress_file: Path | None = Field(
        None,
        description="The egress pool's file: one 'name direct|proxy-url [requests-per-minute]' "
        "a line, read when a scheduler starts leading (docs/runbook.md, egress pool)",
    )

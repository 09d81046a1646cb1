"""The scheduler's NATS wiring: its durable on watch commands and its micro endpoints."""

from __future__ import annotations

from shared.service import BaseService
from shared.subjects import SCHEDULER


class SchedulerService(BaseService):
    name = "scheduler"
    description = "Owns watchers; polls TikTok in batches; publishes room.live"
    durables = (SCHEDULER,)

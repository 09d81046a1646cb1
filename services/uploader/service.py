"""The uploader's NATS wiring: its durable on recording.finished."""

from __future__ import annotations

from shared.service import BaseService
from shared.subjects import UPLOADER


class UploaderService(BaseService):
    name = "uploader"
    description = "Uploads finished recordings to S3; publishes upload.done"
    durables = (UPLOADER,)

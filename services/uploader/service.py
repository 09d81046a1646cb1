"""The uploader's wiring: its S3 client and its share of the ``uploader`` durable."""

from __future__ import annotations

import contextlib
from typing import Any

from nats.micro.service import Group

from services.uploader.handlers import UploaderDeps, on_recording_finished
from services.uploader.s3 import ObjectStore, create_client
from services.uploader.settings import UploaderSettings
from shared.consumer import Delivery
from shared.documents import KvDocuments
from shared.events import Event, RecordingFinished
from shared.job_store import JobStore
from shared.lease import KvLeases
from shared.logging import get_logger, redact_text
from shared.service import BaseService
from shared.subjects import JOBS_BUCKET, UPLOADER
from shared.thumbnails import Thumbnailer, find_ffmpeg

log = get_logger(__name__)

# in_progress() this often keeps a long upload's message ours (UPLOADER ack_wait is 60 s).
HEARTBEAT = 15.0


class UploaderService(BaseService[UploaderSettings]):
    name = "uploader"
    description = "Uploads finished recordings to S3; publishes upload.done"
    durables = (UPLOADER,)
    settings_type = UploaderSettings
    # SIGTERM: uploads in flight get this long to finish; the rest are handed back (nak)
    # and start over elsewhere, skipping the files already in the bucket.
    drain_grace = 30.0

    async def start(self, group: Group) -> None:  # noqa: ARG002  (no endpoints beyond status)
        settings = self.settings
        self._exit = contextlib.AsyncExitStack()
        try:
            store = None
            if settings.s3_bucket:
                client = await self._exit.enter_async_context(create_client(settings))
                store = ObjectStore(
                    client,
                    bucket=settings.s3_bucket,
                    create_bucket=settings.s3_create_bucket,
                    multipart_threshold=settings.s3_multipart_threshold,
                    part_size=settings.s3_part_size,
                )
            else:
                log.warning("uploader.s3_not_configured")
            self.deps = UploaderDeps(
                uploader_id=settings.instance_id,
                settings=settings,
                jobs=JobStore(KvDocuments(await self.bus.kv(JOBS_BUCKET))),
                leases=KvLeases(await self.bus.claims()),
                store=store,
                publisher=self.bus,
                thumbnails=self._thumbnails(settings),
            )
        except BaseException:
            await self._exit.aclose()
            raise
        self.consume(
            UPLOADER,
            self._handle,
            concurrency=settings.upload_concurrency,
            heartbeat=HEARTBEAT,
        )

    @staticmethod
    def _thumbnails(settings: UploaderSettings) -> Thumbnailer | None:
        ffmpeg = find_ffmpeg(settings.ffmpeg_bin)
        if ffmpeg is None:
            log.warning("uploader.no_ffmpeg", note="files are uploaded without thumbnails")
            return None
        return Thumbnailer(ffmpeg, settings.recordings_dir)

    async def _handle(self, event: Event, delivery: Delivery) -> None:
        match event:
            case RecordingFinished():
                await on_recording_finished(event, delivery, self.deps)

    async def draining(self) -> None:
        # Uploads waiting between retries stop waiting and hand their job back at once.
        self.deps.stopping.set()

    async def stop(self) -> None:
        await self._exit.aclose()

    def status(self) -> dict[str, Any]:
        settings = self.settings
        return {
            "bucket": settings.s3_bucket,
            "endpoint": redact_text(settings.s3_endpoint_url or "aws"),
            "uploading": sorted(self.deps.active),
        }

"""The recorder's NATS wiring: the shared ``recorders`` durable, cancel signals, shutdown."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import httpx
import msgspec
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.micro.service import Group

from services.recorder.deps import RecorderDeps
from services.recorder.egress_pick import NatsEgressPicker
from services.recorder.engines import Engines
from services.recorder.engines.checkout import pin_matches, read_commit
from services.recorder.engines.tlr_cli import TlrCliEngine
from services.recorder.ffmpeg import FfmpegMissingError, choose_ffmpeg
from services.recorder.handlers import on_recording_work
from services.recorder.media import FfmpegMedia, Media
from services.recorder.recording import PROGRESS_EVERY
from services.recorder.settings import RecorderSettings
from services.recorder.startup import StartUps
from shared.consumer import Delivery
from shared.documents import KvDocuments
from shared.events import Event, RecordingRequested, RoomLive
from shared.job_store import JobStore
from shared.jobs import JobRequest
from shared.lease import KvLeases
from shared.logging import get_logger
from shared.service import BaseService
from shared.subjects import JOB_REQUEST_CHANGES, JOBS_BUCKET, LEASE_RENEW, RECORDERS
from shared.tiktok.guards import StreamGuard
from shared.tiktok.pool import ClientPool

log = get_logger(__name__)


class RecorderService(BaseService[RecorderSettings]):
    name = "recorder"
    description = "Records live rooms; one recorder per room, failover by lease"
    durables = (RECORDERS,)
    settings_type = RecorderSettings
    # SIGTERM: stop pulling, hand unfinished recordings to another recorder (nak), within
    # this grace; compose and Kubernetes must allow a little more (stop_grace_period).
    drain_grace = 30.0

    async def start(self, group: Group) -> None:  # noqa: ARG002  (no endpoints beyond status)
        settings = self.settings
        # The direct client only ever fetches streams: every request (each redirect hop
        # included) goes only where STREAM_HOST_SUFFIXES / ALLOW_PRIVATE_STREAM_HOSTS allow.
        guard = StreamGuard(settings.stream_policy, via_proxy=False, every_request=True)
        self._http = httpx.AsyncClient(
            timeout=httpx.Timeout(10.0, read=settings.read_timeout),
            follow_redirects=False,
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=50),
            event_hooks={"request": [guard]},
        )
        self._pool = ClientPool(settings)
        ffmpeg, missing = await self._ffmpeg(settings.ffmpeg_bin)
        native = FfmpegMedia(
            root=settings.recordings_dir,
            ffmpeg=ffmpeg or "",
            http=self._http,
            read_timeout=settings.read_timeout,
            progress_interval=PROGRESS_EVERY,
        )
        tlr_cli = TlrCliEngine(
            settings=settings, ffmpeg=ffmpeg, native=native, progress_interval=PROGRESS_EVERY
        )
        engines: dict[str, Media] = {"native": native, "tlr-cli": tlr_cli}
        self.deps = RecorderDeps(
            recorder_id=settings.instance_id,
            settings=settings,
            store=JobStore(KvDocuments(await self.bus.kv(JOBS_BUCKET))),
            leases=KvLeases(await self.bus.claims()),
            publisher=self.bus,
            tiktok=self._pool,
            egresses=NatsEgressPicker(self.bus.nc),
            startups=StartUps(settings.max_startups, max_lag=settings.max_loop_lag),
            media=Engines(engines, settings.recorder_engine, ffmpeg_missing=missing),
            engine_commits=self._commits(),
        )
        self._cancels: Subscription = await self.bus.nc.subscribe(
            JOB_REQUEST_CHANGES, cb=self._on_job
        )
        self._tasks.append(asyncio.create_task(self.deps.endings.watch(self._stop)))
        self.consume(
            RECORDERS,
            self._handle,
            concurrency=settings.max_recordings,
            heartbeat=LEASE_RENEW,
        )

    @staticmethod
    async def _ffmpeg(explicit: str | None) -> tuple[str | None, str | None]:
        """The ffmpeg for every remux, chosen once (it runs ``ffmpeg -version``) and logged;
        without one, (None, why): the recorder runs and its jobs fail with FFMPEG_MISSING."""
        try:
            choice = await asyncio.to_thread(choose_ffmpeg, explicit)
        except FfmpegMissingError as exc:
            log.error("recorder.ffmpeg_missing", error=str(exc))
            return None, str(exc)
        log.info(
            "recorder.ffmpeg",
            path=choice.path,
            version=choice.version,
            source=choice.source,
            note=choice.note,
        )
        return choice.path, None

    def _commits(self) -> dict[str, str]:
        """The commit the tlr-cli engine runs (its checkout's), when one is configured."""
        root = self.settings.tlr_root
        commit = read_commit(root) if root is not None else None
        return {"tlr-cli": commit} if commit else {}

    def metadata(self) -> dict[str, str]:
        """GET /services shows each recorder's default engine and the upstream commit."""
        settings = self.settings
        meta: dict[str, str] = {"engine": settings.recorder_engine}
        if settings.tlr_root is not None:
            commit = read_commit(settings.tlr_root)
            meta["upstream_commit"] = commit or "unknown"
            if settings.tlr_pin:
                pinned = pin_matches(commit, settings.tlr_pin)
                meta["upstream_pin"] = (
                    "match" if pinned else ("override" if settings.tlr_pin_override else "mismatch")
                )
        return meta

    async def _handle(self, event: Event, delivery: Delivery) -> None:
        match event:
            case RecordingRequested() | RoomLive():
                await on_recording_work(event, delivery, self.deps)

    async def _on_job(self, msg: Msg) -> None:
        """A job request changed: cancel it here if this process records it."""
        job_id = msg.subject.rsplit(".", 1)[-1]
        job = self.deps.active.get(job_id)
        if job is None or not msg.data:
            return
        with contextlib.suppress(msgspec.DecodeError, msgspec.ValidationError):
            if msgspec.json.decode(msg.data, type=JobRequest).desired == "cancel":
                log.info("recorder.cancel_requested", job_id=job_id)
                job.halt("cancelled")

    async def stop(self) -> None:
        with contextlib.suppress(Exception):
            await self._cancels.unsubscribe()
        await self._pool.aclose()
        await self._http.aclose()

    def status(self) -> dict[str, Any]:
        return {"recording": sorted(self.deps.active)}

    async def draining(self) -> None:
        # SIGTERM: every recording finalizes what it wrote and is handed back at once
        # (after pulling stopped, so the job goes to another recorder, not back to us).
        for job in list(self.deps.active.values()):
            job.halt("shutdown")

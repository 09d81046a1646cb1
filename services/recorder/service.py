"""The recorder's NATS wiring: the shared ``recorders`` durable, cancel signals, shutdown."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, ClassVar

import httpx
import msgspec
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.micro.service import Group

from services.recorder.ffmpeg import choose_ffmpeg
from services.recorder.handlers import RecorderDeps, Work, on_recording_work
from shared.bus import Delivery
from shared.config import RecorderSettings, Settings
from shared.events import Event
from shared.jobs import JobRequest
from shared.logging import get_logger
from shared.secrets import SecretBox, SecretError
from shared.service import BaseService
from shared.subjects import CLAIMS_BUCKET, JOBS_BUCKET, LEASE_RENEW, RECORDERS
from shared.tiktok import TikTokClient, load_cookies
from shared.tiktok.factory import client_from_settings, signer_from_settings

log = get_logger(__name__)

# Every write of a job request document; a recorder filters for the jobs it records.
JOB_REQUESTS = f"$KV.{JOBS_BUCKET}.job.*"


class RecorderService(BaseService):
    name = "recorder"
    description = "Records live rooms; one recorder per room, failover by lease"
    durables = (RECORDERS,)
    settings_type: ClassVar[type[Settings]] = RecorderSettings
    # SIGTERM: stop pulling, hand unfinished recordings to another recorder (nak), within
    # this grace; compose and Kubernetes must allow a little more (stop_grace_period).
    drain_grace = 30.0

    async def start(self, group: Group) -> None:  # noqa: ARG002  (no endpoints beyond status)
        settings = self.settings
        assert isinstance(settings, RecorderSettings)
        self._http = httpx.AsyncClient(
            timeout=httpx.Timeout(10.0, read=settings.read_timeout),
            follow_redirects=False,
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=50),
        )
        self._clients: dict[tuple[str | None, str | None], TikTokClient] = {}
        self._signer = signer_from_settings(settings)
        self._secrets = SecretBox(settings.secret_key) if settings.secret_key else None
        self.deps = RecorderDeps(
            recorder_id=settings.instance_id,
            settings=settings,
            jobs_kv=await self.bus.kv(JOBS_BUCKET),
            claims_kv=await self.bus.kv(CLAIMS_BUCKET),
            publish=self.bus.publish,
            tiktok=self._tiktok_for,
            http=self._http_for,
            ffmpeg=await self._ffmpeg(settings.ffmpeg_bin),
        )
        self._cancels: Subscription = await self.bus.nc.subscribe(JOB_REQUESTS, cb=self._on_job)
        self.consume(
            RECORDERS,
            self._handle,
            concurrency=settings.max_recordings,
            heartbeat=LEASE_RENEW,
        )

    @staticmethod
    async def _ffmpeg(explicit: str | None) -> str:
        """The ffmpeg for every remux, chosen once (it runs ``ffmpeg -version``) and logged."""
        choice = await asyncio.to_thread(choose_ffmpeg, explicit)
        log.info(
            "recorder.ffmpeg",
            path=choice.path,
            version=choice.version,
            source=choice.source,
            note=choice.note,
        )
        return choice.path

    async def _handle(self, event: Event, delivery: Delivery) -> None:
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

    async def _tiktok_for(self, work: Work) -> TikTokClient:
        """One client per (proxy, cookies): TLS contexts and pools are shared, not per job."""
        proxy = self._proxy(work)
        key = (proxy, work.options.cookies)
        if key not in self._clients:
            settings = self.settings
            cookies = (
                load_cookies(work.options.cookies, settings.cookies_dir)
                if work.options.cookies
                else None
            )
            client = client_from_settings(
                settings, proxy=proxy, cookies=cookies, signer=self._signer
            )
            self._clients[key] = client
        return self._clients[key]

    async def _http_for(self, work: Work) -> httpx.AsyncClient:
        proxy = self._proxy(work)
        if proxy is None:
            return self._http
        client = await self._tiktok_for(work)
        return client.http

    def _proxy(self, work: Work) -> str | None:
        if work.options.proxy is None:
            return None
        if self._secrets is None:
            msg = "options.proxy is sealed but this recorder has no SECRET_KEY"
            raise SecretError(msg)
        return self._secrets.unseal(work.options.proxy)

    async def stop(self) -> None:
        with contextlib.suppress(Exception):
            await self._cancels.unsubscribe()
        for client in self._clients.values():
            await client.aclose()
        if self._signer is not None:
            await self._signer.aclose()
        await self._http.aclose()

    def status(self) -> dict[str, Any]:
        return {"recording": sorted(self.deps.active)}

    async def draining(self) -> None:
        # SIGTERM: every recording finalizes what it wrote and is handed back at once
        # (after pulling stopped, so the job goes to another recorder, not back to us).
        for job in list(self.deps.active.values()):
            job.halt("shutdown")

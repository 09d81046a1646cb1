"""The indexer's NATS wiring: its durable, files.query/get/rebuild, jobs.query, retention.

Indexers share one SQLite index (INDEX_DB) and RECORDINGS_DIR, so they run where both are
mounted (one host, or pods on one node). Every instance answers files.query and files.rebuild;
only the one holding the ``leader.indexer`` lease consumes events and applies retention, so
there is one writer of events and one deleter of files. A standby takes over within the lease
TTL when the leader dies.
"""

from __future__ import annotations

import asyncio
import functools
import time
from typing import Any

import msgspec
import nats.errors
from nats.micro.request import Request, ServiceError
from nats.micro.service import Group

from services.indexer import jobs_query, metrics
from services.indexer.handlers import (
    IndexerDeps,
    on_file_deleted,
    on_recording_finished,
    on_upload_done,
)
from services.indexer.jobs import JobGuard
from services.indexer.jobs_feed import JobFeed
from services.indexer.jobs_index import JobIndex
from services.indexer.retention import Retention, RetentionDeps
from services.indexer.scan import rebuild
from services.indexer.settings import IndexerSettings
from services.indexer.store import IndexStore
from shared import lease as leases
from shared.bus import TRANSIENT
from shared.consumer import Delivery
from shared.documents import KvDocuments
from shared.events import Event, FileDeleted, RecordingFinished, UploadDone
from shared.files import MAX_PAGE_SIZE, FileGet, FileQuery, RebuildReply
from shared.job_store import JobStore
from shared.logging import get_logger
from shared.service import BaseService
from shared.subjects import INDEXER, JOBS_BUCKET
from shared.thumbnails import Thumbnailer, find_ffmpeg

log = get_logger(__name__)

BAD_REQUEST, NOT_FOUND = "400", "404"  # nats.micro error codes
UNAVAILABLE, INTERNAL = "503", "500"
FILES_GAUGE_EVERY = 10.0  # seconds between two refreshes of the indexed-files gauge
LEADER_LEASE = "leader.indexer"

_encoder = msgspec.json.Encoder()
_query_decoder = msgspec.json.Decoder(FileQuery)
_get_decoder = msgspec.json.Decoder(FileGet)


class IndexerService(BaseService[IndexerSettings]):
    name = "indexer"
    description = "Indexes recorded files; answers file queries; applies retention"
    durables = (INDEXER,)
    settings_type = IndexerSettings

    async def start(self, group: Group) -> None:
        settings = self.settings
        await asyncio.to_thread(settings.recordings_dir.mkdir, parents=True, exist_ok=True)
        self.store = await IndexStore(settings.index_db).__aenter__()
        # The job index (GET /jobs): its own tables in INDEX_DB, written by the leader.
        self.job_index = JobIndex(settings.index_db)
        try:
            await self.job_index.open()
            await self._start(group, settings)
        except BaseException:
            await self.stop()  # their threads would keep the process alive
            raise

    async def _start(self, group: Group, settings: IndexerSettings) -> None:
        root = settings.recordings_dir
        self.jobs = JobStore(KvDocuments(await self.bus.kv(JOBS_BUCKET)))
        ffmpeg = find_ffmpeg(settings.ffmpeg_bin)
        if ffmpeg is None:
            log.warning("indexer.no_ffmpeg", note="files are indexed without thumbnails")
        thumbnails = Thumbnailer(ffmpeg, root) if ffmpeg else None
        self.deps = IndexerDeps(store=self.store, root=root, jobs=self.jobs, thumbnails=thumbnails)
        self.retention = Retention(
            RetentionDeps(
                store=self.store,
                root=root,
                settings=settings,
                publish=self.bus.publish,
                caught_up=self._caught_up,
                jobs=self.jobs,
            )
        )
        self._rebuilding = asyncio.Lock()
        self._files_counted_at = float("-inf")
        self.leader = False
        await group.add_endpoint(name="files_query", subject="files.query", handler=self._on_query)
        await group.add_endpoint(name="files_get", subject="files.get", handler=self._on_get)
        await group.add_endpoint(
            name="files_rebuild", subject="files.rebuild", handler=self._on_rebuild
        )
        await group.add_endpoint(
            name="jobs_query",
            subject="jobs.query",
            handler=functools.partial(jobs_query.answer, self.job_index),
        )
        self._tasks.append(asyncio.create_task(self._lead()))

    async def stop(self) -> None:
        await self.store.close()
        await self.job_index.close()

    def status(self) -> dict[str, Any]:
        return {
            "leader": self.leader,
            "retention_passes": self.retention.passes,
            "retention_waiting_for_events": self.retention.waiting_for_events,
            "last_deleted": self.retention.last_deleted,
        }

    # --- leadership --------------------------------------------------------------------------

    async def _lead(self) -> None:
        me = leases.Holder(owner=self.settings.instance_id, purpose="indexer")
        claims = await self.bus.claims()
        await leases.lead(claims, LEADER_LEASE, me, self._stop, self._while_leader, self._led)

    def _led(self, leading: bool) -> None:
        self.leader = leading
        metrics.IS_LEADER.set(int(leading))

    async def _while_leader(self, lost: asyncio.Event) -> None:
        """Consume events, follow the job documents, apply retention until the lease is lost."""
        # One at a time: events then apply in stream order (recording.finished, upload.done).
        consumer = self.bus.consumer(INDEXER, self._handle)
        await asyncio.gather(
            consumer.run(lost, grace=self.drain_grace),
            self._maintain(lost),
            JobFeed(self.bus.nc, self.job_index).run(lost),
            return_exceptions=True,
        )

    async def _maintain(self, stop: asyncio.Event) -> None:
        """Rebuild from disk if the index is empty (a new or lost INDEX_DB), then retention."""
        try:
            if await self.store.count() == 0:
                await self.rebuild()
        except Exception:
            log.exception("indexer.initial_rebuild_failed")
        await self.retention.run(stop)

    async def rebuild(self) -> RebuildReply:
        """Reconcile the index with RECORDINGS_DIR (one scan at a time)."""
        async with self._rebuilding:
            reply = await rebuild(self.store, self.deps.root, JobGuard(self.jobs))
        metrics.REBUILDS.inc()
        metrics.FILES.set(await self.store.count())
        return reply

    async def _handle(self, event: Event, delivery: Delivery) -> None:  # noqa: ARG002
        match event:
            case RecordingFinished():
                await on_recording_finished(event, self.deps)
            case UploadDone():
                await on_upload_done(event, self.deps)
            case FileDeleted():
                await on_file_deleted(event, self.deps)
        # Every write drops the cached total, and a count of a million rows takes milliseconds:
        # refresh the gauge now and then, not after each event.
        now = time.monotonic()
        if now - self._files_counted_at >= FILES_GAUGE_EVERY:
            self._files_counted_at = now
            metrics.FILES.set(await self.store.count())

    async def _caught_up(self) -> bool:
        """True when our durable has nothing left to deliver or to ack."""
        try:
            info = await self.bus.js.consumer_info(INDEXER.stream, INDEXER.name)
        except (*TRANSIENT, nats.errors.Error):
            return True  # NATS is away: no event can arrive; the index is as current as it gets
        return not info.num_pending and not info.num_ack_pending

    async def _on_query(self, req: Request) -> None:
        started = time.perf_counter()
        try:
            query = _query_decoder.decode(req.data or b"{}")
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            raise ServiceError(BAD_REQUEST, f"bad query: {exc}") from exc
        if query.page < 1:
            raise ServiceError(BAD_REQUEST, "page must be 1 or more")
        if not 1 <= query.page_size <= MAX_PAGE_SIZE:
            raise ServiceError(BAD_REQUEST, f"page_size must be 1 to {MAX_PAGE_SIZE}")
        if self.store.closed:
            raise ServiceError(UNAVAILABLE, "the indexer is stopping")
        try:
            page = await self.store.query(query)
        except Exception as exc:
            log.exception("indexer.query_failed")
            raise ServiceError(INTERNAL, "query failed") from exc
        await req.respond(_encoder.encode(page))
        metrics.QUERY_SECONDS.observe(time.perf_counter() - started)

    async def _on_get(self, req: Request) -> None:
        try:
            wanted = _get_decoder.decode(req.data or b"")
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            raise ServiceError(BAD_REQUEST, f"bad request: {exc}") from exc
        if self.store.closed:
            raise ServiceError(UNAVAILABLE, "the indexer is stopping")
        try:
            found = await self.store.by_id(wanted.id)
        except Exception as exc:
            log.exception("indexer.get_failed")
            raise ServiceError(INTERNAL, "lookup failed") from exc
        if found is None:
            raise ServiceError(NOT_FOUND, f"no file {wanted.id}")
        await req.respond(_encoder.encode(found))

    async def _on_rebuild(self, req: Request) -> None:
        if self.store.closed:
            raise ServiceError(UNAVAILABLE, "the indexer is stopping")
        try:
            reply = await self.rebuild()
        except Exception as exc:
            log.exception("indexer.rebuild_failed")
            raise ServiceError(INTERNAL, "rebuild failed") from exc
        await req.respond(_encoder.encode(reply))

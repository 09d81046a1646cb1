"""The scheduler's NATS wiring: the polling lease, the command durable, the micro endpoints.

Every scheduler instance answers watcher queries; only the one holding the ``leader.scheduler``
lease consumes watch commands and polls TikTok. Instances share one SQLite file (the leader
writes, WAL lets the others read), so a standby that takes over has the same watchers.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import msgspec
from nats.micro.request import Request, ServiceError
from nats.micro.service import Group

from services.scheduler import metrics
from services.scheduler.budget import Budget, BudgetStopped
from services.scheduler.egress_commands import (
    apply_egress_file,
    on_egress_added,
    on_egress_failed,
    on_egress_removed,
)
from services.scheduler.egress_file import EgressEntry, read_egress_file
from services.scheduler.egress_pool import EgressPool
from services.scheduler.egress_router import EgressRouter
from services.scheduler.egress_store import EgressStore
from services.scheduler.handlers import (
    on_watch_deleted,
    on_watch_paused,
    on_watch_requested,
    on_watch_resumed,
    on_watch_updated,
)
from services.scheduler.owned_jobs import WatcherJobs
from services.scheduler.poll_loop import Poller
from services.scheduler.poller import PollDeps, pace
from services.scheduler.settings import SchedulerSettings
from services.scheduler.store import WatcherStore
from shared import lease as leases
from shared.bus import TRANSIENT
from shared.consumer import Delivery
from shared.documents import KvDocuments
from shared.egresses import EgressList, PickReply, PickRequest
from shared.events import (
    EgressAdded,
    EgressFailed,
    EgressRemoved,
    Event,
    WatchDeleted,
    WatchPaused,
    WatchRequested,
    WatchResumed,
    WatchUpdated,
    utc_now,
)
from shared.logging import get_logger
from shared.secrets import SecretBox
from shared.service import BaseService
from shared.subjects import JOBS_BUCKET, SCHEDULER
from shared.tiktok.pool import ClientPool
from shared.watchers import GetRequest, ListReply, ListRequest

log = get_logger(__name__)

LEADER_LEASE = "leader.scheduler"
IDLE_TICK = 0.5
# After a pass that raised, the next waits this long, doubling while they keep failing: a
# broken store or bus is not hammered, and the loop never ends while the lease is held.
PASS_BACKOFF = 1.0
PASS_BACKOFF_MAX = 30.0
PACE_EVERY = 10.0
# Watch commands handled at once (one watcher's commands still in order): a bulk import is
# pulled in batches and its writes share transactions (see WatcherStore.put_many).
COMMAND_CONCURRENCY = 64  # seconds between recomputing each egress's rate from its watchers
BAD_REQUEST, NOT_FOUND = "400", "404"  # nats.micro error codes, read by the gateway


class SchedulerService(BaseService[SchedulerSettings]):
    name = "scheduler"
    description = "Owns watchers; polls TikTok in batches; publishes room.live"
    durables = (SCHEDULER,)
    settings_type = SchedulerSettings

    async def start(self, group: Group) -> None:
        settings = self.settings
        self.store = await WatcherStore(settings.scheduler_db).__aenter__()
        self.egress_store = await EgressStore(settings.scheduler_db).__aenter__()
        # A broken EGRESS_FILE fails the start: polling without the operator's pool would
        # show TikTok the addresses the pool is there to spread the load over.
        secrets = SecretBox(settings.secret_key) if settings.secret_key else None
        self.egress_file: list[EgressEntry] | None = None
        if settings.egress_file is not None:
            self.egress_file = await asyncio.to_thread(
                read_egress_file, settings.egress_file, secrets
            )
        pool = EgressPool(settings.tiktok_requests_per_min)
        await self.egress_store.load(pool)
        self.clients = ClientPool(settings, observe=lambda proxy, step: router.observe(proxy, step))
        router = self.router = EgressRouter(pool, self.clients, settings.check_batch_size)
        self.deps = PollDeps(
            store=self.store,
            budget=Budget(settings.tiktok_requests_per_min),
            # Lives are recorded by jobs of their watcher's owner.
            jobs=WatcherJobs(KvDocuments(await self.bus.kv(JOBS_BUCKET)), self.store),
            publish=self.bus.publish,
            client_for=router.client_for,
            egress_of=router.egress_of,
            batch_size=settings.check_batch_size,
            pool=pool,
            pool_store=self.egress_store,
            egress_client=lambda name: router.egress_client(pool.egresses[name]),
        )
        self.leader = False
        self._keys: dict[str, tuple[asyncio.Lock, list[int]]] = {}  # key -> lock, users
        self._pool_lock = asyncio.Lock()
        await group.add_endpoint(name="watchers_get", subject="watchers.get", handler=self._on_get)
        await group.add_endpoint(
            name="watchers_list", subject="watchers.list", handler=self._on_list
        )
        await group.add_endpoint(
            name="egresses_list", subject="egresses.list", handler=self._on_egresses
        )
        await group.add_endpoint(
            name="egresses_pick", subject="egresses.pick", handler=self._on_pick
        )
        self._tasks.append(asyncio.create_task(self._lead()))

    async def stop(self) -> None:
        await self.clients.aclose()
        await self.egress_store.__aexit__(None, None, None)
        await self.store.__aexit__(None, None, None)

    def status(self) -> dict[str, Any]:
        return {"leader": self.leader}

    # --- leadership --------------------------------------------------------------------------

    async def _lead(self) -> None:
        me = leases.Holder(owner=self.settings.instance_id, purpose="scheduler")
        claims = await self.bus.claims()
        await leases.lead(claims, LEADER_LEASE, me, self._stop, self._while_leader, self._led)

    def _led(self, leading: bool) -> None:
        self.leader = leading
        metrics.IS_LEADER.set(int(leading))
        if not leading:
            metrics.WATCHERS_ACTIVE.set(0)  # the new leader reports them: sum() stays right

    async def _while_leader(self, lost: asyncio.Event) -> None:
        """Consume watch commands and poll until the lease is lost."""
        self.deps.budget.stop = lost  # a poll pass waiting out a backoff ends with leadership
        # What another leader made of the pool, then the operator's file on top of it.
        await self.egress_store.load(self.deps.pool)
        if self.egress_file is not None:
            await apply_egress_file(self.egress_file, self.deps.pool, self.egress_store)
        consumer = self.bus.consumer(SCHEDULER, self._on_command, concurrency=COMMAND_CONCURRENCY)
        await asyncio.gather(consumer.run(lost), self._poll(lost), return_exceptions=True)

    async def _poll(self, stop: asyncio.Event) -> None:
        """Hand each egress its due watchers until ``stop`` (see :class:`Poller`). No exception
        ends it: the lease would be kept by a scheduler that no longer polls, and no standby
        would take over."""
        paced = float("-inf")
        # A standby's commands went to the file through another leader: count them again.
        self.deps.paced_at = None
        loop = asyncio.get_running_loop()
        poller = Poller(self.deps)
        failed = 0
        try:
            while not stop.is_set():
                try:
                    if loop.time() - paced > PACE_EVERY:
                        await pace(self.deps)
                        paced = loop.time()
                    await poller.dispatch()
                    metrics.WATCHERS_ACTIVE.set(await self.store.count_active())
                    failed = 0
                    # An egress whose check ended may have more due: it need not wait a tick.
                    await poller.wait(IDLE_TICK)
                except BudgetStopped:
                    # What the checks in flight learned is dropped: due again next time.
                    return
                except Exception as exc:
                    failed += 1
                    pause = min(PASS_BACKOFF_MAX, PASS_BACKOFF * 2.0 ** (failed - 1))
                    metrics.PASS_FAILURES.inc()
                    if isinstance(exc, TRANSIENT):  # NATS away for a moment: no stack needed
                        log.warning("scheduler.pass_failed", error=repr(exc), retry_in_s=pause)
                    else:
                        log.exception("scheduler.pass_failed", error=repr(exc), retry_in_s=pause)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), pause)
        finally:
            await poller.close()

    async def _on_command(self, event: Event, delivery: Delivery) -> None:  # noqa: ARG002
        if isinstance(event, EgressAdded | EgressRemoved | EgressFailed):
            async with self._pool_lock:  # in the order they were delivered
                if isinstance(event, EgressAdded):
                    await on_egress_added(event, self.deps.pool, self.egress_store)
                elif isinstance(event, EgressRemoved):
                    await on_egress_removed(event, self.deps.pool, self.egress_store)
                else:
                    on_egress_failed(event, self.deps.pool, utc_now())
            return
        key = getattr(event, "key", None)
        if key is None:
            return
        # Commands about one watcher apply in the order they were delivered: a handler takes
        # its key's lock before its first await, and the consumer starts handlers in order.
        entry = self._keys.setdefault(key, (asyncio.Lock(), [0]))
        entry[1][0] += 1
        try:
            async with entry[0]:
                await self._apply(event)
        finally:
            entry[1][0] -= 1
            if not entry[1][0]:
                del self._keys[key]

    async def _apply(self, event: Event) -> None:
        match event:
            case WatchRequested():
                await on_watch_requested(event, self.store)
            case WatchDeleted():
                await on_watch_deleted(event, self.store)
            case WatchPaused():
                await on_watch_paused(event, self.store)
            case WatchResumed():
                await on_watch_resumed(event, self.store)
            case WatchUpdated():
                await on_watch_updated(event, self.store)

    # --- queries (every instance) ------------------------------------------------------------

    async def _on_get(self, req: Request) -> None:
        try:
            key = msgspec.json.decode(req.data, type=GetRequest).key
        except msgspec.ValidationError as exc:
            raise ServiceError(BAD_REQUEST, "bad request") from exc
        watcher = await self.store.get(key)
        if watcher is None:
            raise ServiceError(NOT_FOUND, "no such watcher")
        await req.respond(msgspec.json.encode(watcher))

    async def _on_list(self, req: Request) -> None:
        try:
            ask = msgspec.json.decode(req.data or b"{}", type=ListRequest)
        except msgspec.ValidationError as exc:
            raise ServiceError(BAD_REQUEST, "bad request") from exc
        page, page_size = max(1, ask.page), max(1, min(500, ask.page_size))
        items, total = await self.store.page(page, page_size, owner=ask.owner)
        await req.respond(msgspec.json.encode(ListReply(items=items, total=total)))

    async def _on_egresses(self, req: Request) -> None:
        """The pool as the leader sees it now, or (a standby) as it last saved it."""
        pool = self.deps.pool
        if self.leader:
            reply = EgressList(
                items=pool.statuses(),
                healthy_capacity_per_min=pool.healthy_capacity(),
                need_per_min=round(pool.need(), 3),
            )
        else:
            items = await self.egress_store.statuses()
            healthy = sum(s.requests_per_min for s in items if s.state == "healthy")
            need = sum(s.need_per_min for s in items)
            reply = EgressList(items=items, healthy_capacity_per_min=healthy, need_per_min=need)
        await req.respond(msgspec.json.encode(reply))

    async def _on_pick(self, req: Request) -> None:
        """The sealed proxy of the named egress, or of the least-loaded healthy one."""
        try:
            ask = msgspec.json.decode(req.data or b"{}", type=PickRequest)
        except msgspec.ValidationError as exc:
            raise ServiceError(BAD_REQUEST, "bad request") from exc
        if not self.leader:  # a standby's pool may be stale: its file is the truth
            await self.egress_store.load(self.deps.pool)
        eg = self.deps.pool.pick(ask.name)
        reply = PickReply() if eg is None else PickReply(name=eg.name, proxy=eg.proxy)
        await req.respond(msgspec.json.encode(reply))

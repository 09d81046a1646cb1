"""Watch commands from JetStream, applied to the store. Idempotent: a redelivery is a no-op."""

from __future__ import annotations

import time

from services.scheduler.store import WatcherStore
from shared.bus import Delivery
from shared.events import Event, WatchDeleted, WatchPaused, WatchRequested, WatchResumed
from shared.logging import get_logger
from shared.tiktok.targets import parse_target
from shared.watchers import Watcher

log = get_logger(__name__)


async def on_command(event: Event, _delivery: Delivery, store: WatcherStore) -> None:
    match event:
        case WatchRequested():
            await on_watch_requested(event, store)
        case WatchDeleted(key=key):
            if await store.delete(key):
                log.info("scheduler.watcher_deleted", key=key)
        case WatchPaused(key=key):
            await _set_status(store, key, paused=True)
        case WatchResumed(key=key):
            await _set_status(store, key, paused=False)


async def on_watch_requested(event: WatchRequested, store: WatcherStore) -> None:
    existing = await store.get(event.key)
    if existing is not None and existing.task_id == event.task_id:
        return  # redelivered
    unique_id = event.unique_id
    if unique_id is None and event.url:
        target = parse_target(event.url)
        unique_id = target.value if target.kind == "user" else None
    watcher = Watcher(
        key=event.key,
        task_id=event.task_id,
        room_id=event.room_id,
        unique_id=unique_id,
        url=event.url,
        poll_interval=event.poll_interval,
        options=event.options,
        created_at=event.occurred_at,
        correlation_id=event.correlation_id,
    )
    await store.put(watcher, next_check=time.time())  # first check right away
    log.info("scheduler.watcher_added", key=event.key, poll_interval=event.poll_interval)


async def _set_status(store: WatcherStore, key: str, *, paused: bool) -> None:
    watcher = await store.get(key)
    if watcher is None:
        return
    if paused:
        watcher.status = "paused"
        watcher.current_job_id = None  # the gateway cancelled it
        watcher.live_state = "unknown"
    elif watcher.status == "paused":
        watcher.status = "active"
        watcher.generation += 1
    await store.put(watcher, next_check=time.time())
    log.info("scheduler.watcher_status", key=key, status=watcher.status)

"""Watch commands from JetStream, applied to the store. Idempotent: a redelivery is a no-op."""

from __future__ import annotations

import time

from services.scheduler.store import WatcherStore
from shared.events import WatchDeleted, WatchPaused, WatchRequested, WatchResumed
from shared.logging import get_logger
from shared.tiktok.targets import parse_target
from shared.watchers import Watcher

log = get_logger(__name__)


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
        owner=event.owner,
    )
    await store.put(watcher, next_check=time.time())  # first check right away
    log.info("scheduler.watcher_added", key=event.key, poll_interval=event.poll_interval)


async def on_watch_deleted(event: WatchDeleted, store: WatcherStore) -> None:
    if await store.delete(event.key):
        log.info("scheduler.watcher_deleted", key=event.key)


async def on_watch_paused(event: WatchPaused, store: WatcherStore) -> None:
    await _set_status(store, event.key, paused=True)


async def on_watch_resumed(event: WatchResumed, store: WatcherStore) -> None:
    await _set_status(store, event.key, paused=False)


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

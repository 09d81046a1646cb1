"""Watch commands from JetStream, applied to the store. Idempotent: a redelivery is a no-op."""

from __future__ import annotations

import time

from services.scheduler.store import WatcherStore
from shared.events import WatchDeleted, WatchPaused, WatchRequested, WatchResumed, WatchUpdated
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
    else:
        _resume(watcher)
    await store.put(watcher, next_check=time.time())
    log.info("scheduler.watcher_status", key=key, status=watcher.status)


def _resume(watcher: Watcher) -> None:
    if watcher.status != "paused":
        return
    watcher.status = "active"
    # A live seen again is a new job, unless the job of the live in progress still is its
    # current one (paused by watch.updated, which let it record on): that one goes on.
    if watcher.current_job_id is None:
        watcher.generation += 1


async def on_watch_updated(event: WatchUpdated, store: WatcherStore) -> None:
    """Apply a change from the next check on; the recording in progress is not touched."""
    watcher = await store.get(event.key)
    if watcher is None or watcher.task_id != event.task_id or watcher.status == "deleted":
        return  # deleted, or another watcher under the same key by now
    if watcher.updated_at is not None and event.occurred_at <= watcher.updated_at:
        return  # redelivered after a later change
    now = time.time()
    due = watcher.next_check_at.timestamp() if watcher.next_check_at else now
    if event.poll_interval is not None:
        watcher.poll_interval = event.poll_interval
        if watcher.last_run_at is not None:
            # A shorter interval counts from the last check; a longer one from the next.
            due = min(due, watcher.last_run_at.timestamp() + event.poll_interval)
    if event.options is not None:
        watcher.options = event.options
    if event.paused is True:
        watcher.status = "paused"
    elif event.paused is False and watcher.status == "paused":
        _resume(watcher)
        due = now
    watcher.updated_at = event.occurred_at
    await store.put(watcher, next_check=max(now, due))
    log.info(
        "scheduler.watcher_updated",
        key=event.key,
        poll_interval=watcher.poll_interval,
        status=watcher.status,
    )

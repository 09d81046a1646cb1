"""A watch job's status follows its watcher; cancelling the job deletes the watcher."""

from __future__ import annotations

from datetime import timedelta

import httpx
import pytest

from shared import events as ev
from shared.bus import Bus
from tests.integration.gateway_watchers.helpers import (
    ROOM,
    FakeScheduler,
    H,
    create,
    desired,
    event_count,
    recording_job,
    stored_events,
    watch_requested,
)

# --- watch jobs --------------------------------------------------------------------------------


async def test_cancelling_a_watch_job_deletes_its_watcher(
    client: httpx.AsyncClient, bus: Bus, scheduler: FakeScheduler
) -> None:
    task_id = await create(client, {"room_id": ROOM})
    current = await recording_job(bus)
    scheduler.register(await watch_requested(bus, task_id), current_job_id=current, jobs=[current])

    r = await client.delete(f"/jobs/{task_id}", headers=H)
    assert r.status_code == 202
    assert (r.json()["status"], r.json()["kind"]) == ("CANCELLED", "watch")
    deleted = [e for e in await stored_events(bus) if isinstance(e, ev.WatchDeleted)]
    assert [e.key for e in deleted] == [ROOM]
    assert await desired(bus, current) == "cancel"
    assert await desired(bus, task_id) == "cancel"


@pytest.mark.usefixtures("scheduler")
async def test_cancelling_a_watch_job_not_yet_registered_queues_the_delete(
    client: httpx.AsyncClient, bus: Bus
) -> None:
    task_id = await create(client, {"url": "@alice"})
    r = await client.delete(f"/jobs/{task_id}", headers=H)
    assert (r.status_code, r.json()["status"]) == (202, "CANCELLED")
    # The scheduler reads the delete after the request: the watcher never stays.
    assert [type(e) for e in await stored_events(bus)] == [ev.WatchRequested, ev.WatchDeleted]
    # Cancelling again changes nothing.
    r = await client.delete(f"/jobs/{task_id}", headers=H)
    assert (r.status_code, r.json()["status"]) == (202, "CANCELLED")
    assert await event_count(bus) == 2


async def test_a_watch_job_replaced_by_a_newer_watcher_reads_cancelled(
    client: httpx.AsyncClient, scheduler: FakeScheduler
) -> None:
    task_id = await create(client, {"room_id": ROOM})
    scheduler.add(ROOM, created_at=ev.utc_now() + timedelta(seconds=5))
    status = (await client.get(f"/jobs/{task_id}", headers=H)).json()
    assert (status["status"], status["watcher"]) == ("CANCELLED", None)

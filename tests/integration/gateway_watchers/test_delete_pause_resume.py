"""DELETE /watchers/{key}, pause and resume publish their event and cancel the current recording."""

from __future__ import annotations

import httpx

from shared import events as ev
from shared.bus import Bus
from tests.integration.gateway_watchers.helpers import (
    ROOM,
    SHORT,
    FakeScheduler,
    H,
    create,
    desired,
    event_count,
    path,
    recording_job,
    stored_events,
    watch_requested,
)

# --- delete, pause, resume ---------------------------------------------------------------------


async def test_delete_cancels_the_recording_and_publishes(
    client: httpx.AsyncClient, bus: Bus, scheduler: FakeScheduler
) -> None:
    task_id = await create(client, {"url": "@alice"})
    old = await recording_job(bus, "SUCCESS")
    current = await recording_job(bus, "STARTED")
    scheduler.register(
        await watch_requested(bus, task_id), jobs=[old, current], current_job_id=current
    )

    r = await client.delete(path("https://www.tiktok.com/@alice/live"), headers=H)
    assert r.status_code == 200
    assert r.json() == {"ok": True}
    deleted = [e for e in await stored_events(bus) if isinstance(e, ev.WatchDeleted)]
    assert [e.key for e in deleted] == ["@alice"]
    assert await desired(bus, current) == "cancel"
    assert await desired(bus, old) == "run"  # finished jobs are left alone
    status = (await client.get(f"/jobs/{task_id}", headers=H)).json()
    assert (status["status"], status["error_code"]) == ("CANCELLED", "CANCELLED")

    # Until the scheduler has applied it, the watcher is "being deleted".
    r = await client.delete("/watchers/@alice", headers=H)
    assert r.status_code == 409
    assert r.json()["error_code"] == "CONFLICT"
    for action in ("pause", "resume"):
        assert (await client.post(f"/watchers/@alice/{action}", headers=H)).status_code == 409
    # ... and its key is free for a new watcher.
    await create(client, {"url": "@alice"})

    # Once it has, the watcher is gone.
    del scheduler.watchers["@alice"]
    assert (await client.delete("/watchers/@alice", headers=H)).status_code == 404


async def test_delete_a_watcher_the_scheduler_marks_deleted_is_409(
    client: httpx.AsyncClient, bus: Bus, scheduler: FakeScheduler
) -> None:
    scheduler.add(ROOM, status="deleted")
    r = await client.delete(f"/watchers/{ROOM}", headers=H)
    assert r.status_code == 409
    assert await event_count(bus) == 0


async def test_delete_a_watcher_without_a_recording(
    client: httpx.AsyncClient, bus: Bus, scheduler: FakeScheduler
) -> None:
    scheduler.add(SHORT)
    r = await client.delete(path(SHORT), headers=H)
    assert r.status_code == 200
    (event,) = await stored_events(bus)
    assert isinstance(event, ev.WatchDeleted)
    assert event.key == SHORT


async def test_pause_and_resume(
    client: httpx.AsyncClient, bus: Bus, scheduler: FakeScheduler
) -> None:
    current = await recording_job(bus)
    scheduler.add(SHORT, current_job_id=current, jobs=[current])

    r = await client.post(path(SHORT) + "/pause", headers={**H, "X-Correlation-ID": "corr-p"})
    assert r.status_code == 200
    assert r.json() == {"ok": True}
    (paused,) = await stored_events(bus)
    assert isinstance(paused, ev.WatchPaused)
    assert (paused.key, paused.correlation_id) == (SHORT, "corr-p")
    assert await desired(bus, current) == "cancel"

    assert (await client.post(path(SHORT) + "/resume", headers=H)).status_code == 409  # not yet
    scheduler.add(SHORT, status="paused")  # the scheduler applied the pause
    r = await client.post(path(SHORT) + "/pause", headers=H)
    assert r.status_code == 409
    assert r.json()["error_code"] == "CONFLICT"

    r = await client.post(path(SHORT) + "/resume", headers=H)
    assert r.status_code == 200
    assert r.json() == {"ok": True}
    events = await stored_events(bus)
    assert [type(e) for e in events] == [ev.WatchPaused, ev.WatchResumed]
    assert isinstance(events[1], ev.WatchResumed)
    assert events[1].key == SHORT

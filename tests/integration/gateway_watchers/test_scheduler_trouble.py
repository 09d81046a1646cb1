"""No scheduler, or a failing one: /watchers routes are 503, a watch job's status still reads."""

from __future__ import annotations

import httpx
import pytest

from shared import events as ev
from shared import jobs
from shared.bus import Bus
from tests.helpers import job_store
from tests.integration.gateway_watchers.helpers import BROKEN, OWNER, ROOM, H, event_count, path

# --- scheduler trouble -------------------------------------------------------------------------


async def test_without_a_scheduler_watcher_routes_are_503(
    client: httpx.AsyncClient, bus: Bus
) -> None:
    requests = [
        ("POST", "/watchers", {"room_id": ROOM}),
        ("GET", "/watchers", None),
        ("GET", f"/watchers/{ROOM}", None),
        ("DELETE", f"/watchers/{ROOM}", None),
        ("POST", f"/watchers/{ROOM}/pause", None),
        ("POST", f"/watchers/{ROOM}/resume", None),
    ]
    for method, url, body in requests:
        r = await client.request(method, url, json=body, headers=H)
        assert r.status_code == 503, (method, url)
        assert r.json()["error_code"] == "SERVICE_UNAVAILABLE"
        assert r.json()["correlation_id"]
    assert await event_count(bus) == 0


async def test_watch_job_status_tolerates_a_missing_scheduler(
    client: httpx.AsyncClient, bus: Bus
) -> None:
    task_id = ev.new_id()
    await (await job_store(bus)).submit(
        jobs.JobRequest(job_id=task_id, kind="watch", watcher_key=ROOM, room_id=ROOM, owner=OWNER)
    )
    r = await client.get(f"/jobs/{task_id}", headers=H)
    assert r.status_code == 200
    assert (r.json()["status"], r.json()["watcher"], r.json()["jobs"]) == ("PENDING", None, [])
    # Cancelling needs the scheduler: it must know whether the watcher is this job's.
    r = await client.delete(f"/jobs/{task_id}", headers=H)
    assert r.status_code == 503


@pytest.mark.usefixtures("scheduler")
async def test_a_failing_scheduler_is_503(client: httpx.AsyncClient) -> None:
    r = await client.get(path(BROKEN), headers=H)
    assert r.status_code == 503
    assert r.json()["error_code"] == "SERVICE_UNAVAILABLE"
    assert "exploded" not in r.text

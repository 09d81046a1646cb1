"""Scenario 9: the scheduler leader frozen (SIGSTOP past its lease, then SIGCONT) while watchers
are deleted, and the indexer leader frozen during an index rebuild (POST /files/rebuild), under
live recordings: a standby takes over each time, a deleted watcher never comes back, no file
the index lists is lost, no running job's file is deleted."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime
from typing import Any

import httpx
import pytest

from shared import events as ev
from tests.chaos.fleet import ChaosFleet
from tests.chaos.invariants import Live, check_invariants, end_live, events_on
from tests.chaos.lives import growing, report_outcomes
from tests.helpers import eventually
from tlr.fake_tiktok import FakeTikTok

FAKE_TIKTOK_OPTIONS = {"speed": 1.0}  # real time: losses are measured in seconds of live
POLL_S = 10
FREEZE_S = 20.0  # past the leader lease (TTL 8 s): the standby has taken over by then
# How a thawed leader says it no longer leads (shared.lease.lead's log lines).
STEPPED_DOWN = {"leadership_lost", "leadership_doubtful"}


async def answered(
    fleet: ChaosFleet, method: str, path: str, *, timeout: float = 60, **kw: Any
) -> tuple[httpx.Response, int]:
    """The first answer other than 503 (a frozen instance took the request, or no leader yet),
    asked again as a client would; and how many 503s came first."""
    unavailable = 0
    got: list[httpx.Response] = []

    async def answer() -> bool:
        nonlocal unavailable
        r = await fleet.client.request(method, path, headers=fleet.headers, **kw)
        if r.status_code == 503:
            unavailable += 1
            return False
        got.append(r)
        return True

    await eventually(answer, timeout=timeout, interval=0.5)
    return got[0], unavailable


async def lives_of(fleet: ChaosFleet, key: str) -> list[ev.RoomLive]:
    found = await events_on(fleet.bus, ev.RoomLive)
    return [e for e in found if isinstance(e, ev.RoomLive) and e.watcher_key == key]


async def watch(fleet: ChaosFleet, user: str) -> None:
    r = await fleet.client.post(
        "/watchers", json={"url": f"@{user}", "poll_interval": POLL_S}, headers=fleet.headers
    )
    assert r.status_code == 202, r.text


async def recorded_live(fleet: ChaosFleet, user: str, stream_id: str) -> Live:
    """The live of watched ``user``, once its room.live is out and its recording grows."""

    async def published() -> bool:
        return bool(await lives_of(fleet, f"@{user}"))

    await eventually(published, timeout=60, interval=0.5)
    [event] = await lives_of(fleet, f"@{user}")
    live = Live(user, stream_id, task_id=event.job_id)
    await growing(fleet, live.task_id, timeout=60)
    return live


def stepped_down(fleet: ChaosFleet, name: str) -> bool:
    return any(m.split(".")[-1] in STEPPED_DOWN for m in fleet.log_events(name))


@pytest.mark.chaos
@pytest.mark.timeout(900)
async def test_scheduler_and_indexer_leaders_frozen(
    chaos_fleet: ChaosFleet,
    fake_tiktok: FakeTikTok,
    chaos_report: Callable[[str], None],
) -> None:
    fleet = chaos_fleet
    loop = asyncio.get_running_loop()
    await fleet.start("sch-a", service="scheduler")
    assert await fleet.wait_leader("scheduler", among={"sch-a"}) == "sch-a"
    await fleet.start("sch-b", service="scheduler")
    await fleet.start("idx-a", service="indexer")
    assert await fleet.wait_leader("indexer", among={"idx-a"}) == "idx-a"
    await fleet.start("idx-b", service="indexer")
    await fleet.start("rec-a")

    # kai records throughout; lea's live ends before the faults; ola is recording when her
    # watcher is deleted; max and ned are never live.
    users = ["kai", "lea", "max", "ned", "ola"]
    streams = {}
    for user in users:
        await fake_tiktok.create_user(user)
    for user in ("kai", "lea", "ola"):
        _, streams[user] = await fake_tiktok.go_live(user)
    for user in users:
        await watch(fleet, user)
    kai, lea, ola = [await recorded_live(fleet, u, streams[u]) for u in ("kai", "lea", "ola")]
    await end_live(fake_tiktok, lea)
    job = await fleet.wait(lea.task_id, "SUCCESS", "FAILURE", timeout=60)
    assert job["status"] == "SUCCESS", job

    # 1. The scheduler leader frozen while watchers are deleted: one just before, the others
    # during the freeze (the gateway asks any scheduler about a watcher: a frozen one makes
    # it answer 503, and the client asks again).
    deleted = ["@max", "@lea", "@ned", "@ola"]
    r, unavailable = await answered(fleet, "DELETE", f"/watchers/{deleted[0]}")
    assert r.status_code == 200, r.text
    fleet.freeze("sch-a")
    frozen = loop.time()
    try:
        for key in deleted[1:]:
            r, n = await answered(fleet, "DELETE", f"/watchers/{key}")
            assert r.status_code == 200, r.text
            unavailable += n
        ola.ended_at = datetime.now().timestamp()  # the recording was told to stop here
        assert await fleet.wait_leader("scheduler", among={"sch-b"}, timeout=FREEZE_S) == "sch-b"
        sch_takeover = loop.time() - frozen
        await asyncio.sleep(max(0.0, FREEZE_S - (loop.time() - frozen)))  # the rest of it
    finally:
        fleet.thaw("sch-a")
    await eventually(lambda: _true(stepped_down(fleet, "sch-a")), timeout=30, interval=0.2)
    job = await fleet.wait(ola.task_id, "SUCCESS", "FAILURE", "CANCELLED", timeout=60)
    assert job["status"] in ("SUCCESS", "CANCELLED"), job
    await fake_tiktok.end("ola")

    # The new leader polls on: two more checks of kai's watcher, and the deleted ones stay
    # gone (the thawed leader wrote no stale row back), none live again.
    for _ in range(2):
        await _checked_again(fleet, "@kai")
        for key in deleted:
            r = await fleet.client.get(f"/watchers/{key}", headers=fleet.headers)
            assert r.status_code == 404, (key, r.text)
    r = await fleet.client.get("/watchers", headers=fleet.headers, params={"page_size": 100})
    assert r.status_code == 200, r.text
    assert [w["key"] for w in r.json()["items"]] == ["@kai"], r.json()
    assert await fleet.leader("scheduler") == "sch-b"

    # 2. The indexer leader frozen; the index rebuilt during the freeze while kai's job is
    # recording: one rebuild asked before the standby took over, one after. Any indexer
    # answers a rebuild; one the frozen indexer took is answered when it thaws.
    fleet.freeze("idx-a")
    frozen = loop.time()
    rebuilds: list[asyncio.Task[tuple[httpx.Response, float]]] = []
    try:
        rebuilds.append(asyncio.create_task(_rebuild(fleet)))
        assert await fleet.wait_leader("indexer", among={"idx-b"}, timeout=FREEZE_S) == "idx-b"
        idx_takeover = loop.time() - frozen
        rebuilds.append(asyncio.create_task(_rebuild(fleet)))
        await asyncio.sleep(max(0.0, FREEZE_S - (loop.time() - frozen)))
    finally:
        fleet.thaw("idx-a")
    thawed = loop.time() - frozen
    answers = [(r, at - frozen) for r, at in await asyncio.gather(*rebuilds)]
    for r, _ in answers:
        assert r.status_code == 200, r.text
    late = sum(1 for _, at in answers if at > thawed)
    await eventually(lambda: _true(stepped_down(fleet, "idx-a")), timeout=30, interval=0.2)
    assert await fleet.leader("indexer") == "idx-b"
    await growing(fleet, kai.task_id, timeout=30)
    await end_live(fake_tiktok, kai)
    job = await fleet.wait(kai.task_id, "SUCCESS", "FAILURE", timeout=60)
    assert job["status"] == "SUCCESS", job

    # Each live once; nothing deleted; index = jobs = disk (check_invariants).
    for live in (kai, lea, ola):
        assert len(await lives_of(fleet, f"@{live.user}")) == 1, live
    for key in ("@max", "@ned"):
        assert await lives_of(fleet, key) == []
    assert await events_on(fleet.bus, ev.FileDeleted) == []
    outcomes = await check_invariants(
        fleet, fleet.bus, fake_tiktok, fleet.recordings, [kai, lea, ola], index=True
    )
    # Every file listed without a filter too: not asserted, since whichever indexer answers
    # may serve a total it cached before the other one wrote (test_index_shared.py, xfail).
    r, _ = await answered(fleet, "GET", "/files", params={"page_size": 500})
    assert r.status_code == 200, r.text
    unfiltered, files = r.json()["total"], sum(len(o.files) for o in outcomes)
    chaos_report(
        f"scheduler leader SIGSTOP {FREEZE_S:.0f}s during {len(deleted)} watcher deletes "
        f"({unavailable} answered 503 first): sch-b led after {sch_takeover:.1f}s, sch-a "
        "stepped down on SIGCONT, no deleted watcher came back, one room.live per live"
    )
    chaos_report(
        f"indexer leader SIGSTOP {FREEZE_S:.0f}s during {len(answers)} POST /files/rebuild: "
        f"idx-b led after {idx_takeover:.1f}s; rebuilds answered 200 at "
        + ", ".join(f"{at:.1f}s" for _, at in answers)
        + f" into the freeze ({late} after SIGCONT at {thawed:.1f}s); 0 files deleted, "
        f"index by job = jobs = disk; GET /files unfiltered listed {unfiltered} of {files}"
    )
    report_outcomes(chaos_report, outcomes)


async def _rebuild(fleet: ChaosFleet) -> tuple[httpx.Response, float]:
    """POST /files/rebuild; its answer and when it came (loop time)."""
    r = await fleet.client.post("/files/rebuild", headers=fleet.headers)
    return r, asyncio.get_running_loop().time()


async def _true(value: bool) -> bool:
    return value


async def _checked_again(fleet: ChaosFleet, key: str) -> None:
    """Wait for one more check of ``key`` by the scheduler (its last_run_at moves on)."""
    r = await fleet.client.get(f"/watchers/{key}", headers=fleet.headers)
    before = r.json()["last_run_at"]

    async def moved() -> bool:
        r = await fleet.client.get(f"/watchers/{key}", headers=fleet.headers)
        return r.status_code == 200 and r.json()["last_run_at"] != before

    await eventually(moved, timeout=4 * POLL_S, interval=0.5)

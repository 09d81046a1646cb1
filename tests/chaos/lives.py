"""Chaos scenario steps: lives that record, progress that resumes, the figures reported."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from tests.chaos.fleet import ChaosFleet
from tests.chaos.invariants import Live, Outcome, check_invariants, end_live
from tests.helpers import eventually
from tlr.fake_tiktok import FakeTikTok
from tlr.fake_tiktok.media import DEFAULT_PROFILE


async def start_lives(
    fleet: ChaosFleet,
    fake: FakeTikTok,
    users: list[str],
    *,
    upload: bool = False,
    profile: str = DEFAULT_PROFILE,
) -> list[Live]:
    """Each user goes live (in ``profile``) and gets a recording
    (uploaded to S3 when it ends, with ``upload``); returns once every job has bytes on record."""
    lives = []
    for user in users:
        await fake.create_user(user)
        _, stream_id = await fake.go_live(user, profile=profile)
        live = Live(user, stream_id, upload=upload)
        live.task_id = await fleet.record(url=f"@{user}", options={"upload_s3": upload})
        lives.append(live)
    await asyncio.gather(*(growing(fleet, live.task_id, timeout=60) for live in lives))
    return lives


async def recorded_bytes(fleet: ChaosFleet, task_id: str) -> int:
    """The job's byte count; -1 when it is not recording, or while the gateway answers 503
    (NATS or its JetStream leaders not back yet, as after a restart of every node)."""
    r = await fleet.client.get(f"/jobs/{task_id}", headers=fleet.headers)
    if r.status_code == 503:
        return -1
    assert r.status_code == 200, r.text
    job = r.json()
    return int(job["progress"]["bytes"]) if job["status"] == "STARTED" else -1


async def growing(fleet: ChaosFleet, task_id: str, *, timeout: float) -> float:
    """Wait until the job is recording and its byte count grows; the seconds it took."""
    loop = asyncio.get_running_loop()
    since = loop.time()
    before = await recorded_bytes(fleet, task_id)

    async def grew() -> bool:
        now = await recorded_bytes(fleet, task_id)
        return now > max(before, 0)

    await eventually(grew, timeout=timeout, interval=0.2)
    return loop.time() - since


def report_outcomes(report: Callable[[str], None], outcomes: list[Outcome]) -> None:
    for o in outcomes:
        starts = ", ".join(f"{rid}#{part}" for rid, part in o.starts)
        report(
            f"job {o.task_id}: served {o.served_s:.1f}s, recorded {o.recorded_s:.1f}s, "
            f"lost {o.lost_s:.1f}s, hand-overs {o.handovers} ({starts}), files {len(o.files)}"
        )


async def end_and_check(fleet: ChaosFleet, fake: FakeTikTok, lives: list[Live]) -> list[Outcome]:
    """End every live, wait until each job is SUCCESS, then check the invariants."""
    for live in lives:
        await end_live(fake, live)
    for live in lives:
        job = await fleet.wait(live.task_id, "SUCCESS", "FAILURE", timeout=60)
        assert job["status"] == "SUCCESS", job
    return await check_invariants(fleet, fleet.bus, fake, fleet.recordings, lives)

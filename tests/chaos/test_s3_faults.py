"""Scenario 7: S3 failing 3 % of parts (and throttling), then down for 10 minutes, under
recordings that upload: every file ends in S3 once it is back, once, and nothing else is."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable

import pytest

from tests.chaos.fleet import ChaosFleet
from tests.chaos.invariants import Live, check_invariants, end_live
from tests.chaos.lives import report_outcomes, start_lives
from tests.chaos.s3 import PART, ChaosS3
from tests.helpers import eventually
from tests.s3_fault_proxy import every_nth
from tlr.fake_tiktok import FakeTikTok

FAKE_TIKTOK_OPTIONS = {"speed": 1.0}  # real time: losses are measured in seconds of live
# 6 Mbit/s: a live of ~25 s makes a file of several 5 MiB parts.
PROFILE = "h264_360p_6m"
PART_FAILURES = 0.03  # of UploadPart calls: 500 InternalError
SLOW_DOWNS = 0.02  # of all calls: 503 SlowDown
# The issue asks for 10 minutes; CHAOS_S3_OUTAGE_S shortens it while working on the scenario.
OUTAGE_S = float(os.environ.get("CHAOS_S3_OUTAGE_S", "600"))
BACK_WITHIN_S = 180.0  # after S3 is back, every upload done within this (retries cap at 20 s)


async def upload_state(fleet: ChaosFleet, live: Live) -> str | None:
    upload = (await fleet.job(live.task_id)).get("upload")
    return None if upload is None else str(upload["state"])


async def record_for(fleet: ChaosFleet, fake: FakeTikTok, users: list[str]) -> list[Live]:
    """Lives that upload, recorded until each file spans several parts, then ended."""
    lives = await start_lives(fleet, fake, users, upload=True, profile=PROFILE)

    async def big_enough() -> bool:
        jobs = [await fleet.job(live.task_id) for live in lives]
        return all(int(j["progress"]["bytes"]) > 3 * PART for j in jobs)

    await eventually(big_enough, timeout=120, interval=0.5)
    for live in lives:
        await end_live(fake, live)
    for live in lives:
        job = await fleet.wait(live.task_id, "SUCCESS", "FAILURE", timeout=60)
        assert job["status"] == "SUCCESS", job
    return lives


@pytest.mark.chaos
@pytest.mark.timeout(OUTAGE_S + 900)
async def test_s3_failing_parts_then_down_for_minutes(
    chaos_fleet: ChaosFleet,
    chaos_s3: ChaosS3,
    fake_tiktok: FakeTikTok,
    chaos_report: Callable[[str], None],
) -> None:
    proxy = chaos_s3.proxy
    await chaos_fleet.start("rec-a")
    for name in ("up-a", "up-b"):
        await chaos_fleet.start(name, service="uploader", env=chaos_s3.env)
    await chaos_fleet.start("idx-a", service="indexer")

    # 1. Flaky S3: parts fail, calls are throttled; the uploads get through part by part.
    proxy.reset(fail=every_nth(PART_FAILURES, first=2), slow_down=every_nth(SLOW_DOWNS, first=5))
    flaky = await record_for(chaos_fleet, fake_tiktok, ["ada", "bob"])

    async def uploaded(lives: list[Live]) -> bool:
        return all([await upload_state(chaos_fleet, live) == "SUCCESS" for live in lives])

    await eventually(lambda: uploaded(flaky), timeout=120, interval=0.5)
    assert proxy.failed >= 1, "no part failed: the fault rule never fired"
    flaky_parts, flaky_failed, flaky_slowed = proxy.part_calls, proxy.failed, proxy.slowed

    # 2. S3 down: 503 to everything for the first half, then refusing connections. One live
    # is recording when it goes down, another starts and ends during the outage.
    loop = asyncio.get_running_loop()
    [cyd] = await start_lives(chaos_fleet, fake_tiktok, ["cyd"], upload=True, profile=PROFILE)
    await proxy.set_down("503")
    down_at = loop.time()
    try:
        late = await record_for(chaos_fleet, fake_tiktok, ["dan"])
        await end_live(fake_tiktok, cyd)
        job = await chaos_fleet.wait(cyd.task_id, "SUCCESS", "FAILURE", timeout=60)
        assert job["status"] == "SUCCESS", job
        stranded = [cyd, *late]

        async def queued() -> bool:
            return all([await upload_state(chaos_fleet, live) == "RETRY" for live in stranded])

        await eventually(queued, timeout=max(60.0, OUTAGE_S / 2), interval=0.5)
        await asyncio.sleep(max(0.0, OUTAGE_S / 2 - (loop.time() - down_at)))
        await proxy.set_down("refuse")
        await asyncio.sleep(max(0.0, OUTAGE_S - (loop.time() - down_at)))  # the rest of it
        for live in stranded:  # still queued (between two tries, or in one), none given up
            assert await upload_state(chaos_fleet, live) in ("RETRY", "STARTED"), live
    finally:
        await proxy.set_down(None)
    outage = loop.time() - down_at
    refused = proxy.refused

    # 3. S3 back: every queued upload completes on its own.
    back_at = loop.time()
    await eventually(lambda: uploaded(stranded), timeout=BACK_WITHIN_S, interval=0.5)
    caught_up = loop.time() - back_at

    lives = [*flaky, *stranded]
    outcomes = await check_invariants(
        chaos_fleet,
        chaos_fleet.bus,
        fake_tiktok,
        chaos_fleet.recordings,
        lives,
        index=True,
        s3=chaos_s3,
    )
    objects = await chaos_s3.objects()
    chaos_report(
        f"S3 flaky: {flaky_failed}/{flaky_parts} UploadPart calls failed (500), "
        f"{flaky_slowed} calls answered 503 SlowDown; both uploads SUCCESS"
    )
    chaos_report(
        f"S3 down {outage:.0f}s (503, then refused; {refused} calls refused): "
        f"{len(stranded)} uploads queued throughout, all SUCCESS {caught_up:.1f}s after S3 was "
        f"back; {len(objects)} objects = {sum(len(o.files) for o in outcomes)} files, "
        f"{sum(objects.values()) / 2**20:.0f} MiB"
    )
    report_outcomes(chaos_report, outcomes)

"""Scenario 4: every NATS node stopped and started again (same stores) under live recordings."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from tests.chaos.fleet import ChaosFleet
from tests.chaos.lives import end_and_check, growing, report_outcomes, start_lives
from tlr.fake_tiktok import FakeTikTok

FAKE_TIKTOK_OPTIONS = {"speed": 1.0}  # real time: losses are measured in seconds of live


@pytest.mark.chaos
@pytest.mark.timeout(300)
async def test_the_whole_cluster_restarted_under_live_recordings(
    chaos_fleet: ChaosFleet, fake_tiktok: FakeTikTok, chaos_report: Callable[[str], None]
) -> None:
    """Every node gets SIGTERM, then all start again on their stores: the streams, buckets,
    leases and jobs come back from disk, and each job records its live on to SUCCESS."""
    await chaos_fleet.start("rec-a")
    await chaos_fleet.start("rec-b")
    lives = await start_lives(chaos_fleet, fake_tiktok, ["hal", "ida"])

    loop = asyncio.get_running_loop()
    down = loop.time()
    await chaos_fleet.cluster.stop()
    stopped = loop.time() - down
    await chaos_fleet.cluster.start(timeout=60)  # every node, then until a meta leader answers
    outage = loop.time() - down
    resumed = await asyncio.gather(
        *(growing(chaos_fleet, live.task_id, timeout=90) for live in lives)
    )
    await asyncio.gather(*(growing(chaos_fleet, live.task_id, timeout=30) for live in lives))
    outcomes = await end_and_check(chaos_fleet, fake_tiktok, lives)
    chaos_report(
        f"all 3 nodes stopped in {stopped:.1f}s, cluster answering again {outage:.1f}s after "
        "the stop; job progress grew again within "
        + ", ".join(f"{s:.1f}s" for s in resumed)
        + " after that"
    )
    report_outcomes(chaos_report, outcomes)

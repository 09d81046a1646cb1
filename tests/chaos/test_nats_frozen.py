"""Scenario 1: NATS unreachable for 10 s under three live recordings, then back."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from tests.chaos.fleet import ChaosFleet
from tests.chaos.invariants import check_invariants, end_live
from tests.chaos.lives import growing, report_outcomes, start_lives
from tlr.fake_tiktok import FakeTikTok

FAKE_TIKTOK_OPTIONS = {"speed": 1.0}  # real time: losses are measured in seconds of live
FAULT_S = 10.0


@pytest.mark.chaos
@pytest.mark.timeout(300)
@pytest.mark.parametrize(
    "fault",
    [
        pytest.param("blackhole", marks=pytest.mark.chaos_smoke),
        "freeze",
    ],
)
async def test_nats_gone_for_10s_under_live_recordings(
    chaos_fleet: ChaosFleet,
    fake_tiktok: FakeTikTok,
    chaos_report: Callable[[str], None],
    fault: str,
) -> None:
    """blackhole: every recorder's proxy drops all bytes; freeze: every node is SIGSTOPped.
    Afterwards each job records its live again (maybe after a hand-over), ends SUCCESS with
    the live, and every file it lists is final and decodes."""
    await chaos_fleet.start("rec-a")
    await chaos_fleet.start("rec-b")
    lives = await start_lives(chaos_fleet, fake_tiktok, ["ann", "bob", "cat"])

    nodes = chaos_fleet.cluster.nodes
    if fault == "blackhole":
        for proxy in chaos_fleet.proxies.values():
            proxy.set_mode("blackhole")
    else:
        for node in nodes:
            chaos_fleet.cluster.freeze(node)
    try:
        await asyncio.sleep(FAULT_S)  # the fault itself: NATS away this long
    finally:
        for proxy in chaos_fleet.proxies.values():
            proxy.set_mode("pass")
        for node in nodes:
            chaos_fleet.cluster.thaw(node)

    resumed = await asyncio.gather(
        *(growing(chaos_fleet, live.task_id, timeout=60) for live in lives)
    )
    # Once more: the recording carries on, not one last progress write from before the fault.
    await asyncio.gather(*(growing(chaos_fleet, live.task_id, timeout=30) for live in lives))
    for live in lives:
        await end_live(fake_tiktok, live)
    for live in lives:
        await chaos_fleet.wait(live.task_id, "SUCCESS", "FAILURE", timeout=60)
        job = await chaos_fleet.job(live.task_id)
        assert job["status"] == "SUCCESS", job

    outcomes = await check_invariants(
        chaos_fleet, chaos_fleet.bus, fake_tiktok, chaos_fleet.recordings, lives
    )
    chaos_report(
        f"NATS away {FAULT_S:.0f}s ({fault}); progress resumed after "
        + ", ".join(f"{s:.1f}s" for s in resumed)
    )
    report_outcomes(chaos_report, outcomes)

"""Scenario 3: one recorder cut off from NATS for 60 s; another takes its job, it steps down."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable

import pytest

from tests.chaos.fleet import ChaosFleet
from tests.chaos.invariants import check_invariants, end_live
from tests.chaos.lives import growing, report_outcomes, start_lives
from tests.helpers import eventually
from tlr.fake_tiktok import FakeTikTok

FAKE_TIKTOK_OPTIONS = {"speed": 1.0}  # real time: losses are measured in seconds of live
CUT_S = 60.0
# How rec-a stops acting on the job: it halts itself once its lease is in doubt (5 s without a
# renewal, while still cut off), or, if a write of its reaches NATS later, the store's fencing
# refuses it (stale_holder) or finds the job finished.
STEPPED_DOWN = {"recorder.lease_lost", "recorder.stale_holder", "recorder.finished_elsewhere"}


def _log_events(fleet: ChaosFleet, name: str) -> set[str]:
    found = set()
    for line in fleet.log_of(name).splitlines():
        with contextlib.suppress(ValueError):
            found.add(str(json.loads(line).get("msg")))
    return found


@pytest.mark.chaos
@pytest.mark.timeout(300)
async def test_a_recorder_cut_off_for_60s_is_replaced_and_steps_down(
    chaos_fleet: ChaosFleet, fake_tiktok: FakeTikTok, chaos_report: Callable[[str], None]
) -> None:
    await chaos_fleet.start("rec-a")
    [live] = await start_lives(chaos_fleet, fake_tiktok, ["eve"])
    assert (await chaos_fleet.job(live.task_id))["progress"]["recorder_id"] == "rec-a"
    await chaos_fleet.start("rec-b")

    loop = asyncio.get_running_loop()
    chaos_fleet.proxies["rec-a"].set_mode("blackhole")
    cut = loop.time()
    try:

        async def taken_over() -> bool:
            job = await chaos_fleet.job(live.task_id)
            return bool(job["status"] == "STARTED" and job["progress"]["recorder_id"] == "rec-b")

        await eventually(taken_over, timeout=CUT_S - 5, interval=0.2)
        takeover = loop.time() - cut
        await growing(chaos_fleet, live.task_id, timeout=30)
        await asyncio.sleep(max(0.0, CUT_S - (loop.time() - cut)))  # the rest of the cut
    finally:
        chaos_fleet.proxies["rec-a"].set_mode("pass")

    assert _log_events(chaos_fleet, "rec-a") & STEPPED_DOWN

    async def back() -> bool:
        return "nats.reconnected" in _log_events(chaos_fleet, "rec-a")

    await eventually(back, timeout=30, interval=0.2)
    await growing(chaos_fleet, live.task_id, timeout=30)
    await end_live(fake_tiktok, live)
    job = await chaos_fleet.wait(live.task_id, "SUCCESS", "FAILURE", timeout=60)
    assert job["status"] == "SUCCESS", job
    assert job["progress"]["recorder_id"] == "rec-b"

    [outcome] = await check_invariants(
        chaos_fleet, chaos_fleet.bus, fake_tiktok, chaos_fleet.recordings, [live]
    )
    # rec-a recorded part 0 only: after the cut it never started the job again.
    assert [s for s in outcome.starts if s[0] == "rec-a"] == [("rec-a", 0)], outcome.starts
    chaos_report(
        f"rec-a cut off {CUT_S:.0f}s: rec-b recording after {takeover:.1f}s; rec-a stepped "
        f"down ({', '.join(sorted(_log_events(chaos_fleet, 'rec-a') & STEPPED_DOWN))})"
    )
    report_outcomes(chaos_report, [outcome])

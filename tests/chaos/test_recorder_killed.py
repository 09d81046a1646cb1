"""Scenario 5: the recording recorder SIGKILLed, or SIGSTOPped 20 s (past its lease) and resumed."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
from collections.abc import Callable

import pytest

from tests.chaos.fleet import ChaosFleet
from tests.chaos.invariants import check_invariants, end_live
from tests.chaos.lives import growing, report_outcomes, start_lives
from tests.helpers import eventually
from tlr.fake_tiktok import FakeTikTok

FAKE_TIKTOK_OPTIONS = {"speed": 1.0}  # real time: losses are measured in seconds of live
FREEZE_S = 20.0  # longer than the lease TTL (8 s): another recorder has the job by then
MAX_LOST_S = 15.0  # the target: at most this much live lost per recorder fault
# How the thawed recorder stops acting on a job that is no longer its own: the store refuses
# a write of its (a newer token holds the job: stale_holder, write_refused) or finds the job
# finished.
STEPPED_DOWN = {"recorder.stale_holder", "recorder.finished_elsewhere", "recorder.write_refused"}


def _log_events(fleet: ChaosFleet, name: str) -> set[str]:
    found = set()
    for line in fleet.log_of(name).splitlines():
        with contextlib.suppress(ValueError):
            found.add(str(json.loads(line).get("msg")))
    return found


@pytest.mark.chaos
@pytest.mark.timeout(300)
@pytest.mark.parametrize("fault", ["kill", "freeze"])
async def test_the_recording_recorder_killed_or_frozen(
    chaos_fleet: ChaosFleet,
    fake_tiktok: FakeTikTok,
    chaos_report: Callable[[str], None],
    fault: str,
) -> None:
    """kill: SIGKILL, no goodbye; freeze: SIGSTOP for 20 s, then SIGCONT. The other recorder
    takes the job over; the live loses at most MAX_LOST_S; a thawed recorder steps down."""
    await chaos_fleet.start("rec-a")
    [live] = await start_lives(chaos_fleet, fake_tiktok, ["joe"])
    assert (await chaos_fleet.job(live.task_id))["progress"]["recorder_id"] == "rec-a"
    await chaos_fleet.start("rec-b")

    async def taken_over() -> bool:
        r = await chaos_fleet.client.get(f"/jobs/{live.task_id}", headers=chaos_fleet.headers)
        job = r.json() if r.status_code == 200 else {}
        return job.get("status") == "STARTED" and job["progress"]["recorder_id"] == "rec-b"

    loop = asyncio.get_running_loop()
    rec_a = chaos_fleet.procs["rec-a"]
    hit = loop.time()
    if fault == "kill":
        rec_a.send_signal(signal.SIGKILL)
        await rec_a.wait()
        await eventually(taken_over, timeout=60, interval=0.2)
        takeover = loop.time() - hit
        await growing(chaos_fleet, live.task_id, timeout=30)
    else:
        rec_a.send_signal(signal.SIGSTOP)
        try:
            await eventually(taken_over, timeout=FREEZE_S - 1, interval=0.2)
            takeover = loop.time() - hit
            await growing(chaos_fleet, live.task_id, timeout=FREEZE_S)
            await asyncio.sleep(max(0.0, FREEZE_S - (loop.time() - hit)))  # the rest of it
        finally:
            rec_a.send_signal(signal.SIGCONT)

        async def stepped_down() -> bool:
            return bool(_log_events(chaos_fleet, "rec-a") & STEPPED_DOWN)

        await eventually(stepped_down, timeout=30, interval=0.2)
        assert rec_a.returncode is None, chaos_fleet.log_of("rec-a")[-2000:]

    await growing(chaos_fleet, live.task_id, timeout=30)
    await end_live(fake_tiktok, live)
    job = await chaos_fleet.wait(live.task_id, "SUCCESS", "FAILURE", timeout=60)
    assert job["status"] == "SUCCESS", job
    assert job["progress"]["recorder_id"] == "rec-b"

    [outcome] = await check_invariants(
        chaos_fleet, chaos_fleet.bus, fake_tiktok, chaos_fleet.recordings, [live]
    )
    # rec-a recorded part 0 only: after the fault it never started the job again.
    assert [s for s in outcome.starts if s[0] == "rec-a"] == [("rec-a", 0)], outcome.starts
    how = "SIGKILL" if fault == "kill" else f"SIGSTOP {FREEZE_S:.0f}s then SIGCONT"
    down = sorted(_log_events(chaos_fleet, "rec-a") & STEPPED_DOWN)
    chaos_report(
        f"rec-a {how}: rec-b recording after {takeover:.1f}s"
        + (f"; rec-a stepped down ({', '.join(down)})" if fault == "freeze" else "")
    )
    report_outcomes(chaos_report, [outcome])
    assert outcome.lost_s <= MAX_LOST_S, outcome

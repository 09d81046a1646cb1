"""Scenario 9: a node's store wiped (its volume replaced) under live recordings, twice over."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import httpx
import pytest

from shared.subjects import EVENTS_STREAM, JOBS_BUCKET
from tests.chaos.fleet import ChaosFleet
from tests.chaos.lives import end_and_check, growing, report_outcomes, start_lives
from tests.helpers import eventually
from tlr.fake_tiktok import FakeTikTok

FAKE_TIKTOK_OPTIONS = {"speed": 1.0}  # real time: losses are measured in seconds of live
_STREAMS = {"accounts": "true", "streams": "true"}


@pytest.mark.chaos
@pytest.mark.timeout(420)
async def test_a_node_that_lost_its_store_catches_up_and_nothing_is_lost(
    chaos_fleet: ChaosFleet, fake_tiktok: FakeTikTok, chaos_report: Callable[[str], None]
) -> None:
    """The node leading the job store, then the one leading EVENTS, comes back empty: R3
    copies it back from its peers, and every job keeps its live and its files."""
    await chaos_fleet.start("rec-a")
    await chaos_fleet.start("rec-b")
    lives = await start_lives(chaos_fleet, fake_tiktok, ["jay", "kit"])

    wiped = []
    for stream in (f"KV_{JOBS_BUCKET}", EVENTS_STREAM):
        node = await chaos_fleet.cluster.stream_leader(stream)
        assert node is not None
        await node.lose_store()
        wiped.append(f"{node.server_name} (leading {stream})")
        await chaos_fleet.cluster.wait_ready(timeout=60)
        # Before the next wipe: the recordings went on, and the node holds its copies again.
        await asyncio.gather(*(growing(chaos_fleet, live.task_id, timeout=60) for live in lives))
        await _caught_up(node.monitor_url)
    outcomes = await end_and_check(chaos_fleet, fake_tiktok, lives)
    chaos_report("stores wiped: " + ", ".join(wiped))
    report_outcomes(chaos_report, outcomes)
    assert [o.handovers for o in outcomes] == [0] * len(outcomes)


async def _caught_up(monitor_url: str) -> None:
    """Until the wiped node holds the job store and EVENTS again (its /jsz lists them)."""

    async def holds_them() -> bool:
        async with httpx.AsyncClient(timeout=2.0) as client:
            try:
                answer = await client.get(f"{monitor_url}/jsz", params=_STREAMS)
                jsz = answer.json()
            except (httpx.HTTPError, ValueError):
                return False
        names = {
            s.get("name")
            for account in jsz.get("account_details") or []
            for s in account.get("stream_detail") or []
        }
        return {f"KV_{JOBS_BUCKET}", EVENTS_STREAM} <= names

    await eventually(holds_them, timeout=60, interval=0.5)

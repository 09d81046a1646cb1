"""Scenario 2: the node leading KV_claims (leases) or EVENTS is killed, three times over, under
live recordings."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import nats.errors
import pytest

from shared.subjects import CLAIMS, CLAIMS_BUCKET, EVENTS_STREAM
from tests.chaos.fleet import ChaosFleet
from tests.chaos.lives import end_and_check, growing, report_outcomes, start_lives
from tlr.fake_tiktok import FakeTikTok
from tlr.nats_server import NatsServer

FAKE_TIKTOK_OPTIONS = {"speed": 1.0}  # real time: losses are measured in seconds of live
ROUNDS = 3
LEASE_TTL = CLAIMS.ttl or 8.0


async def _new_leader(fleet: ChaosFleet, stream: str, old: NatsServer) -> float:
    """Seconds until a node other than ``old`` leads ``stream``."""
    loop = asyncio.get_running_loop()
    since = loop.time()
    while loop.time() - since < 60:
        try:
            leader = await fleet.cluster.stream_leader(stream)
        except (nats.errors.Error, TimeoutError):
            leader = None
        if leader is not None and leader is not old:
            return loop.time() - since
        await asyncio.sleep(0.1)
    msg = f"no new leader of {stream} within 60s"
    raise AssertionError(msg)


@pytest.mark.chaos
@pytest.mark.timeout(600)
@pytest.mark.parametrize("stream", [f"KV_{CLAIMS_BUCKET}", EVENTS_STREAM])
async def test_the_leader_of_a_stream_killed_under_live_recordings(
    chaos_fleet: ChaosFleet,
    fake_tiktok: FakeTikTok,
    chaos_report: Callable[[str], None],
    stream: str,
) -> None:
    """The recordings carry on through each election; no hand-over when they are shorter
    than the lease (a recording does not step down while its renewals merely fail)."""
    await chaos_fleet.start("rec-a")
    await chaos_fleet.start("rec-b")
    lives = await start_lives(chaos_fleet, fake_tiktok, ["fay", "gus"])

    killed: list[str] = []
    elections: list[float] = []
    resumed: list[float] = []
    for _ in range(ROUNDS):  # the node leading it killed, again and again
        leader = await chaos_fleet.cluster.stream_leader(stream)
        assert leader is not None
        await chaos_fleet.cluster.kill(leader)
        killed.append(str(leader.server_name))
        elections.append(await _new_leader(chaos_fleet, stream, leader))
        resumed += await asyncio.gather(
            *(growing(chaos_fleet, live.task_id, timeout=60) for live in lives)
        )
        await chaos_fleet.cluster.start_node(leader)  # back with its store, as after a crash
        await chaos_fleet.cluster.wait_ready(timeout=60)
        await asyncio.gather(*(growing(chaos_fleet, live.task_id, timeout=30) for live in lives))
    outcomes = await end_and_check(chaos_fleet, fake_tiktok, lives)
    chaos_report(
        f"leader of {stream} killed {ROUNDS} times ({', '.join(killed)}): new leader after "
        + ", ".join(f"{e:.1f}s" for e in elections)
        + "; job progress grew again within "
        + ", ".join(f"{s:.1f}s" for s in resumed)
        + " after each"
    )
    report_outcomes(chaos_report, outcomes)
    if max(elections) < LEASE_TTL:  # the pass criterion: elections shorter than the lease
        assert [o.handovers for o in outcomes] == [0] * len(outcomes)

"""Scenario 8: TikTok answering garbage (cut JSON, HTML, 5xx, empty bodies) and a watched
account flapping (live, paused, resumed, ended, live again; check_alive saying "alive" for a
room that ended): exactly one room.live per live, every live recorded, no job for a flap."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import datetime

import pytest

from shared import events as ev
from tests.chaos.fleet import ChaosFleet
from tests.chaos.invariants import Live, check_invariants, end_live, events_on
from tests.chaos.lives import growing, report_outcomes
from tests.chaos.tiktok_proxy import GARBAGE, TikTokGarbageProxy
from tests.helpers import eventually
from tlr.fake_tiktok import FakeTikTok

FAKE_TIKTOK_OPTIONS = {"speed": 1.0}  # real time: losses are measured in seconds of live
POLL_S = 10  # the shortest poll interval a watcher may have
PAUSES = 3  # the live is paused (status 3) and resumed this many times
PAUSE_S = 3.0
# After garbage, a watcher's checks back off (per watcher and per egress) before it is
# checked again: detection may take a few poll intervals.
DETECT_S = 240.0


@pytest.fixture
async def tiktok_proxy(fake_tiktok: FakeTikTok) -> AsyncIterator[TikTokGarbageProxy]:
    async with TikTokGarbageProxy(fake_tiktok.base_url) as proxy:
        yield proxy


async def lives_of(fleet: ChaosFleet, key: str) -> list[ev.RoomLive]:
    found = await events_on(fleet.bus, ev.RoomLive)
    return [e for e in found if isinstance(e, ev.RoomLive) and e.watcher_key == key]


async def watcher(fleet: ChaosFleet, key: str) -> dict[str, object]:
    r = await fleet.client.get(f"/watchers/{key}", headers=fleet.headers)
    assert r.status_code == 200, r.text
    body: dict[str, object] = r.json()
    return body


async def checked_since(fleet: ChaosFleet, key: str, since: datetime, outcome: str) -> None:
    """Wait until the scheduler checked ``key`` after ``since`` and found ``outcome``."""

    async def checked() -> bool:
        w = await watcher(fleet, key)
        run = w["last_run_at"]
        return (
            isinstance(run, str)
            and datetime.fromisoformat(run) > since
            and w["last_outcome"] == outcome
        )

    await eventually(checked, timeout=DETECT_S, interval=0.5)


async def garbage_for(proxy: TikTokGarbageProxy, answers: int) -> None:
    """TikTok answers garbage until it has given ``answers`` more (every kind at least once
    when ``answers`` >= len(GARBAGE))."""
    target = proxy.served.total() + answers
    proxy.garbage = True
    try:

        async def served() -> bool:
            return proxy.served.total() >= target

        await eventually(served, timeout=DETECT_S, interval=0.2)
    finally:
        proxy.garbage = False


@pytest.mark.chaos
@pytest.mark.timeout(1200)
async def test_tiktok_garbage_and_a_flapping_account(
    chaos_fleet: ChaosFleet,
    fake_tiktok: FakeTikTok,
    tiktok_proxy: TikTokGarbageProxy,
    chaos_report: Callable[[str], None],
) -> None:
    fleet = chaos_fleet
    await fleet.start("rec-a", env=tiktok_proxy.env)
    await fleet.start("sch-a", service="scheduler", env=tiktok_proxy.env)
    await fleet.start("idx-a", service="indexer")
    await fake_tiktok.create_user("ivy")
    await fake_tiktok.create_user("jon")
    await fake_tiktok.go_live("jon")
    await fake_tiktok.end("jon")  # jon has a past live: a room id that ended
    for user in ("ivy", "jon"):
        r = await fleet.client.post(
            "/watchers", json={"url": f"@{user}", "poll_interval": POLL_S}, headers=fleet.headers
        )
        assert r.status_code == 202, r.text
    loop = asyncio.get_running_loop()
    now = datetime.now().astimezone()
    await checked_since(fleet, "@ivy", now, "offline")

    # 1. Garbage; ivy goes live in the middle of it. Recorded once TikTok makes sense again.
    proxy = tiktok_proxy
    proxy.garbage = True
    await eventually(lambda: _served(proxy, 2), timeout=DETECT_S, interval=0.2)
    _, stream_1 = await fake_tiktok.go_live("ivy")
    await garbage_for(proxy, len(GARBAGE))
    assert min(proxy.served[k] for k in GARBAGE) >= 1, proxy.served
    sane = loop.time()

    async def room_live(count: int) -> bool:
        return len(await lives_of(fleet, "@ivy")) >= count

    await eventually(lambda: room_live(1), timeout=DETECT_S, interval=0.5)
    detected_1 = loop.time() - sane
    [event_1] = await lives_of(fleet, "@ivy")
    live_1 = Live("ivy", stream_1, task_id=event_1.job_id)
    await growing(fleet, live_1.task_id, timeout=60)

    # 2. The live flaps: paused and resumed (status 3, 2); then garbage while it is live.
    for _ in range(PAUSES):
        await fake_tiktok.pause("ivy")
        await asyncio.sleep(PAUSE_S)  # the length of the pause (the fault itself)
        await fake_tiktok.resume("ivy")
        await growing(fleet, live_1.task_id, timeout=60)
    await garbage_for(proxy, len(GARBAGE))
    after_garbage = datetime.now().astimezone()
    await checked_since(fleet, "@ivy", after_garbage, "live")
    await growing(fleet, live_1.task_id, timeout=60)
    await end_live(fake_tiktok, live_1)
    job = await fleet.wait(live_1.task_id, "SUCCESS", "FAILURE", timeout=60)
    assert job["status"] == "SUCCESS", job

    # 3. A flap that is no live: check_alive says "alive" for every room id, ended ones too.
    await fake_tiktok.set_scenario(fake_alive=True)
    flap = datetime.now().astimezone()
    try:
        for key in ("@ivy", "@jon"):
            await checked_since(fleet, key, flap, "offline")
    finally:
        await fake_tiktok.set_scenario(fake_alive=False)

    # 4. ivy live again: a new room, a new live, a new job.
    _, stream_2 = await fake_tiktok.go_live("ivy")
    again = loop.time()
    await eventually(lambda: room_live(2), timeout=DETECT_S, interval=0.5)
    detected_2 = loop.time() - again
    event_2 = (await lives_of(fleet, "@ivy"))[-1]
    live_2 = Live("ivy", stream_2, task_id=event_2.job_id)
    await growing(fleet, live_2.task_id, timeout=60)
    await end_live(fake_tiktok, live_2)
    job = await fleet.wait(live_2.task_id, "SUCCESS", "FAILURE", timeout=60)
    assert job["status"] == "SUCCESS", job

    # Exactly one room.live per live, none for jon, and the watchers' jobs say the same.
    ivy_lives = await lives_of(fleet, "@ivy")
    assert [e.room_id for e in ivy_lives] == [event_1.room_id, event_2.room_id], ivy_lives
    assert event_1.room_id != event_2.room_id
    assert await lives_of(fleet, "@jon") == []
    assert (await watcher(fleet, "@jon"))["jobs"] == []
    assert (await watcher(fleet, "@ivy"))["jobs"] == [live_1.task_id, live_2.task_id]

    outcomes = await check_invariants(
        fleet, fleet.bus, fake_tiktok, fleet.recordings, [live_1, live_2], index=True
    )
    kinds = ", ".join(f"{k} {proxy.served[k]}" for k in GARBAGE)
    chaos_report(
        f"garbage answers: {kinds}; room.live: ivy {len(ivy_lives)} for 2 lives, jon 0 "
        f"(fake_alive flap); live 1 recorded {detected_1:.1f}s after TikTok made sense again, "
        f"live 2 {detected_2:.1f}s after it began; {PAUSES} pauses of {PAUSE_S:.0f}s in live 1"
    )
    report_outcomes(chaos_report, outcomes)


async def _served(proxy: TikTokGarbageProxy, answers: int) -> bool:
    return proxy.served.total() >= answers
